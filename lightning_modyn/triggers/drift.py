"""Retrain when the data drifts: compare embeddings of a current window with those of a reference window."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lightning_modyn.triggers.base import Trigger
from lightning_modyn.triggers.decision import DecisionPolicy, _check_policies, aggregation as _aggregation
from lightning_modyn.triggers.drift_metrics import get_metric
from lightning_modyn.triggers.warmup import BatchedTrigger

Metric = str | Callable[[np.ndarray, np.ndarray], float]


class DataDriftTrigger(BatchedTrigger):
    """Fire when the embeddings of recent data drift away from those of the data of the last trigger.

    At every detection point the current window and the reference window are embedded with the current model
    (``context.embed``; windows above ``sample_size`` are subsampled, deterministically by ``seed``), every
    metric measures their distance, its decision policy decides, and the decisions are aggregated. The
    reference window is the last ``reference_size`` samples (or ``reference_seconds``) up to the last fire. The
    current window is the last ``window_size`` samples (or ``window_seconds``) since the last fire, or, with
    ``overlap=True``, the last ones whether or not they precede the last fire (a sliding window). Without a
    reference (before the first fire) or without a model the trigger is *unready*: see
    :mod:`lightning_modyn.triggers.warmup`.

    Parameters
    ----------
    metrics
        ``name → (metric, policy)``, or ``name → policy`` when ``name`` is a metric of
        :data:`~lightning_modyn.triggers.drift_metrics.METRICS`. A metric is such a name or a callable
        ``(reference (n, d), current (m, d)) -> float``.
    detection_interval, detection_interval_seconds
        How often to detect (samples or seconds of sample time; exactly one).
    window_size, window_seconds
        Current window by amount or by time (default: one detection interval).
    reference_size, reference_seconds
        Reference window by amount or by time (default: like the current window).
    overlap
        False: the current window holds only data since the last fire; True: a sliding window.
    aggregation, n
        ``"majority"`` of the metric decisions, ``"at_least"`` ``n`` of them, or a callable on the decisions.
    sample_size
        At most this many samples per window are embedded (None: all).
    seed
        Seed of the subsampling.
    warmup_intervals, warmup_trigger
        See :class:`~lightning_modyn.triggers.warmup.BatchedTrigger`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> features = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(3, 1, (300, 2))])
    >>> class Context:
    ...     has_model = True
    ...     def embed(self, keys):
    ...         return features[keys]
    >>> from lightning_modyn.triggers.decision import StaticThreshold
    >>> t = DataDriftTrigger({"mmd": StaticThreshold(0.1)}, detection_interval=50)
    >>> t.setup(Context())
    >>> keys = np.arange(600)
    >>> t.inform(keys, keys, np.zeros(600)).tolist()     # first point: no reference yet; drift at 300
    [49, 349]

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (DataDriftTrigger).
    Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.
    """

    def __init__(self, metrics: dict[str, DecisionPolicy | tuple[Metric, DecisionPolicy]],
                 detection_interval: int | None = None, detection_interval_seconds: int | None = None,
                 window_size: int | None = None, window_seconds: int | None = None,
                 reference_size: int | None = None, reference_seconds: int | None = None, overlap: bool = False,
                 aggregation: str | Callable[[list[bool]], bool] = "majority", n: int | None = None,
                 sample_size: int | None = 1000, seed: int = 0, warmup_intervals: int = 0,
                 warmup_trigger: Trigger | None = None) -> None:
        super().__init__(detection_interval, detection_interval_seconds, warmup_intervals, warmup_trigger)
        if not isinstance(metrics, dict) or not metrics:
            raise ValueError("metrics must be a non-empty dict name → (metric, DecisionPolicy) or name → "
                             f"DecisionPolicy (name a metric of drift_metrics.METRICS), got {metrics!r}")
        self.metrics: dict[str, tuple[Callable[[np.ndarray, np.ndarray], float], DecisionPolicy]] = {}
        for name, spec in metrics.items():
            if not isinstance(spec, DecisionPolicy) and (not isinstance(spec, (tuple, list)) or len(spec) != 2):
                raise ValueError(f"metrics[{name!r}] must be a DecisionPolicy or a pair (metric, DecisionPolicy), "
                                 f"got {spec!r}")
            metric, policy = (name, spec) if isinstance(spec, DecisionPolicy) else tuple(spec)
            _check_policies([policy], f"metrics[{name!r}]")
            self.metrics[name] = (get_metric(metric), policy)
        if window_size is None and window_seconds is None:
            window_size, window_seconds = detection_interval, detection_interval_seconds
        if reference_size is None and reference_seconds is None:
            reference_size, reference_seconds = window_size, window_seconds
        for label, (size, seconds) in (("window", (window_size, window_seconds)),
                                       ("reference", (reference_size, reference_seconds))):
            if size is not None and seconds is not None:
                raise ValueError(f"give at most one of {label}_size or {label}_seconds")
            if (size if size is not None else seconds) < 1:
                raise ValueError(f"{label}_size / {label}_seconds must be positive, got {size or seconds!r}")
        if sample_size is not None and sample_size < 2:
            raise ValueError(f"sample_size must be None (no limit) or >= 2, got {sample_size!r}")
        self.window = (window_size, window_seconds)
        self.reference = (reference_size, reference_seconds)
        self.overlap = bool(overlap)
        self.aggregate = _aggregation(aggregation, n)
        self.sample_size = sample_size
        self.seed = int(seed)
        self._buf_keys, self._buf_ts = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self._ref_keys, self._ref_ts = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self._last_fire = -1
        self._ref_version = 0
        self._ref_cache: np.ndarray | None = None
        self._detections = 0

    # ------------------------------------------------------------------------------------------------ windows
    @staticmethod
    def _tail(ts: np.ndarray, spec: tuple[int | None, int | None]) -> int:
        """Start index of the last ``spec`` (amount, seconds) of a window with timestamps ``ts``."""
        size, seconds = spec
        if size is not None:
            return max(0, len(ts) - size)
        return int(np.searchsorted(ts, ts[-1] - seconds, side="left")) if len(ts) else 0

    def _absorb(self, keys: np.ndarray, ts: np.ndarray, labels: np.ndarray) -> None:
        self._buf_keys = np.concatenate([self._buf_keys, keys])
        self._buf_ts = np.concatenate([self._buf_ts, ts])
        cut = min(self._tail(self._buf_ts, self.window), self._tail(self._buf_ts, self.reference))
        self._buf_keys, self._buf_ts = self._buf_keys[cut:], self._buf_ts[cut:]

    def _current(self) -> np.ndarray:
        start = self._tail(self._buf_ts, self.window)
        if not self.overlap:  # only what arrived since the last fire
            start = max(start, self._last_fire + 1 - (self._seen - len(self._buf_keys)))
        return self._buf_keys[start:]

    def _ready(self) -> bool:
        return len(self._ref_keys) >= 2 and len(self._current()) >= 2

    def _on_fire(self, position: int) -> None:
        start = self._tail(self._buf_ts, self.reference)
        self._ref_keys, self._ref_ts = self._buf_keys[start:].copy(), self._buf_ts[start:].copy()
        self._last_fire = position
        self._ref_version += 1
        self._ref_cache = None

    def inform_new_model(self, model_id: int, trained_keys: np.ndarray, train_seconds: float) -> None:
        self._ref_cache = None  # reference embeddings come from the model in use

    def _sample(self, keys: np.ndarray, salt: int) -> np.ndarray:
        if self.sample_size is None or len(keys) <= self.sample_size:
            return keys
        rng = np.random.default_rng([self.seed, salt])
        return keys[np.sort(rng.choice(len(keys), self.sample_size, replace=False))]

    # ------------------------------------------------------------------------------------------------ detect
    def _evaluate(self, position: int, calibrate: bool) -> tuple[bool, dict[str, Any]]:
        self._detections += 1
        if self._ref_cache is None:
            ref = self._sample(self._ref_keys, 2 * self._ref_version)
            self._ref_cache = np.asarray(self.context.embed(ref))
        current = np.asarray(self.context.embed(self._sample(self._current(), 2 * self._detections + 1)))
        values = {name: float(metric(self._ref_cache, current)) for name, (metric, _) in self.metrics.items()}
        if calibrate:
            for name, (_, policy) in self.metrics.items():
                policy.calibrate(values[name])
            return False, {"values": values}
        decisions = {name: bool(policy.decide(values[name])) for name, (_, policy) in self.metrics.items()}
        return bool(self.aggregate(list(decisions.values()))), {"values": values, "decisions": decisions}

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buf_keys": self._buf_keys.copy(), "buf_ts": self._buf_ts.copy(),
                "ref_keys": self._ref_keys.copy(), "ref_ts": self._ref_ts.copy(), "last_fire": self._last_fire,
                "ref_version": self._ref_version, "detections": self._detections,
                "policies": {name: policy.state_dict() for name, (_, policy) in self.metrics.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._buf_keys, self._buf_ts = np.asarray(state["buf_keys"]), np.asarray(state["buf_ts"], dtype=np.int64)
        self._ref_keys, self._ref_ts = np.asarray(state["ref_keys"]), np.asarray(state["ref_ts"], dtype=np.int64)
        self._last_fire, self._ref_version = int(state["last_fire"]), int(state["ref_version"])
        self._detections, self._ref_cache = int(state["detections"]), None
        for name, (_, policy) in self.metrics.items():
            policy.load_state_dict(state["policies"][name])
