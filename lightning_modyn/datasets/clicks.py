"""Synthetic clicks: a DLRM-like stream of Criteo-format rows over days, with a known, drifting click model.

Day ``d`` holds ``rows_per_day`` rows of :func:`~lightning_modyn.datasets.criteo.synthetic_criteo_rows`, labelled
by the logistic click model of :func:`~lightning_modyn.datasets.criteo.click_logits`: four dense features and a
per-id effect of six categorical features move the click log-odds (the best possible ROC-AUC is about 0.88; the
dense features alone give about 0.74). Three settings make the stream drift, each from day to day:

* ``drift_per_day`` moves the popular categorical ids through the vocabulary; an id keeps its click effect, so
  ids that a model has rarely seen rise to the top (covariate shift);
* ``concept_drift_per_day`` turns the click model's parameters (dense weights, id effects) slowly into another,
  unrelated set (concept drift);
* ``ctr_drift_per_day`` moves the click rate: day ``d``'s click log-odds change by ``d * ctr_drift_per_day`` —
  exactly, by drawing rows and keeping clicks and non-clicks at different rates (rejection sampling), which
  leaves the rows of either label distributed as before (label shift).

The click model is fixed by ``seed``; the rows of day ``d`` come from their own random stream. ``heldout=True``
draws another row stream from the same days, click model and drift: samples no model trained on, to evaluate on.

:func:`synthetic_clicks_arrays` returns the stream as arrays; :func:`write_synthetic_clicks` appends it to a
:class:`~lightning_modyn.store.SampleStore` as records (``CRITEO_DTYPE``) labelled by their click.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from lightning_modyn._checks import check_int, check_number
from lightning_modyn.datasets.criteo import CRITEO_DTYPE, synthetic_criteo_rows

DAY_SECONDS = 86400
"""Seconds in a day: day ``d`` spans ``[start + d * DAY_SECONDS, start + (d + 1) * DAY_SECONDS)``."""

HELDOUT_STREAM = 0x48E1D
"""Mixed into the held-out stream's per-day seeds, so that its rows are drawn independently of the training rows."""


def synthetic_clicks_arrays(
    days: int = 7,
    rows_per_day: int = 10_000,
    *,
    seed: int = 0,
    drift_per_day: float = 1e-4,
    ctr_drift_per_day: float = 0.0,
    concept_drift_per_day: float = 0.0,
    num_categories: int = 100_000,
    start: int = 0,
    heldout: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The click stream as arrays: ``(rows, timestamps)``, in time order.

    Parameters
    ----------
    days
        Number of days (>= 1).
    rows_per_day
        Rows per day (>= 1).
    seed
        Random seed (>= 0) of the click model and of the rows; the same arguments give the same rows, and a
        day's rows do not depend on how many days follow.
    drift_per_day
        Popularity drift: how far (as a fraction of ``num_categories``) the popular ids of every categorical
        feature move per day; day ``d`` uses ``synthetic_criteo_rows(..., drift=d * drift_per_day)``. With the
        default vocabulary, ``1e-4`` moves them by 10 ids a day, so that yesterday's 11th most popular id is
        today's first; 0 keeps popularity fixed.
    ctr_drift_per_day
        Click-rate drift: change of the click log-odds per day (e.g. ``-0.1``: clicks get rarer day by day);
        0 keeps the click rate fixed.
    concept_drift_per_day
        Click-model drift: day ``d``'s model is at phase ``d * concept_drift_per_day`` of
        :func:`~lightning_modyn.datasets.criteo.click_logits`, so days ``k`` apart have click models of
        correlation ``cos(pi/2 * k * concept_drift_per_day)`` (``0.05``: 0.997 from one day to the next,
        0.89 over six days); 0 keeps the model fixed.
    num_categories
        Size of each categorical vocabulary (>= 2).
    start
        Timestamp (e.g. unix seconds) at which day 0 begins.
    heldout
        Draw the held-out stream instead: the same days, click model and drift, but other rows (another random
        stream per day), so a model trained on the training stream never saw them.

    Returns
    -------
    rows
        Structured array of ``CRITEO_DTYPE``, ``days * rows_per_day`` rows; ``rows["label"]`` is the click.
    timestamps
        ``int64`` seconds, non-decreasing, ``start + d * 86400 + (seconds into day d)``.

    Examples
    --------
    >>> rows, ts = synthetic_clicks_arrays(days=3, rows_per_day=1000, ctr_drift_per_day=-1.0)
    >>> rows.dtype == CRITEO_DTYPE, rows.shape, sorted(set((ts // 86400).tolist()))
    (True, (3000,), [0, 1, 2])
    >>> ctr = rows["label"].reshape(3, 1000).mean(axis=1)
    >>> bool(ctr[0] > ctr[1] > ctr[2])
    True

    References
    ----------
    Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation Systems", 2019.
    Criteo 1TB Click Logs, https://ailab.criteo.com/download-criteo-1tb-click-logs-dataset/
    """
    parts = list(_days(days, rows_per_day, seed, drift_per_day, ctr_drift_per_day, concept_drift_per_day,
                       num_categories, start, heldout))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write_synthetic_clicks(store_or_url: Any, days: int = 7, rows_per_day: int = 10_000, **options: Any) -> np.ndarray:
    """Append the click stream to a store as records, one day per append; returns the new keys.

    Parameters
    ----------
    store_or_url
        A writable :class:`~lightning_modyn.store.SampleStore` (of ``CRITEO_DTYPE`` records, or still without
        records), or a URL/path at which a new store is created (and closed again after writing).
    days, rows_per_day, **options
        As for :func:`synthetic_clicks_arrays` (``seed``, ``drift_per_day``, ``heldout``, ...). Every argument
        is checked before anything is created or written.

    Returns
    -------
    keys
        ``int64`` store keys, one per row, in the order of :func:`synthetic_clicks_arrays`; each row's catalog
        label is its click and its timestamp the array's.

    Examples
    --------
    >>> import tempfile
    >>> from lightning_modyn.store import SampleStore
    >>> url = tempfile.mkdtemp() + "/clicks"
    >>> keys = write_synthetic_clicks(url, days=2, rows_per_day=500)
    >>> store = SampleStore.open(url, readonly=True)
    >>> rows, ts = synthetic_clicks_arrays(days=2, rows_per_day=500)
    >>> bool((store.get_records(keys) == rows).all()), store.lookup(keys).timestamps.tolist() == ts.tolist()
    (True, True)
    >>> store.label_counts() == {0: int((rows["label"] == 0).sum()), 1: int(rows["label"].sum())}
    True

    References
    ----------
    Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation Systems", 2019.
    """
    stream = _days(days, rows_per_day, **options)  # checks the arguments; generates nothing yet
    from lightning_modyn.store import SampleStore

    owned = not isinstance(store_or_url, SampleStore)
    store = SampleStore.create(store_or_url, record_dtype=CRITEO_DTYPE) if owned else store_or_url
    try:
        return np.concatenate([store.append_records(rows, timestamps=ts, labels="label") for rows, ts in stream])
    finally:
        if owned:
            store.close()


def _days(days: int = 7, rows_per_day: int = 10_000, seed: int = 0, drift_per_day: float = 1e-4,
          ctr_drift_per_day: float = 0.0, concept_drift_per_day: float = 0.0, num_categories: int = 100_000,
          start: int = 0, heldout: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Check the arguments now; return an iterator of each day's ``(rows, timestamps)``."""
    days = check_int("days", days, 1)
    rows_per_day = check_int("rows_per_day", rows_per_day, 1)
    seed = check_int("seed", seed, 0)
    num_categories = check_int("num_categories", num_categories, 2)
    start = check_int("start", start)
    drift_per_day = check_number("drift_per_day", drift_per_day)
    ctr_drift_per_day = check_number("ctr_drift_per_day", ctr_drift_per_day)
    concept_drift_per_day = check_number("concept_drift_per_day", concept_drift_per_day)
    if not isinstance(heldout, (bool, np.bool_)):
        raise ValueError(f"heldout must be True (the held-out stream) or False (the training stream), got {heldout!r}")

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for d in range(days):
            # per day: a prefix of days never changes; the held-out stream has its own per-day seeds
            rng = np.random.default_rng([seed, d, HELDOUT_STREAM] if heldout else [seed, d])
            rows = _day_rows(rng, rows_per_day, num_categories, d * drift_per_day, d * ctr_drift_per_day,
                             click_seed=seed, phase=d * concept_drift_per_day)
            seconds = np.sort(rng.integers(0, DAY_SECONDS, rows_per_day))
            yield rows, (start + d * DAY_SECONDS + seconds).astype(np.int64)

    return generate()


def _day_rows(rng: np.random.Generator, n: int, num_categories: int, drift: float, shift: float, *,
              click_seed: int, phase: float) -> np.ndarray:
    """``n`` rows whose click log-odds are those of ``click_logits`` (at ``phase``) plus ``shift``.

    Keeping a drawn row with probability ``w1`` if clicked and ``w0`` if not multiplies the odds of a click
    given the features by ``w1 / w0``; with ``w1 / w0 = exp(shift)`` the log-odds move by exactly ``shift``.
    """
    keep_click, keep_other = (1.0, math.exp(-shift)) if shift >= 0 else (math.exp(shift), 1.0)
    parts, have = [], 0
    while have < n:
        if shift:  # a rough guess of the acceptance rate: it only sets how many rows to draw per round
            draw = max(1024, int((n - have) / (0.25 * keep_click + 0.75 * keep_other) * 1.1))
        else:
            draw = n
        rows = synthetic_criteo_rows(draw, seed=int(rng.integers(2**63)), num_categories=num_categories, drift=drift,
                                     click_seed=click_seed, phase=phase)
        if shift:
            keep = rng.random(draw) < np.where(rows["label"] == 1, keep_click, keep_other)
            rows = rows[keep]
        parts.append(rows)
        have += len(rows)
    return np.concatenate(parts)[:n]
