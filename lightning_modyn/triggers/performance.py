"""Retrain when the current model performs badly on the newest data."""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_modyn._checks import check_int, check_number
from lightning_modyn.triggers.base import Trigger
from lightning_modyn.triggers.decision import DecisionPolicy, _check_policies
from lightning_modyn.triggers.warmup import BatchedTrigger


class AvoidableMisclassifications:
    """Estimate how many misclassifications of a window a fresh model would have avoided.

    ``wrong - (1 - expected_accuracy) · n``, floored at 0 unless ``allow_reduction``. Without a given
    ``expected_accuracy`` it is the mean accuracy of the first window evaluated after each of the last
    ``expected_window`` fires (and of the first window ever evaluated) — what a freshly trained model achieves
    when the loop retrains at every fire. Until such a window is seen the estimate is 0.

    >>> a = AvoidableMisclassifications(expected_accuracy=0.9)
    >>> round(a.observe(n=100, wrong=25), 6)
    15.0
    """

    def __init__(self, expected_accuracy: float | None = None, allow_reduction: bool = False,
                 expected_window: int = 10) -> None:
        if expected_accuracy is not None:
            check_number("expected_accuracy", expected_accuracy, 0, 1, hint="or None: estimated")
        check_int("expected_window", expected_window, 1, hint="(fires)")
        self.expected_accuracy = expected_accuracy
        self.allow_reduction = bool(allow_reduction)
        self.expected_window = int(expected_window)
        self.history: list[float] = []
        self.first_after_fire = True

    def expected(self) -> float | None:
        if self.expected_accuracy is not None:
            return self.expected_accuracy
        return float(np.mean(self.history)) if self.history else None

    def observe(self, n: int, wrong: int) -> float:
        """New avoidable misclassifications of a window of ``n`` samples with ``wrong`` misclassified."""
        if self.first_after_fire and n:
            self.history = (self.history + [1.0 - wrong / n])[-self.expected_window :]
        self.first_after_fire = False
        expected = self.expected()
        if expected is None:
            return 0.0
        avoidable = wrong - (1.0 - expected) * n
        return float(avoidable if self.allow_reduction else max(avoidable, 0.0))

    def on_fire(self) -> None:
        self.first_after_fire = True

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "first_after_fire": self.first_after_fire}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.first_after_fire = list(state["history"]), bool(state["first_after_fire"])


def evaluate_window(context: Any, keys: np.ndarray) -> tuple[int, int]:
    """``(n, misclassified)`` of the current model on ``keys`` through ``context.predict``."""
    predicted, true = context.predict(keys)
    predicted, true = np.asarray(predicted), np.asarray(true)
    return len(true), int(np.sum(predicted != true))


class PerformanceTrigger(BatchedTrigger):
    """Fire when the current model's accuracy on the latest detection interval is too low.

    At every detection point the interval's samples are predicted (``context.predict``) and the accuracy goes
    to every accuracy policy (direction ``"lower"``); with ``avoidable_misclassifications`` the avoidable
    misclassifications (:class:`AvoidableMisclassifications`) are also summed since the last fire and compared to
    that threshold. The trigger fires when any criterion fires.

    Parameters
    ----------
    detection_interval, detection_interval_seconds
        How often to evaluate (samples or seconds of sample time; exactly one).
    policies
        A decision policy on accuracy, or ``name → policy`` (e.g. ``StaticThreshold(0.8, direction="lower")``).
    avoidable_misclassifications
        Fire when the avoidable misclassifications since the last fire reach this number (None: off).
    expected_accuracy, allow_reduction, expected_window
        See :class:`AvoidableMisclassifications`.
    warmup_intervals, warmup_trigger
        See :class:`~lightning_modyn.triggers.warmup.BatchedTrigger`.

    Examples
    --------
    >>> correct = np.r_[np.ones(100, bool), np.arange(100) % 2 == 0]   # accuracy 1.0, then 0.5
    >>> class Context:
    ...     has_model = True
    ...     def predict(self, keys):
    ...         return np.where(correct[keys], 1, 0), np.ones(len(keys), int)
    >>> from lightning_modyn.triggers.decision import StaticThreshold
    >>> t = PerformanceTrigger(detection_interval=20, policies=StaticThreshold(0.8, direction="lower"))
    >>> t.setup(Context())
    >>> keys = np.arange(200)
    >>> t.inform(keys, keys, np.ones(200)).tolist()
    [119, 139, 159, 179, 199]

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (PerformanceTrigger:
    static, dynamic quantile and rolling-average accuracy thresholds; number of avoidable misclassifications).
    """

    def __init__(self, detection_interval: int | None = None,
                 policies: DecisionPolicy | dict[str, DecisionPolicy] | None = None,
                 avoidable_misclassifications: float | None = None, expected_accuracy: float | None = None,
                 allow_reduction: bool = False, expected_window: int = 10,
                 detection_interval_seconds: int | None = None, warmup_intervals: int = 0,
                 warmup_trigger: Trigger | None = None) -> None:
        super().__init__(detection_interval, detection_interval_seconds, warmup_intervals, warmup_trigger)
        if isinstance(policies, DecisionPolicy):
            policies = {"accuracy": policies}
        self.policies: dict[str, DecisionPolicy] = dict(policies or {})
        _check_policies(list(self.policies.values()), "policies")
        for name, policy in self.policies.items():
            if policy.direction != "lower":
                raise ValueError(f"policies[{name!r}] judges accuracy, where lower is worse: give it "
                                 f"direction='lower' (valid: 'higher', 'lower'), got {policy.direction!r}")
        if not self.policies and avoidable_misclassifications is None:
            raise ValueError("give policies (decision policies on accuracy) and/or avoidable_misclassifications "
                             "(a threshold); got neither")
        if avoidable_misclassifications is not None and avoidable_misclassifications <= 0:
            raise ValueError(f"avoidable_misclassifications must be None or > 0, got {avoidable_misclassifications!r}")
        self.avoidable_misclassifications = avoidable_misclassifications
        self.estimator = AvoidableMisclassifications(expected_accuracy, allow_reduction, expected_window)
        self._cumulated = 0.0

    def _evaluate(self, position: int, calibrate: bool) -> tuple[bool, dict[str, Any]]:
        n, wrong = evaluate_window(self.context, self.interval()[0])
        accuracy = 1.0 - wrong / n if n else 1.0
        avoidable = self.estimator.observe(n, wrong)
        info: dict[str, Any] = {"accuracy": accuracy, "avoidable": avoidable}
        if calibrate:
            for policy in self.policies.values():
                policy.calibrate(accuracy)
            return False, info
        decisions = {name: bool(policy.decide(accuracy)) for name, policy in self.policies.items()}
        if self.avoidable_misclassifications is not None:
            self._cumulated += avoidable
            info["cumulated_avoidable"] = self._cumulated
            decisions["avoidable_misclassifications"] = self._cumulated >= self.avoidable_misclassifications
        return any(decisions.values()), {**info, "decisions": decisions}

    def _on_fire(self, position: int) -> None:
        self._cumulated = 0.0
        self.estimator.on_fire()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cumulated": self._cumulated, "estimator": self.estimator.state_dict(),
                "policies": {name: policy.state_dict() for name, policy in self.policies.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._cumulated = float(state["cumulated"])
        self.estimator.load_state_dict(state["estimator"])
        for name, policy in self.policies.items():
            policy.load_state_dict(state["policies"][name])
