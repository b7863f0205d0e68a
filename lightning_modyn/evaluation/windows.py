"""Evaluation windows: which slices of the stream each model is evaluated on.

Every kind has ``windows(first, last, triggers=())`` returning ``[(start, end), ...]`` half-open time spans, given
the stream's first and last timestamps and the timestamps at which the run's triggers fired (in order). Windows
may overlap or leave gaps; :class:`~lightning_modyn.evaluation.Evaluation` drops those without samples.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lightning_modyn._checks import check_whole

#: What a window's length or spacing is, in the refusal of a bad one.
_SPAN = "(a time span in the stream's units)"


class SlicingWindows:
    """Consecutive, non-overlapping windows of ``every`` time units from the stream's first timestamp.

    >>> SlicingWindows(10).windows(0, 25)
    [(0, 10), (10, 20), (20, 30)]
    """

    def __init__(self, every: int) -> None:
        self.every = check_whole("every", every, 1, _SPAN)

    def windows(self, first: int, last: int, triggers: Sequence[int] = ()) -> list[tuple[int, int]]:
        starts = np.arange(int(first), int(last) + 1, self.every)
        return [(int(s), int(s) + self.every) for s in starts]


class PeriodicWindows:
    """Windows of ``interval`` around points every ``every`` time units (they may overlap or leave gaps).

    >>> PeriodicWindows(every=10, interval=4).windows(0, 20)
    [(-2, 2), (8, 12), (18, 22)]
    """

    def __init__(self, every: int, interval: int) -> None:
        self.every = check_whole("every", every, 1, _SPAN)
        self.interval = check_whole("interval", interval, 1, _SPAN)

    def windows(self, first: int, last: int, triggers: Sequence[int] = ()) -> list[tuple[int, int]]:
        half = self.interval // 2
        return [(int(p) - half, int(p) - half + self.interval)
                for p in np.arange(int(first), int(last) + 1, self.every)]


class StaticWindows:
    """The same fixed spans for every run, e.g. a held-out period evaluated throughout.

    >>> StaticWindows([(0, 100), [500, 600]]).windows(0, 1000)
    [(0, 100), (500, 600)]
    """

    def __init__(self, windows: Sequence[Sequence[int]]) -> None:
        spans = []
        for i, w in enumerate(windows):
            if isinstance(w, (str, bytes)) or len(w) != 2:
                raise ValueError(f"window {i} must be [start, end] with start < end, got {w!r}")
            start, end = check_whole(f"window {i} start", w[0]), check_whole(f"window {i} end", w[1])
            if not start < end:
                raise ValueError(f"window {i} must be [start, end] with start < end, got {list(w)}")
            spans.append((start, end))
        if not spans:
            raise ValueError("give at least one [start, end] window")
        self.spans = spans

    def windows(self, first: int, last: int, triggers: Sequence[int] = ()) -> list[tuple[int, int]]:
        return list(self.spans)


class BetweenTriggersWindows:
    """One window per stretch of the stream between two consecutive triggers: ``(t_i, t_{i+1}]``, plus the
    stretch up to the first trigger and the one after the last. The model of trigger ``i`` is the currently
    active model on exactly the ``i + 1``-th window, so the active composite scores each model on the data it
    served. Timestamps are integers, so ``(t, u]`` is the span ``[t + 1, u + 1)``.

    >>> BetweenTriggersWindows().windows(0, 100, triggers=[29, 59])
    [(0, 30), (30, 60), (60, 101)]
    """

    def windows(self, first: int, last: int, triggers: Sequence[int] = ()) -> list[tuple[int, int]]:
        bounds = [int(first)] + [int(t) + 1 for t in triggers] + [int(last) + 1]
        return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class TriggerOffsetWindows:
    """Windows of ``length`` starting at each ``offset`` from every trigger, e.g. the day before and the day after
    each retraining (``offsets=[-86400, 1], length=86400``). Ordered by trigger, then offset.

    >>> TriggerOffsetWindows(offsets=[-10, 1], length=10).windows(0, 100, triggers=[29, 59])
    [(19, 29), (30, 40), (49, 59), (60, 70)]
    """

    def __init__(self, offsets: Sequence[int], length: int) -> None:
        if not len(offsets):
            raise ValueError("give at least one offset")
        self.offsets = [check_whole(f"offsets[{i}]", o) for i, o in enumerate(offsets)]
        self.length = check_whole("length", length, 1, _SPAN)

    def windows(self, first: int, last: int, triggers: Sequence[int] = ()) -> list[tuple[int, int]]:
        return [(int(t) + o, int(t) + o + self.length) for t in triggers for o in self.offsets]
