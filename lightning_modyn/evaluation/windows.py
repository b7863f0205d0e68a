"""Evaluation windows: which slices of the stream each model is evaluated on."""

from __future__ import annotations

import numpy as np


class SlicingWindows:
    """Consecutive, non-overlapping windows of ``every`` time units from the stream's first timestamp.

    >>> SlicingWindows(10).windows(0, 25)
    [(0, 10), (10, 20), (20, 30)]
    """

    def __init__(self, every: int) -> None:
        if every <= 0:
            raise ValueError(f"every must be a positive time span, got {every}")
        self.every = int(every)

    def windows(self, first: int, last: int) -> list[tuple[int, int]]:
        starts = np.arange(int(first), int(last) + 1, self.every)
        return [(int(s), int(s) + self.every) for s in starts]


class PeriodicWindows:
    """Windows of ``interval`` around points every ``every`` time units (they may overlap or leave gaps).

    >>> PeriodicWindows(every=10, interval=4).windows(0, 20)
    [(-2, 2), (8, 12), (18, 22)]
    """

    def __init__(self, every: int, interval: int) -> None:
        if every <= 0 or interval <= 0:
            raise ValueError(f"every and interval must be positive, got every={every}, interval={interval}")
        self.every, self.interval = int(every), int(interval)

    def windows(self, first: int, last: int) -> list[tuple[int, int]]:
        half = self.interval // 2
        return [(int(p) - half, int(p) - half + self.interval)
                for p in np.arange(int(first), int(last) + 1, self.every)]
