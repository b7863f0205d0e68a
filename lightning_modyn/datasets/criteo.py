"""Criteo-format click rows: a label, 13 dense and 26 categorical features — 160 bytes a row.

The layout matches the Criteo 1TB click logs as DLRM consumes them, so the store, the DataModule and the
benchmarks can be exercised on the real record size without downloading anything. The clicks follow a known
logistic model (:func:`click_logits`), so a model trained on these rows has something to learn and its score can
be compared with the best possible one.
"""

from __future__ import annotations

import math

import numpy as np

from lightning_modyn._checks import check_int, check_number

CRITEO_DTYPE = np.dtype([("label", "<i4"), ("dense", "<f4", (13,)), ("cat", "<i4", (26,))])
"""One Criteo row: click label, 13 dense counts (log-scaled floats), 26 hashed categorical ids."""

DENSE_SCALE = 3.0
"""Mean of the dense counts before ``log1p``: each dense feature is ``log1p(Exponential(mean 3))``."""
DENSE_MEAN, DENSE_STD = 1.1568060, 0.6659009
"""Mean and standard deviation of one dense feature (``log1p`` of an exponential count of mean 3), computed by
numerical integration; the click model standardises the dense features with them."""

INFORMATIVE_DENSE = 4
"""Dense features ``0 .. 3`` move the click log-odds; the other 9 are noise."""
INFORMATIVE_CATEGORICAL = 6
"""Categorical features ``0 .. 5`` move the click log-odds through a per-id effect; the other 20 are noise."""
DENSE_WEIGHT = 1.4
"""Length of the weight vector over the standardised informative dense features (log-odds per standard unit)."""
CATEGORY_EFFECT_STD = 0.7
"""Standard deviation of an id's effect on the click log-odds, for every informative categorical feature."""
BASE_LOGIT = -2.1
"""Intercept of the click log-odds: with the effects above, about one row in four is a click (Criteo's rate)."""

_MASK64 = np.uint64(2**64 - 1)


def synthetic_criteo_rows(n: int, seed: int = 0, num_categories: int = 100_000, drift: float = 0.0, *,
                          click_seed: int = 0, phase: float = 0.0) -> np.ndarray:
    """``n`` Criteo-format rows with Zipf-like categorical popularity, labelled by the click model
    :func:`click_logits`.

    Args:
        n: Number of rows (>= 0).
        seed: Random seed of the rows (>= 0); the same seed gives the same rows.
        num_categories: Size of each categorical vocabulary (>= 2).
        drift: Shift of the popular categories, as a fraction of ``num_categories`` (0 = none): the id of
            popularity rank ``r`` is ``(r + int(drift * num_categories)) % num_categories``. An id keeps its
            click effect when it moves, so a shift brings ids to the top that a model has rarely seen.
        click_seed: Which click model labels the rows (>= 0); rows of one ``click_seed`` share it whatever their
            ``seed``, so two row seeds give two samples of one distribution.
        phase: Where the click model is on its drift (see :func:`click_logits`).

    >>> rows = synthetic_criteo_rows(4, seed=1)
    >>> rows.dtype.itemsize, rows.shape
    (160, (4,))
    """
    n = check_int("n", n, 0)
    seed = check_int("seed", seed, 0)
    num_categories = check_int("num_categories", num_categories, 2)
    drift = check_number("drift", drift)
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, CRITEO_DTYPE)
    rows["dense"] = np.log1p(rng.exponential(DENSE_SCALE, size=(n, 13))).astype(np.float32)
    # log-uniform ranks: a few categories are very popular, most are rare (Zipf-like, cheap to draw)
    ranks = np.minimum(np.exp(rng.random((n, 26), dtype=np.float32) * np.log(num_categories)).astype(np.int64) - 1,
                       num_categories - 1)
    offset = int(drift * num_categories) % num_categories
    rows["cat"] = ((ranks + offset) % num_categories).astype(np.int32)
    p = 1 / (1 + np.exp(-click_logits(rows, click_seed=click_seed, phase=phase)))
    rows["label"] = (rng.random(n) < p).astype(np.int32)
    return rows


def click_logits(rows: np.ndarray, click_seed: int = 0, phase: float = 0.0) -> np.ndarray:
    """The click log-odds of rows under the known click model: what a perfect model would predict.

    ``BASE_LOGIT + w · z + sum_f effect_f(cat_f)``, where ``z`` are the informative dense features standardised
    (``(dense - DENSE_MEAN) / DENSE_STD``), ``w`` a weight vector of length ``DENSE_WEIGHT``, and
    ``effect_f(id)`` a fixed pseudo-random effect of each id of the informative categorical features (standard
    deviation ``CATEGORY_EFFECT_STD``, hashed from ``click_seed``, the feature and the id: no table is kept, so
    any vocabulary size works).

    The model drifts with ``phase``: its parameters are ``cos(pi/2 * phase) * A + sin(pi/2 * phase) * B`` for two
    independent draws ``A`` and ``B``, so their spread stays the same, and the models at phases ``p`` and ``q``
    have correlation ``cos(pi/2 * (p - q))`` (phase 1: a new, unrelated model).

    >>> rows = synthetic_criteo_rows(1000, seed=3, click_seed=5)
    >>> p = 1 / (1 + np.exp(-click_logits(rows, click_seed=5)))
    >>> bool(abs(p.mean() - rows["label"].mean()) < 0.05)
    True
    """
    click_seed = check_int("click_seed", click_seed, 0)
    phase = check_number("phase", phase)
    a, b = math.cos(math.pi / 2 * phase), math.sin(math.pi / 2 * phase)
    z = (rows["dense"][:, :INFORMATIVE_DENSE].astype(np.float64) - DENSE_MEAN) / DENSE_STD
    first, second = _dense_weights(click_seed)
    logit = BASE_LOGIT + z @ (a * first + b * second)
    ids = rows["cat"][:, :INFORMATIVE_CATEGORICAL].astype(np.uint64)
    for draw, share in ((0, a), (1, b)):
        if share:
            logit += share * CATEGORY_EFFECT_STD * _hashed_unit(ids, click_seed, draw).sum(axis=1)
    return logit


def _dense_weights(click_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two orthogonal weight vectors of length ``DENSE_WEIGHT`` over the informative dense features: turning one
    into the other (``cos * first + sin * second``) keeps the length, and so the dense features' share of the
    signal, the same at every phase."""
    draw = np.random.default_rng([click_seed, 0x0DE5]).normal(size=(2, INFORMATIVE_DENSE))
    first = draw[0] / np.linalg.norm(draw[0])
    second = draw[1] - (draw[1] @ first) * first
    return DENSE_WEIGHT * first, DENSE_WEIGHT * second / np.linalg.norm(second)


def _hashed_unit(ids: np.ndarray, click_seed: int, draw: int) -> np.ndarray:
    """A pseudo-random number of mean 0 and variance 1 (uniform) for every ``(feature, id)``: column ``f`` of
    ``ids`` is feature ``f``. The same arguments always give the same numbers."""
    salt = _splitmix(np.array([click_seed % 2**64], np.uint64))
    salt = _splitmix(salt ^ np.uint64(draw + 1))
    features = _splitmix(salt ^ np.arange(1, ids.shape[1] + 1, dtype=np.uint64))
    h = _splitmix(ids ^ features[None, :])
    uniform = (h >> np.uint64(11)).astype(np.float64) / 2.0**53  # [0, 1)
    return (uniform - 0.5) * math.sqrt(12.0)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on ``uint64`` arrays (wrapping arithmetic): a fast, well-mixed integer hash."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))
