"""Combine triggers: fire when enough of them fired in the same interval."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lightning_modyn._checks import check_int
from lightning_modyn.triggers.base import Trigger, TriggerContext
from lightning_modyn.triggers.decision import aggregation as _aggregation


class EnsembleTrigger(Trigger):
    """Every ``detection_interval`` samples, ask each sub-trigger whether it fired during the interval and fire
    at the interval's last sample when the aggregated answer is yes.

    The stream is cut at interval ends before the sub-triggers see it, so they see the same data in the same
    order however the ensemble is chunked. A sub-trigger's fire counts for the interval during whose samples it
    was reported (a :class:`~lightning_modyn.triggers.time.TimeTrigger` reports a period at the first sample of
    the next one). Sub-triggers run as if alone — each resets its own state at its own fires, not at the
    ensemble's — and are all told about new models.

    Parameters
    ----------
    triggers
        The sub-triggers: ``name → trigger`` or a list (named ``"0"``, ``"1"``, ...).
    detection_interval
        Samples per interval.
    aggregation
        ``"majority"`` (more than half fired), ``"at_least"`` (``n`` or more fired), or a callable given the
        decisions as ``list[bool]`` in the order of ``triggers``.
    n
        For ``"at_least"``.

    Examples
    --------
    >>> from lightning_modyn.triggers.amount import DataAmountTrigger
    >>> from lightning_modyn.triggers.time import TimeTrigger
    >>> e = EnsembleTrigger({"amount": DataAmountTrigger(10), "time": TimeTrigger(every=50)},
    ...                     detection_interval=10, aggregation="at_least", n=2)
    >>> keys = np.arange(120)                            # the time trigger reports 49 and 99 at 50 and 100
    >>> e.inform(keys, keys, np.zeros(120)).tolist()
    [59, 109]

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (EnsembleTrigger).
    """

    def __init__(self, triggers: dict[str, Trigger] | Sequence[Trigger], detection_interval: int,
                 aggregation: str | Callable[[list[bool]], bool] = "majority", n: int | None = None) -> None:
        if not isinstance(triggers, dict):
            triggers = {str(i): t for i, t in enumerate(triggers)}
        if not triggers or not all(isinstance(t, Trigger) for t in triggers.values()):
            raise ValueError(f"triggers must be a non-empty dict name → Trigger or a list of Triggers, "
                             f"got {triggers!r}")
        check_int("detection_interval", detection_interval, 1)
        self.triggers: dict[str, Trigger] = dict(triggers)
        self.detection_interval = int(detection_interval)
        self.aggregate = _aggregation(aggregation, n)
        self._filled = 0
        self._fired = {name: False for name in self.triggers}

    @property
    def uses_model(self) -> bool:  # type: ignore[override]
        return any(t.uses_model for t in self.triggers.values())

    def setup(self, context: TriggerContext) -> None:
        super().setup(context)
        for trigger in self.triggers.values():
            trigger.setup(context)

    def inform_new_model(self, model_id: int, trained_keys: np.ndarray, train_seconds: float) -> None:
        for trigger in self.triggers.values():
            trigger.inform_new_model(model_id, trained_keys, train_seconds)

    def inform(self, keys: np.ndarray, timestamps: np.ndarray, labels: np.ndarray) -> np.ndarray:
        keys, timestamps, labels = np.asarray(keys), np.asarray(timestamps), np.asarray(labels)
        out, i, n = [], 0, len(keys)
        while i < n:
            j = min(n, i + self.detection_interval - self._filled)
            for name, trigger in self.triggers.items():
                if len(trigger.inform(keys[i:j], timestamps[i:j], labels[i:j])):
                    self._fired[name] = True
            self._filled += j - i
            if self._filled == self.detection_interval:
                if self.aggregate([self._fired[name] for name in self.triggers]):
                    out.append(j - 1)
                self._filled = 0
                self._fired = {name: False for name in self.triggers}
            i = j
        return np.asarray(out, dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"filled": self._filled, "fired": dict(self._fired),
                "triggers": {name: t.state_dict() for name, t in self.triggers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._filled, self._fired = int(state["filled"]), {k: bool(v) for k, v in state["fired"].items()}
        for name, trigger in self.triggers.items():
            trigger.load_state_dict(state["triggers"][name])
