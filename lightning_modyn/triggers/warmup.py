"""Detection points and warm-up: what every model-aware trigger (drift, performance, cost) shares.

A model-aware trigger decides only at *detection points* — the end of every ``detection_interval`` samples, or
of every ``detection_interval_seconds`` of sample time — and fires at the interval's last sample. Each point is
in one of three phases:

``"unready"``
    No model yet (``context.has_model`` is False) or not enough data to compare (e.g. no drift reference). The
    ``warmup_trigger`` decides (fire if it fired during the interval); without one the trigger fires at the first
    detection point only, so that a first model gets trained.
``"warmup"``
    The first ``warmup_intervals`` points that can be evaluated: the measurement is taken and calibrates the
    decision policies, but the ``warmup_trigger`` decides (no ``warmup_trigger``: no fire).
``"detect"``
    The decision policies decide.

Intervals are counted from the start of the stream, not from the last fire, and the stream is split at interval
ends before anything is evaluated, so chunking never changes a decision. Time intervals end like
:class:`~lightning_modyn.triggers.time.TimeTrigger` periods: at the sample before the first one at or past the
boundary, which may be the previous chunk's last sample (reported as position ``-1``).

A ``warmup_trigger`` fires at the end of the detection interval in which it *reports* a fire. A
:class:`~lightning_modyn.triggers.time.TimeTrigger` reports its fire at the last sample before a boundary only
once it sees the first sample past it; when that sample opens the next detection interval (a boundary that falls
exactly on an interval end), the fire counts at the end of that next interval: ``TimeTrigger(every=10)`` alone
fires at 9, 19, 29 of samples stamped 0..39, as the warm-up of a trigger with ``detection_interval=10`` at 19, 29,
39. Nothing later in the stream can be used earlier, so this delay of up to one interval is the price of deciding
only at detection points.

Examples
--------
A trigger measuring the interval's mean timestamp (4.5, 14.5, 24.5, 34.5), firing from 20 on, warming up for two
points:

>>> from lightning_modyn.triggers.decision import StaticThreshold
>>> class MeanTime(BatchedTrigger):
...     policy = StaticThreshold(20.0)
...     def _evaluate(self, position, calibrate):
...         value = float(self.interval()[1].mean())
...         return (not calibrate and self.policy.decide(value)), {"value": value}
>>> class Context:
...     has_model = True
>>> t = MeanTime(detection_interval=10, warmup_intervals=2)
>>> t.setup(Context())
>>> keys = np.arange(40)
>>> t.inform(keys, keys, np.zeros(40)).tolist()
[29, 39]
>>> [e["phase"] for e in t.evaluations]
['warmup', 'warmup', 'detect', 'detect']

References
----------
Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (batched triggers,
warm-up policies).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_modyn._checks import check_int
from lightning_modyn.triggers.base import Trigger, TriggerContext
from lightning_modyn.triggers.time import check_sorted


class BatchedTrigger(Trigger):
    """Base of triggers that decide at detection points with a warm-up phase (see the module docstring).

    Parameters
    ----------
    detection_interval
        Samples per detection interval (give this or ``detection_interval_seconds``).
    detection_interval_seconds
        Seconds of sample time per detection interval.
    warmup_intervals
        Evaluable detection points that only calibrate the decision policies.
    warmup_trigger
        Trigger (e.g. :class:`~lightning_modyn.triggers.time.TimeTrigger`) that decides while the trigger is
        unready or warming up; it sees every sample until the warm-up ends.

    Subclasses implement ``_evaluate(position, calibrate) -> (fire, info)`` and may override ``_absorb``,
    ``_ready`` and ``_on_fire``. Each detection point appends ``{"position", "phase", "fired", ...info}`` to
    :attr:`evaluations` (global positions; not part of the state — read and clear it as you like).
    """

    uses_model = True  # drift, performance and cost decide with the current model or the fits' history

    def __init__(self, detection_interval: int | None = None, detection_interval_seconds: int | None = None,
                 warmup_intervals: int = 0, warmup_trigger: Trigger | None = None) -> None:
        if (detection_interval is None) == (detection_interval_seconds is None):
            raise ValueError("give exactly one of detection_interval (samples) or detection_interval_seconds, got "
                             f"detection_interval={detection_interval!r}, "
                             f"detection_interval_seconds={detection_interval_seconds!r}")
        for name, value in (("detection_interval", detection_interval),
                            ("detection_interval_seconds", detection_interval_seconds)):
            if value is not None:
                check_int(name, value, 1)
        check_int("warmup_intervals", warmup_intervals, 0)
        if warmup_trigger is not None and not isinstance(warmup_trigger, Trigger):
            raise ValueError(f"warmup_trigger must be None or a Trigger (e.g. TimeTrigger, DataAmountTrigger), "
                             f"got {warmup_trigger!r}")
        self.detection_interval = None if detection_interval is None else int(detection_interval)
        self.detection_interval_seconds = (None if detection_interval_seconds is None
                                           else int(detection_interval_seconds))
        self.warmup_intervals = int(warmup_intervals)
        self.warmup_trigger = warmup_trigger
        self.evaluations: list[dict[str, Any]] = []
        self._seen = 0
        self._next_at: int | None = None
        self._last_ts: int | None = None
        self._interval_keys: list[np.ndarray] = []
        self._interval_ts: list[np.ndarray] = []
        self._warmed = 0
        self._fired = False
        self._warmup_active = warmup_trigger is not None
        self._warmup_fired = False

    def setup(self, context: TriggerContext) -> None:
        super().setup(context)
        if self.warmup_trigger is not None:
            self.warmup_trigger.setup(context)

    # ------------------------------------------------------------------------------------------------ stream
    def inform(self, keys: np.ndarray, timestamps: np.ndarray, labels: np.ndarray) -> np.ndarray:
        keys, ts, labels = np.asarray(keys), np.asarray(timestamps, dtype=np.int64), np.asarray(labels)
        n, offset, out, i = len(keys), self._seen, [], 0
        if self.detection_interval_seconds is not None:
            check_sorted(ts, self._last_ts)
        while i < n:
            if self.detection_interval is not None:
                j = min(n, i + self.detection_interval - self._filled())
                self._take(keys[i:j], ts[i:j], labels[i:j])
                if self._filled() == self.detection_interval:
                    self._close(offset, out)
            else:
                if self._next_at is None:
                    self._next_at = int(ts[i]) + self.detection_interval_seconds
                j = max(i, int(np.searchsorted(ts, self._next_at, side="left")))
                if j > i:
                    self._take(keys[i:j], ts[i:j], labels[i:j])
                if j < n:  # ts[j] crosses the boundary: the interval ended at the sample before it
                    self._close(offset, out)
                    step = self.detection_interval_seconds
                    self._next_at += step * ((int(ts[j]) - self._next_at) // step + 1)
            i = j
        if n:
            self._last_ts = int(ts[-1])
        return np.asarray(out, dtype=np.int64)

    def _filled(self) -> int:
        return sum(len(k) for k in self._interval_keys)

    def _take(self, keys: np.ndarray, ts: np.ndarray, labels: np.ndarray) -> None:
        self._seen += len(keys)
        self._interval_keys.append(keys)
        self._interval_ts.append(ts)
        self._absorb(keys, ts, labels)
        if self._warmup_active and len(self.warmup_trigger.inform(keys, ts, labels)):
            self._warmup_fired = True

    def _close(self, offset: int, out: list[int]) -> None:
        position = self._seen - 1
        if self.context is None:
            raise RuntimeError(f"{type(self).__name__} is model-aware: call setup(context) before inform()")
        info: dict[str, Any] = {}
        if not (self.context.has_model and self._ready()):
            phase = "unready"
            fire = self._warmup_fired if self.warmup_trigger is not None else not self._fired
        elif self._warmed < self.warmup_intervals:
            phase = "warmup"
            self._warmed += 1
            _, info = self._evaluate(position, calibrate=True)
            fire = self._warmup_fired
        else:
            phase = "detect"
            fire, info = self._evaluate(position, calibrate=False)
        self._warmup_active = self.warmup_trigger is not None and (
            phase == "unready" or self._warmed < self.warmup_intervals)
        self._warmup_fired = False
        self._interval_keys, self._interval_ts = [], []
        if fire:
            self._fired = True
            self._on_fire(position)
            out.append(position - offset)
        self.evaluations.append({"position": position, "phase": phase, "fired": bool(fire), **info})

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Keys and timestamps of the detection interval being closed (or still open)."""
        if not self._interval_keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(self._interval_keys), np.concatenate(self._interval_ts)

    # ----------------------------------------------------------------------------------------- subclass hooks
    def _absorb(self, keys: np.ndarray, ts: np.ndarray, labels: np.ndarray) -> None:
        """Every sample passes here once, in order, before the detection point that closes its interval."""

    def _ready(self) -> bool:
        """Whether a measurement can be taken (besides the context having a model)."""
        return True

    def _evaluate(self, position: int, calibrate: bool) -> tuple[bool, dict[str, Any]]:
        raise NotImplementedError

    def _on_fire(self, position: int) -> None:
        """The trigger fired at global ``position`` (whichever phase decided)."""

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        keys, ts = self.interval()
        return {"seen": self._seen, "next_at": self._next_at, "last_ts": self._last_ts,
                "interval_keys": keys.copy(), "interval_ts": ts.copy(), "warmed": self._warmed,
                "fired": self._fired, "warmup_active": self._warmup_active, "warmup_fired": self._warmup_fired,
                "warmup_trigger": None if self.warmup_trigger is None else self.warmup_trigger.state_dict(),
                "evaluations_before": len(self.evaluations)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seen, self._next_at, self._last_ts = int(state["seen"]), state["next_at"], state["last_ts"]
        keys, ts = np.asarray(state["interval_keys"]), np.asarray(state["interval_ts"], dtype=np.int64)
        self._interval_keys, self._interval_ts = ([keys], [ts]) if len(keys) else ([], [])
        self._warmed, self._fired = int(state["warmed"]), bool(state["fired"])
        self._warmup_active, self._warmup_fired = bool(state["warmup_active"]), bool(state["warmup_fired"])
        if self.warmup_trigger is not None:
            self.warmup_trigger.load_state_dict(state["warmup_trigger"])
        # rewound (the loop retells samples after a fire): forget the detection points that will come again
        del self.evaluations[int(state.get("evaluations_before", len(self.evaluations))):]
