"""Retrain when waiting has cost more than training would: regret against forecast training time.

Both triggers accumulate a *regret* since the last fire and, at every detection point, fire when
``regret × conversion_factor >= context.training_seconds_forecast(samples since the last fire)``;
``conversion_factor`` says how many seconds of training one unit of regret is worth. The regret resets at every
fire. Forecasts come from past fits, so before a model exists the triggers are *unready* (see
:mod:`lightning_modyn.triggers.warmup`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_modyn._checks import check_number
from lightning_modyn.triggers.base import Trigger
from lightning_modyn.triggers.performance import AvoidableMisclassifications, evaluate_window
from lightning_modyn.triggers.warmup import BatchedTrigger


class _CostTrigger(BatchedTrigger):
    def __init__(self, conversion_factor: float, detection_interval: int | None,
                 detection_interval_seconds: int | None, warmup_intervals: int,
                 warmup_trigger: Trigger | None) -> None:
        super().__init__(detection_interval, detection_interval_seconds, warmup_intervals, warmup_trigger)
        self.conversion_factor = check_number("conversion_factor", conversion_factor, 0, low_open=True,
                                              hint="training seconds per unit of regret")
        self._pending = 0  # samples since the last fire

    def _absorb(self, keys: np.ndarray, ts: np.ndarray, labels: np.ndarray) -> None:
        self._pending += len(keys)

    def _regret(self) -> float:
        raise NotImplementedError

    def _evaluate(self, position: int, calibrate: bool) -> tuple[bool, dict[str, Any]]:
        regret = self._regret()
        forecast = float(self.context.training_seconds_forecast(self._pending))
        fire = regret * self.conversion_factor >= forecast
        return (not calibrate and fire), {"regret": regret, "forecast_seconds": forecast}

    def _on_fire(self, position: int) -> None:
        self._pending = 0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pending": self._pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._pending = int(state["pending"])


class DataIncorporationLatencyCostTrigger(_CostTrigger):
    """Regret: the total time the samples since the last fire have waited to be trained on — the sum over them
    of ``t - timestamp``, ``t`` being the timestamp of the detection interval's last sample.

    Parameters
    ----------
    conversion_factor
        Training seconds worth one second of one sample's waiting.
    detection_interval, detection_interval_seconds
        How often to decide (samples or seconds of sample time; exactly one).
    warmup_intervals, warmup_trigger
        See :class:`~lightning_modyn.triggers.warmup.BatchedTrigger`.

    Examples
    --------
    >>> class Context:
    ...     has_model = True
    ...     def training_seconds_forecast(self, num_samples):
    ...         return 100.0
    >>> t = DataIncorporationLatencyCostTrigger(conversion_factor=1.0, detection_interval=5)
    >>> t.setup(Context())
    >>> keys = np.arange(30)           # one sample a second: after 5k samples the regret is (5k)(5k - 1) / 2
    >>> t.inform(keys, keys, np.zeros(30)).tolist()
    [14, 29]

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025
    (DataIncorporationLatencyCostTrigger).
    """

    def __init__(self, conversion_factor: float, detection_interval: int | None = None,
                 detection_interval_seconds: int | None = None, warmup_intervals: int = 0,
                 warmup_trigger: Trigger | None = None) -> None:
        super().__init__(conversion_factor, detection_interval, detection_interval_seconds, warmup_intervals,
                         warmup_trigger)
        self._sum_ts = 0  # exact: Python int

    def _absorb(self, keys: np.ndarray, ts: np.ndarray, labels: np.ndarray) -> None:
        super()._absorb(keys, ts, labels)
        self._sum_ts += int(ts.sum())

    def _regret(self) -> float:
        return float(self._pending * int(self.interval()[1][-1]) - self._sum_ts)

    def _on_fire(self, position: int) -> None:
        super()._on_fire(position)
        self._sum_ts = 0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "sum_ts": self._sum_ts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._sum_ts = int(state["sum_ts"])


class AvoidableMisclassificationCostTrigger(_CostTrigger):
    """Regret: avoidable misclassifications × the time they stay unaddressed (area under their count over time).

    At every evaluable detection point the interval is predicted (``context.predict``) and its avoidable
    misclassifications estimated (:class:`~lightning_modyn.triggers.performance.AvoidableMisclassifications`).
    Those outstanding since the last fire accrue the time since the previous evaluation; the new ones accrue
    half the interval (they arrived throughout it).

    Parameters
    ----------
    conversion_factor
        Training seconds worth one avoidable misclassification left unaddressed for one second.
    detection_interval, detection_interval_seconds
        How often to decide (samples or seconds of sample time; exactly one).
    expected_accuracy, allow_reduction, expected_window
        See :class:`~lightning_modyn.triggers.performance.AvoidableMisclassifications`.
    warmup_intervals, warmup_trigger
        See :class:`~lightning_modyn.triggers.warmup.BatchedTrigger`.

    Examples
    --------
    >>> class Context:
    ...     has_model = True
    ...     def predict(self, keys):                   # every 5th sample misclassified
    ...         return (keys % 5 == 0).astype(int), np.zeros(len(keys), int)
    ...     def training_seconds_forecast(self, num_samples):
    ...         return 50.0
    >>> t = AvoidableMisclassificationCostTrigger(1.0, detection_interval=10, expected_accuracy=1.0)
    >>> t.setup(Context())
    >>> keys = np.arange(60)   # 2 avoidable per 10 s: regret 9, 39, 89 ≥ 50 → fire; then 10, 40, 90
    >>> t.inform(keys, keys, np.zeros(60)).tolist()
    [29, 59]

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025
    (AvoidableMisclassificationCostTrigger).
    """

    def __init__(self, conversion_factor: float, detection_interval: int | None = None,
                 expected_accuracy: float | None = None, allow_reduction: bool = False, expected_window: int = 10,
                 detection_interval_seconds: int | None = None, warmup_intervals: int = 0,
                 warmup_trigger: Trigger | None = None) -> None:
        super().__init__(conversion_factor, detection_interval, detection_interval_seconds, warmup_intervals,
                         warmup_trigger)
        self.estimator = AvoidableMisclassifications(expected_accuracy, allow_reduction, expected_window)
        self._outstanding = 0.0  # avoidable misclassifications since the last fire
        self._area = 0.0  # their accumulated waiting time
        self._last_eval_ts: int | None = None

    def _regret(self) -> float:
        keys, ts = self.interval()
        start = self._last_eval_ts if self._last_eval_ts is not None else int(ts[0])
        duration = float(int(ts[-1]) - start)
        self._last_eval_ts = int(ts[-1])
        new = self.estimator.observe(*evaluate_window(self.context, keys))
        self._area += self._outstanding * duration + new * duration / 2.0
        self._outstanding += new
        return self._area

    def _on_fire(self, position: int) -> None:
        super()._on_fire(position)
        self._outstanding, self._area = 0.0, 0.0
        self.estimator.on_fire()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "outstanding": self._outstanding, "area": self._area,
                "last_eval_ts": self._last_eval_ts, "estimator": self.estimator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._outstanding, self._area = float(state["outstanding"]), float(state["area"])
        self._last_eval_ts = state["last_eval_ts"]
        self.estimator.load_state_dict(state["estimator"])
