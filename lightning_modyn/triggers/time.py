"""Retrain every ``every`` seconds of stream time (sample timestamps, not wall clock)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_modyn._checks import check_int
from lightning_modyn.triggers.base import Trigger


def check_sorted(timestamps: np.ndarray, last: int | None) -> None:
    """Raise unless ``timestamps`` are non-decreasing and start at or after ``last`` (the previous chunk's end)."""
    if len(timestamps) and (np.any(np.diff(timestamps) < 0) or (last is not None and timestamps[0] < last)):
        raise ValueError("timestamps must be non-decreasing across the stream (time-based triggers need sorted data)")


class TimeTrigger(Trigger):
    """Fire once per period of ``every`` seconds of sample time.

    Periods are ``[t0 + k·every, t0 + (k+1)·every)`` with ``t0 = start`` (or the first sample's timestamp).
    A period's data becomes a trigger when the first sample of a later period arrives: the trigger fires at the
    position of the sample *before* it — the last sample of the period, as in Modyn's ``TimeTrigger``. Periods
    without samples make no trigger (one fire per gap, never two at one position), and neither does a boundary
    crossed before the first sample.

    Because the crossing is seen only when the next sample arrives, a period that ends with the last sample of a
    chunk is reported by the next :meth:`inform` call as position ``-1`` (the previous chunk's last sample). So a
    stream fed in chunks of any sizes fires at the same global positions as when fed whole.

    Parameters
    ----------
    every
        Period length in seconds (a positive integer).
    start
        Timestamp the schedule starts from (first boundary ``start + every``); None: the first sample's timestamp.

    Examples
    --------
    >>> t = TimeTrigger(every=10)
    >>> ts = np.arange(100)
    >>> t.inform(np.arange(100), ts, np.zeros(100)).tolist()
    [9, 19, 29, 39, 49, 59, 69, 79, 89]
    >>> t.inform(np.array([100]), np.array([100]), np.zeros(1)).tolist()   # 100 closes [90, 100)
    [-1]

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (TimeTrigger).
    """

    def __init__(self, every: int, start: int | None = None) -> None:
        check_int("every", every, 1, hint="(seconds)")
        if start is not None and not isinstance(start, (int, np.integer)):
            raise ValueError(f"start must be None (first sample's timestamp) or an integer timestamp, got {start!r}")
        self.every = int(every)
        self.start = None if start is None else int(start)
        self._next_at: int | None = None
        self._seen = 0
        self._last_ts: int | None = None

    def inform(self, keys: np.ndarray, timestamps: np.ndarray, labels: np.ndarray) -> np.ndarray:
        ts = np.asarray(timestamps, dtype=np.int64)
        check_sorted(ts, self._last_ts)
        n, offset, out = len(ts), self._seen, []
        if n == 0:
            return np.zeros(0, np.int64)
        if self._next_at is None:
            self._next_at = (int(ts[0]) if self.start is None else self.start) + self.every
        while True:
            j = int(np.searchsorted(ts, self._next_at, side="left"))  # first sample of a later period
            if j >= n:
                break
            if offset + j - 1 >= 0:
                out.append(j - 1)
            self._next_at += self.every * ((int(ts[j]) - self._next_at) // self.every + 1)
        self._seen += n
        self._last_ts = int(ts[-1])
        return np.asarray(out, dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"next_at": self._next_at, "seen": self._seen, "last_ts": self._last_ts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._next_at, self._seen, self._last_ts = state["next_at"], int(state["seen"]), state["last_ts"]
