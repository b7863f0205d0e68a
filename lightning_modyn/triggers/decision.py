"""Decision policies: turn a series of measurements (a drift distance, an accuracy) into fire / don't fire.

Every policy knows which way is worse — ``direction="higher"`` for distances, ``"lower"`` for accuracies and
p-values. :meth:`DecisionPolicy.calibrate` records a value seen during warm-up without deciding;
:meth:`DecisionPolicy.decide` decides on a value and then records it. Dynamic policies judge a value against the
last ``window_size`` recorded values, so warm-up values are what they start from.

Examples
--------
>>> StaticThreshold(0.8, direction="lower").decide(0.75)       # accuracy at or below 0.8 fires
True
>>> p = DynamicQuantileThreshold(quantile=0.1, window_size=10)  # distances: fire on the top 10 %
>>> for v in [0.1, 0.2, 0.1, 0.15, 0.12]:
...     p.calibrate(v)
>>> p.decide(0.13), p.decide(0.9)
(False, True)
>>> r = DynamicRollingAverageThreshold(deviation=0.1, absolute=True, direction="lower")
>>> r.calibrate(0.9); r.calibrate(0.9)
>>> r.decide(0.85), r.decide(0.7)
(False, True)
>>> aggregation("at_least", 2)([True, False, True])
True

References
----------
Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (threshold, dynamic
quantile and rolling-average decision criteria; majority and at-least-n aggregation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lightning_modyn._checks import check_choice, check_int, check_number, resolve_callable

DIRECTIONS = ("higher", "lower")
AGGREGATIONS = ("majority", "at_least")


class DecisionPolicy(ABC):
    """Base class: ``direction`` says which way is worse (``"higher"``: a distance, ``"lower"``: an accuracy)."""

    def __init__(self, direction: str = "higher", window_size: int = 10) -> None:
        self.direction = check_choice("direction", direction, DIRECTIONS)
        self.window_size = check_int("window_size", window_size, 1, hint="(observations)")
        self.observations: list[float] = []

    def calibrate(self, value: float) -> None:
        """Record a value without deciding (warm-up)."""
        self.observations = (self.observations + [float(value)])[-self.window_size :]

    def decide(self, value: float) -> bool:
        """Decide on ``value`` against the values recorded so far, then record it."""
        fire = self._decide(float(value))
        self.calibrate(value)
        return fire

    @abstractmethod
    def _decide(self, value: float) -> bool: ...

    def state_dict(self) -> dict[str, Any]:
        return {"observations": list(self.observations)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.observations = [float(v) for v in state["observations"]]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "observations")
        return f"{type(self).__name__}({args})"


class StaticThreshold(DecisionPolicy):
    """Fire when a value reaches ``threshold`` in the worse direction (``>=`` for ``"higher"``, ``<=`` for
    ``"lower"``). Needs no calibration.

    Parameters
    ----------
    threshold
        The boundary value.
    direction
        ``"higher"`` (values above are worse) or ``"lower"``.

    >>> StaticThreshold(0.5).decide(0.5), StaticThreshold(0.5).decide(0.4)
    (True, False)
    """

    def __init__(self, threshold: float, direction: str = "higher") -> None:
        super().__init__(direction, window_size=1)
        self.threshold = float(threshold)

    def _decide(self, value: float) -> bool:
        return value >= self.threshold if self.direction == "higher" else value <= self.threshold


class DynamicQuantileThreshold(DecisionPolicy):
    """Fire when a value is more extreme than the ``quantile`` most extreme of the last ``window_size`` values:
    above their ``1 - quantile`` quantile (``"higher"``) or below their ``quantile`` quantile (``"lower"``),
    linearly interpolated. Without any recorded value it does not fire.

    Parameters
    ----------
    quantile
        Share of the most extreme values that fire, in (0, 1); 0.05 fires on the top 5 %.
    window_size
        How many past values form the reference series.
    direction
        ``"higher"`` or ``"lower"``.

    >>> p = DynamicQuantileThreshold(quantile=0.5, window_size=3)
    >>> p.decide(1.0), p.decide(2.0), p.decide(1.2)
    (False, True, False)
    """

    def __init__(self, quantile: float = 0.05, window_size: int = 10, direction: str = "higher") -> None:
        super().__init__(direction, window_size)
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        self.quantile = float(quantile)

    def _decide(self, value: float) -> bool:
        if not self.observations:
            return False
        q = 1.0 - self.quantile if self.direction == "higher" else self.quantile
        threshold = float(np.quantile(self.observations, q))
        return value > threshold if self.direction == "higher" else value < threshold


class DynamicRollingAverageThreshold(DecisionPolicy):
    """Fire when a value deviates from the mean of the last ``window_size`` values by at least ``deviation`` in
    the worse direction — an absolute amount, or a share of ``|mean|`` when ``absolute`` is False. Without any
    recorded value it does not fire.

    Parameters
    ----------
    deviation
        Required deviation (>= 0).
    absolute
        Whether ``deviation`` is an absolute amount (True) or relative to the rolling mean (False).
    window_size
        How many past values form the rolling mean.
    direction
        ``"higher"`` or ``"lower"``.

    >>> p = DynamicRollingAverageThreshold(deviation=0.5, window_size=2)    # 50 % above the mean fires
    >>> p.decide(1.0), p.decide(1.4), p.decide(2.0)
    (False, False, True)
    """

    def __init__(self, deviation: float = 0.05, absolute: bool = False, window_size: int = 10,
                 direction: str = "higher") -> None:
        super().__init__(direction, window_size)
        check_number("deviation", deviation, 0)
        self.deviation = float(deviation)
        self.absolute = bool(absolute)

    def _decide(self, value: float) -> bool:
        if not self.observations:
            return False
        mean = float(np.mean(self.observations))
        delta = value - mean if self.direction == "higher" else mean - value
        return delta >= (self.deviation if self.absolute else self.deviation * abs(mean))


def aggregation(how: str | Callable[[list[bool]], bool], n: int | None = None) -> Callable[[list[bool]], bool]:
    """Combine several decisions into one: ``"majority"`` (more than half), ``"at_least"`` (``n`` or more) or a
    callable ``(list[bool]) -> bool``, given itself, by import path (``mymodels.any_fired``) or by class_path."""
    how = resolve_callable("aggregation", how, AGGREGATIONS)
    if callable(how):
        return how
    if how == "majority":
        return lambda decisions: sum(map(bool, decisions)) > len(decisions) / 2
    if n is None or int(n) < 1:
        raise ValueError(f"aggregation='at_least' needs n >= 1, got n={n!r}")
    return lambda decisions: sum(map(bool, decisions)) >= int(n)


def _check_policies(policies: Sequence[DecisionPolicy], name: str) -> None:
    for p in policies:
        if not isinstance(p, DecisionPolicy):
            raise ValueError(f"{name} must hold DecisionPolicy objects (StaticThreshold, DynamicQuantileThreshold, "
                             f"DynamicRollingAverageThreshold), got {p!r}")
