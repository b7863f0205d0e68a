"""Criteo-format click rows: a label, 13 dense and 26 categorical features — 160 bytes a row.

The layout matches the Criteo 1TB click logs as DLRM consumes them, so the store, the DataModule and the
benchmarks can be exercised on the real record size without downloading anything.
"""

from __future__ import annotations

import numpy as np

CRITEO_DTYPE = np.dtype([("label", "<i4"), ("dense", "<f4", (13,)), ("cat", "<i4", (26,))])
"""One Criteo row: click label, 13 dense counts (log-scaled floats), 26 hashed categorical ids."""


def synthetic_criteo_rows(n: int, seed: int = 0, num_categories: int = 100_000, drift: float = 0.0) -> np.ndarray:
    """``n`` Criteo-format rows with Zipf-like categorical popularity and a click rate that depends on them.

    Args:
        n: Number of rows.
        seed: Random seed; the same seed gives the same rows.
        num_categories: Size of each categorical vocabulary.
        drift: Shift of the popular categories (0 = none); the clicks generator moves it over days.

    >>> rows = synthetic_criteo_rows(4, seed=1)
    >>> rows.dtype.itemsize, rows.shape
    (160, (4,))
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, CRITEO_DTYPE)
    rows["dense"] = np.log1p(rng.exponential(3.0, size=(n, 13))).astype(np.float32)
    # log-uniform ranks: a few categories are very popular, most are rare (Zipf-like, cheap to draw)
    ranks = np.minimum(np.exp(rng.random((n, 26), dtype=np.float32) * np.log(num_categories)).astype(np.int64) - 1,
                       num_categories - 1)
    offset = int(drift * num_categories) % num_categories
    rows["cat"] = ((ranks + offset) % num_categories).astype(np.int32)
    logit = -1.5 + 0.8 * (ranks[:, 0] < 10) + 0.3 * rows["dense"][:, 0] - 0.2 * rows["dense"][:, 1]
    rows["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    return rows
