"""Triggers: hand-known firing positions, decision policies, warm-up, bad arguments, chunking invariance and
state round trips."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_modyn.triggers import (
    AvoidableMisclassificationCostTrigger,
    DataAmountTrigger,
    DataDriftTrigger,
    DataIncorporationLatencyCostTrigger,
    DynamicQuantileThreshold,
    DynamicRollingAverageThreshold,
    EnsembleTrigger,
    PerformanceTrigger,
    StaticThreshold,
    TimeTrigger,
    Trigger,
)
from lightning_modyn.triggers.decision import aggregation


class FakeContext:
    """Embeddings and correctness looked up by key; a linear training-time forecast."""

    def __init__(self, features=None, correct=None, has_model=True, seconds_per_sample=0.1, base_seconds=0.0):
        self.features, self.correct, self.has_model = features, correct, has_model
        self.seconds_per_sample, self.base_seconds = seconds_per_sample, base_seconds
        self.embedded: list[int] = []

    def embed(self, keys):
        self.embedded.append(len(keys))
        return self.features[keys].astype(np.float32)

    def predict(self, keys):
        true = np.zeros(len(keys), np.int64)
        return np.where(self.correct[keys], 0, 1), true

    def training_seconds_forecast(self, num_samples):
        return self.base_seconds + self.seconds_per_sample * num_samples


def run(trigger: Trigger, ts, chunks=None, context=None) -> list[int]:
    """Global firing positions of ``trigger`` fed the stream (keys = positions) in chunks of the given sizes."""
    ts = np.asarray(ts, np.int64)
    if context is not None:
        trigger.setup(context)
    sizes = [len(ts)] if chunks is None else chunks
    out, start = [], 0
    for size in sizes:
        keys = np.arange(start, start + size)
        out += (trigger.inform(keys, ts[start:start + size], np.zeros(size, np.int64)) + start).tolist()
        start += size
    assert start == len(ts)
    return out


def shifted_features(n=600, switch=300, shift=3.0, d=2, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.normal(0, 1, (n, d))
    f[switch:] += shift
    return f


# ------------------------------------------------------------------------------------------------- simple
def test_time_trigger_fires_before_each_boundary():
    assert run(TimeTrigger(every=10), np.arange(100)) == [9, 19, 29, 39, 49, 59, 69, 79, 89]
    # a chunk ending at 9 learns of the boundary only from sample 10: position -1 of the next chunk
    t = TimeTrigger(every=10)
    assert t.inform(np.arange(10), np.arange(10), np.zeros(10)).tolist() == []
    assert t.inform(np.arange(10, 12), np.arange(10, 12), np.zeros(2)).tolist() == [-1]


def test_time_trigger_gaps_start_and_duplicates():
    # boundaries 10, 20, 30: sample 35 crosses all three at once -> one fire at 1; then 40 -> fire at 3
    assert run(TimeTrigger(every=10), [0, 5, 35, 36, 40]) == [1, 3]
    # samples at exactly the boundary belong to the next period
    assert run(TimeTrigger(every=10), [0, 10, 10, 20]) == [0, 2]
    # start before the data: [100, 110) has no sample; the first sample (115) crosses 110 -> no empty fire
    assert run(TimeTrigger(every=10, start=100), [115, 118, 120, 131]) == [1, 2]
    with pytest.raises(ValueError, match="non-decreasing"):
        run(TimeTrigger(every=10), [0, 5, 3])
    t = TimeTrigger(every=10)
    t.inform(np.arange(2), np.array([0, 8]), np.zeros(2))
    with pytest.raises(ValueError, match="non-decreasing"):
        t.inform(np.arange(1), np.array([7]), np.zeros(1))


def test_data_amount_trigger():
    assert run(DataAmountTrigger(25), np.arange(100)) == [24, 49, 74, 99]
    assert run(DataAmountTrigger(25), np.arange(100), chunks=[3, 30, 0, 67]) == [24, 49, 74, 99]
    assert run(DataAmountTrigger(1), np.arange(3)) == [0, 1, 2]


# ------------------------------------------------------------------------------------------------- policies
def test_static_threshold_directions():
    assert StaticThreshold(0.5).decide(0.5) and not StaticThreshold(0.5).decide(0.49)
    low = StaticThreshold(0.8, direction="lower")
    assert low.decide(0.8) and low.decide(0.1) and not low.decide(0.9)


def test_dynamic_quantile_threshold():
    p = DynamicQuantileThreshold(quantile=0.2, window_size=5)
    assert not p.decide(100.0)  # nothing observed yet: no fire
    for v in [1.0, 2.0, 3.0, 4.0]:
        p.calibrate(v)  # window keeps the last 5: [100, 1, 2, 3, 4] -> 80 % quantile 23.2
    assert p.observations == [100.0, 1.0, 2.0, 3.0, 4.0]
    assert not p.decide(20.0) and p.decide(1000.0)
    low = DynamicQuantileThreshold(quantile=0.25, window_size=4, direction="lower")
    for v in [0.9, 0.92, 0.94, 0.96]:
        low.calibrate(v)  # 25 % quantile: 0.915
    assert not low.decide(0.92) and low.decide(0.91)


def test_dynamic_rolling_average_threshold():
    rel = DynamicRollingAverageThreshold(deviation=0.5, window_size=3)
    for v in [2.0, 2.0, 2.0]:
        rel.calibrate(v)
    assert not rel.decide(2.9) and rel.decide(4.0)  # mean 2 then (2, 2, 2.9): needs 50 % above
    ab = DynamicRollingAverageThreshold(deviation=0.1, absolute=True, direction="lower", window_size=2)
    ab.calibrate(0.9)
    ab.calibrate(0.9)
    assert not ab.decide(0.85) and ab.decide(0.7)
    ab2 = DynamicRollingAverageThreshold(deviation=0.1)
    assert not ab2.decide(5.0)  # nothing observed yet


def test_policy_state_round_trip():
    p = DynamicQuantileThreshold(quantile=0.1, window_size=3)
    for v in [1.0, 2.0, 3.0, 4.0]:
        p.calibrate(v)
    q = DynamicQuantileThreshold(quantile=0.1, window_size=3)
    q.load_state_dict(pickle.loads(pickle.dumps(p.state_dict())))
    assert q.observations == [2.0, 3.0, 4.0] and q.decide(3.9) == p.decide(3.9)


def test_aggregations():
    assert aggregation("majority")([True, True, False]) and not aggregation("majority")([True, False])
    assert aggregation("at_least", 1)([False, True]) and not aggregation("at_least", 2)([False, True])
    assert aggregation(all)([True, True])


# ------------------------------------------------------------------------------------------------- drift
def drift_trigger(**kw):
    kw.setdefault("detection_interval", 50)
    return DataDriftTrigger({"mmd": ("mmd", StaticThreshold(0.1))}, **kw)


def test_drift_fires_after_the_switch_not_before():
    ctx = FakeContext(features=shifted_features())
    # 49: first detection point, no reference yet -> fire (gives the first model); 349: the first window after
    # the switch at 300; afterwards the reference is the new distribution
    assert run(drift_trigger(), np.arange(600), context=ctx) == [49, 349]
    assert run(drift_trigger(), np.arange(600), chunks=[7, 300, 293], context=FakeContext(shifted_features())) \
        == [49, 349]
    # switch in the middle of a window: 300..349 is half new data and drifts; it becomes the (mixed) reference,
    # from which the all-new 350..399 drifts again
    assert run(drift_trigger(), np.arange(600), context=FakeContext(shifted_features(switch=325))) == [49, 349, 399]
    # several metrics, majority and at-least aggregation
    metrics = {"mmd": StaticThreshold(0.1), "ks": StaticThreshold(0.5), "w": ("wasserstein", StaticThreshold(1.0))}
    t = DataDriftTrigger(metrics, detection_interval=50, aggregation="at_least", n=3)
    assert run(t, np.arange(600), context=FakeContext(shifted_features())) == [49, 349]
    impossible = {"mmd": StaticThreshold(0.1), "never": ("ks", StaticThreshold(2.0))}
    t = DataDriftTrigger(impossible, detection_interval=50, aggregation="majority")  # 1 of 2 is no majority
    assert run(t, np.arange(600), context=FakeContext(shifted_features())) == [49]


def test_drift_without_model_uses_warmup_trigger_or_first_point():
    ctx = FakeContext(features=shifted_features(), has_model=False)
    assert run(drift_trigger(), np.arange(600), context=ctx) == [49]
    assert ctx.embedded == []  # nothing is embedded without a model
    t = drift_trigger(warmup_trigger=TimeTrigger(every=200))
    # the time trigger fires at 199 (reported at 200) and 399 (at 400): counted in the intervals 200..249, 400..449
    assert run(t, np.arange(600), context=FakeContext(shifted_features(), has_model=False)) == [249, 449]
    assert [e["phase"] for e in t.evaluations] == ["unready"] * 12


def test_drift_warmup_calibrates_dynamic_policies():
    f = shifted_features(n=1000, switch=700, shift=2.0)
    policy = DynamicQuantileThreshold(quantile=0.1, window_size=20)
    t = DataDriftTrigger({"mmd": policy}, detection_interval=50, warmup_intervals=10, overlap=True,
                         reference_size=100)
    # 49: no reference; 99..549 warm-up (no warm-up trigger: no fire); quiet until the switch at 700; the
    # reference after 749 is 650..749, half old, so 750..799 drifts from it too
    assert run(t, np.arange(1000), context=FakeContext(f)) == [49, 749, 799]
    assert [e["phase"] for e in t.evaluations][:12] == ["unready"] + ["warmup"] * 10 + ["detect"]
    assert len(policy.observations) == 19  # 10 warm-up values + 9 decided ones (window 20)
    t = DataDriftTrigger({"mmd": DynamicRollingAverageThreshold(deviation=0.1, absolute=True)},
                         detection_interval=50, warmup_intervals=5, overlap=True, reference_size=100)
    assert run(t, np.arange(1000), context=FakeContext(f)) == [49, 749]


def test_drift_windows_by_time_and_sampling():
    f = shifted_features()
    ts = np.arange(600) * 2  # one sample every 2 s
    # detection every 100 s (50 samples), windows of 100 s; boundary 100 is crossed at position 50 -> fire 49
    t = DataDriftTrigger({"mmd": StaticThreshold(0.1)}, detection_interval_seconds=100)
    assert run(t, ts, context=FakeContext(f)) == [49, 349]
    assert run(DataDriftTrigger({"mmd": StaticThreshold(0.1)}, detection_interval_seconds=100), ts,
               chunks=[50, 250, 50, 250], context=FakeContext(f)) == [49, 349]
    ctx = FakeContext(f)
    assert run(drift_trigger(sample_size=20), np.arange(600), context=ctx) == [49, 349]
    assert max(ctx.embedded) == 20
    # a reference of 200 samples is 3/4 old data after the fire at 349, then 1/2: two more fires
    assert run(drift_trigger(reference_size=200), np.arange(600), context=FakeContext(f)) == [49, 349, 399, 449]


def test_drift_embeds_reference_once_per_model():
    ctx = FakeContext(features=shifted_features())
    t = drift_trigger()
    run(t, np.arange(300), context=ctx)  # 6 points: first unready, 5 evaluations, reference embedded once
    assert len(ctx.embedded) == 5 + 1
    t.inform_new_model(1, np.arange(50), 1.0)
    t.inform(np.arange(300, 350), np.arange(300, 350), np.zeros(50))
    assert len(ctx.embedded) == 6 + 2


# ------------------------------------------------------------------------------------------------- performance
def drop_at(n=300, drop=150, before=1.0, after=0.5, seed=0):
    rng = np.random.default_rng(seed)
    p = np.where(np.arange(n) < drop, before, after)
    return rng.random(n) < p


def test_performance_static_threshold_fires_at_drop():
    correct = np.ones(300, bool)
    correct[150:] = np.arange(150) % 2 == 0  # accuracy 1 then 0.5
    t = PerformanceTrigger(detection_interval=30, policies=StaticThreshold(0.8, direction="lower"))
    assert run(t, np.arange(300), context=FakeContext(correct=correct)) == [179, 209, 239, 269, 299]
    # drop in the middle of an interval: 150..179 -> 20 of 30 right (0.67) -> fire at 179
    correct = np.ones(300, bool)
    correct[160:] = False
    t = PerformanceTrigger(detection_interval=30, policies={"acc": StaticThreshold(0.8, direction="lower")})
    assert run(t, np.arange(300), context=FakeContext(correct=correct))[0] == 179


def test_performance_dynamic_policies_with_warmup():
    correct = drop_at(n=600, drop=400, before=0.9, after=0.4)
    for policy in (DynamicQuantileThreshold(quantile=0.05, window_size=10, direction="lower"),
                   DynamicRollingAverageThreshold(deviation=0.2, direction="lower")):
        t = PerformanceTrigger(detection_interval=50, policies=policy, warmup_intervals=4,
                               warmup_trigger=DataAmountTrigger(1000))
        assert run(t, np.arange(600), context=FakeContext(correct=correct))[0] == 449
        assert [e["phase"] for e in t.evaluations][:5] == ["warmup"] * 4 + ["detect"]


def test_performance_avoidable_misclassifications():
    correct = np.ones(200, bool)
    correct[::5] = False  # accuracy 0.8 everywhere: 2 of every 10 wrong
    # expected 0.9: 1 avoidable per 10 samples; 20 per interval of 20 -> 2 per interval; threshold 5 -> 3 intervals
    t = PerformanceTrigger(detection_interval=20, avoidable_misclassifications=5, expected_accuracy=0.9)
    assert run(t, np.arange(200), context=FakeContext(correct=correct)) == [59, 119, 179]
    # expectation estimated from the first window after each fire: no avoidable ones when accuracy stays put
    t = PerformanceTrigger(detection_interval=20, avoidable_misclassifications=5)
    assert run(t, np.arange(200), context=FakeContext(correct=correct)) == []
    correct[100:] = np.arange(100) % 2 == 0  # accuracy 0.8 -> 0.5
    t = PerformanceTrigger(detection_interval=20, avoidable_misclassifications=5)
    # expected 0.8 (window 0..19): 100..119 has 10 - 4 = 6 avoidable -> fire. No model is retrained here, so the
    # first window after the fire (0.5) joins the expectation (0.65): 3 + 3 -> fire at 159; then 0.6: 2 + 2 < 5
    assert run(t, np.arange(200), context=FakeContext(correct=correct)) == [119, 159]


# ------------------------------------------------------------------------------------------------- cost
def test_data_incorporation_latency_cost():
    # one sample a second, forecast 0.1 s per sample; at the k-th point (10 samples each) since the last fire,
    # regret = 10k (10k - 1) / 2 and forecast k: factor 0.1 -> 0.5 k (10k - 1) >= k  <=> k >= 1: every point
    t = DataIncorporationLatencyCostTrigger(conversion_factor=0.1, detection_interval=10)
    assert run(t, np.arange(50), context=FakeContext()) == [9, 19, 29, 39, 49]
    # factor 0.01: 0.05 k (10k - 1) >= k  <=> 10k - 1 >= 20  <=> k >= 3 -> every third point
    t = DataIncorporationLatencyCostTrigger(conversion_factor=0.01, detection_interval=10)
    assert run(t, np.arange(120), context=FakeContext()) == [29, 59, 89, 119]
    assert [e["regret"] for e in t.evaluations[:3]] == [45.0, 190.0, 435.0]
    # without a model the first point fires, then nothing (cannot forecast)
    t = DataIncorporationLatencyCostTrigger(conversion_factor=0.01, detection_interval=10)
    assert run(t, np.arange(120), context=FakeContext(has_model=False)) == [9]


def test_avoidable_misclassification_cost():
    correct = np.ones(120, bool)
    correct[::5] = False  # 2 wrong per 10
    # expected accuracy 1 -> 2 avoidable per interval of 10 s; regret 9, 39, 89, ... (see the docstring);
    # forecast 5 + 0.1·samples: after 3 intervals 8 s -> 89·0.1 = 8.9 >= 8
    t = AvoidableMisclassificationCostTrigger(0.1, detection_interval=10, expected_accuracy=1.0)
    assert run(t, np.arange(120), context=FakeContext(correct=correct, base_seconds=5.0)) == [29, 59, 89, 119]
    assert [e["regret"] for e in t.evaluations[:3]] == [9.0, 39.0, 89.0]
    # all correct: no regret, never fires
    t = AvoidableMisclassificationCostTrigger(0.1, detection_interval=10, expected_accuracy=1.0)
    assert run(t, np.arange(120), context=FakeContext(correct=np.ones(120, bool))) == []


# ------------------------------------------------------------------------------------------------- ensemble
def test_ensemble_aggregations():
    subs = lambda: {"a": DataAmountTrigger(10), "b": DataAmountTrigger(20), "c": DataAmountTrigger(30)}  # noqa: E731
    ts = np.arange(60)
    # per interval of 10 (ending 9, 19, ..., 59): a always; b at 19, 39, 59; c at 29, 59
    assert run(EnsembleTrigger(subs(), 10, "majority"), ts) == [19, 29, 39, 59]
    assert run(EnsembleTrigger(subs(), 10, "at_least", n=3), ts) == [59]
    assert run(EnsembleTrigger(subs(), 10, "at_least", n=1), ts) == [9, 19, 29, 39, 49, 59]
    custom = lambda d: d[2] and not d[1]  # noqa: E731
    assert run(EnsembleTrigger(subs(), 10, custom), ts) == [29]
    assert run(EnsembleTrigger(list(subs().values()), 20, "majority"), ts) == [19, 39, 59]


def test_ensemble_with_model_aware_member():
    ctx = FakeContext(features=shifted_features(), correct=np.ones(600, bool))
    e = EnsembleTrigger({"drift": drift_trigger(), "time": TimeTrigger(every=100)}, detection_interval=50,
                        aggregation="at_least", n=2)
    # drift fires at 49 and 349; the time trigger fires at 99, 199, ..., each reported by the next sample, so
    # counted in the intervals ending 149, 249, 349, ...: both agree only on 300..349
    assert run(e, np.arange(600), context=ctx) == [349]
    e = EnsembleTrigger({"drift": drift_trigger(), "time": TimeTrigger(every=100)}, detection_interval=50,
                        aggregation="at_least", n=1)
    assert run(e, np.arange(600), context=FakeContext(shifted_features())) == [49, 149, 249, 349, 449, 549]


# ------------------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("make, match", [
    (lambda: TimeTrigger(every=0), r"every must be an integer >= 1 \(seconds\), got 0"),
    (lambda: TimeTrigger(every="1d"), r"every must be an integer >= 1 \(seconds\), got '1d'"),
    (lambda: TimeTrigger(every=5, start=1.5), "start must be None"),
    (lambda: DataAmountTrigger(0), "num_samples must be an integer >= 1, got 0"),
    (lambda: StaticThreshold(1.0, direction="up"), r"direction must be one of \('higher', 'lower'\)"),
    (lambda: DynamicQuantileThreshold(quantile=1.5), r"quantile must be in \(0, 1\)"),
    (lambda: DynamicQuantileThreshold(window_size=0), r"window_size must be an integer >= 1 \(observations\), got 0"),
    (lambda: DynamicRollingAverageThreshold(deviation=-1), "deviation must be a finite number >= 0, got -1"),
    (lambda: drift_trigger(detection_interval=None), "exactly one of detection_interval"),
    (lambda: drift_trigger(detection_interval_seconds=10), "exactly one of detection_interval"),
    (lambda: drift_trigger(detection_interval=0), "detection_interval must be an integer >= 1, got 0"),
    (lambda: drift_trigger(warmup_intervals=-1), "warmup_intervals must be an integer >= 0"),
    (lambda: drift_trigger(warmup_trigger="time"), "warmup_trigger must be None or a Trigger"),
    (lambda: drift_trigger(aggregation="any"), r"aggregation must be a callable or one of \('majority', 'at_least'\)"),
    (lambda: drift_trigger(aggregation="at_least"), "needs n >= 1"),
    (lambda: drift_trigger(window_size=10, window_seconds=10), "at most one of window_size or window_seconds"),
    (lambda: drift_trigger(reference_size=0), "reference_size / reference_seconds must be positive"),
    (lambda: drift_trigger(sample_size=1), "sample_size must be None"),
    (lambda: DataDriftTrigger({}, detection_interval=5), "metrics must be a non-empty dict"),
    (lambda: DataDriftTrigger({"energy": StaticThreshold(1)}, detection_interval=5), "metric must be a callable or"),
    (lambda: DataDriftTrigger({"mmd": ("mmd", 0.5)}, detection_interval=5), "must hold DecisionPolicy objects"),
    (lambda: DataDriftTrigger({"mmd": 0.5}, detection_interval=5), r"pair \(metric, DecisionPolicy\)"),
    (lambda: PerformanceTrigger(detection_interval=5), "give policies .* and/or avoidable_misclassifications"),
    (lambda: PerformanceTrigger(detection_interval=5, policies=StaticThreshold(0.9)), "direction='lower'"),
    (lambda: PerformanceTrigger(detection_interval=5, avoidable_misclassifications=0), "must be None or > 0"),
    (lambda: PerformanceTrigger(detection_interval=5, avoidable_misclassifications=3, expected_accuracy=2),
     r"expected_accuracy must be a number in \[0, 1\] \(or None: estimated\)"),
    (lambda: DataIncorporationLatencyCostTrigger(0, detection_interval=5), "conversion_factor must be a finite number > 0 \\(training seconds per unit of regret\\), got 0"),
    (lambda: AvoidableMisclassificationCostTrigger(-1, detection_interval=5), "conversion_factor must be a finite number > 0"),
    (lambda: EnsembleTrigger({}, 5), "triggers must be a non-empty"),
    (lambda: EnsembleTrigger([DataAmountTrigger(2)], 0), "detection_interval must be an integer >= 1, got 0"),
    (lambda: EnsembleTrigger([DataAmountTrigger(2)], 5, "vote"), "aggregation must be a callable or one of"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_model_aware_trigger_needs_setup():
    with pytest.raises(RuntimeError, match="call setup"):
        drift_trigger(detection_interval=2).inform(np.arange(4), np.arange(4), np.zeros(4))


# ------------------------------------------------------------------------------------------------- properties
N = 240
FEATURES = shifted_features(n=N, switch=120, shift=2.0, d=3, seed=5)
CORRECT = drop_at(n=N, drop=130, before=0.95, after=0.5, seed=6)

FACTORIES: dict[str, Callable[[], Trigger]] = {
    "time": lambda: TimeTrigger(every=17),
    "time_start": lambda: TimeTrigger(every=9, start=-20),
    "amount": lambda: DataAmountTrigger(13),
    "drift": lambda: DataDriftTrigger({"mmd": StaticThreshold(0.05), "ks": StaticThreshold(0.3)},
                                      detection_interval=20, aggregation="at_least", n=1, sample_size=15),
    "drift_time": lambda: DataDriftTrigger(
        {"w": ("wasserstein", DynamicQuantileThreshold(0.2, window_size=5))}, detection_interval_seconds=30,
        window_seconds=40, reference_size=25, overlap=True, warmup_intervals=3, warmup_trigger=TimeTrigger(every=45)),
    "performance": lambda: PerformanceTrigger(
        detection_interval=15, policies={"s": StaticThreshold(0.7, "lower"),
                                         "r": DynamicRollingAverageThreshold(0.1, direction="lower")},
        avoidable_misclassifications=4, warmup_intervals=2, warmup_trigger=DataAmountTrigger(40)),
    "latency_cost": lambda: DataIncorporationLatencyCostTrigger(0.002, detection_interval_seconds=25),
    "misclassification_cost": lambda: AvoidableMisclassificationCostTrigger(0.05, detection_interval=12),
    "ensemble": lambda: EnsembleTrigger(
        {"t": TimeTrigger(every=31), "a": DataAmountTrigger(29),
         "d": DataDriftTrigger({"mmd": StaticThreshold(0.05)}, detection_interval=16)}, 10, "at_least", n=1),
}


def stream_timestamps(seed: int) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).integers(0, 5, N))  # gaps and equal timestamps


def context() -> FakeContext:
    return FakeContext(features=FEATURES, correct=CORRECT)


def cuts_to_chunks(cuts: list[int]) -> list[int]:
    points = [0, *sorted(cuts), N]
    return [b - a for a, b in zip(points, points[1:])]


PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(FACTORIES))
@PROPERTY
@given(cuts=st.lists(st.integers(0, N), max_size=12), seed=st.integers(0, 3))
def test_chunking_does_not_change_firing_positions(name, cuts, seed):
    ts = stream_timestamps(seed)
    whole = run(FACTORIES[name](), ts, context=context())
    assert run(FACTORIES[name](), ts, chunks=cuts_to_chunks(cuts), context=context()) == whole


def test_property_streams_do_fire():
    """The property test would be vacuous if nothing fired: every trigger fires on the seed-0 stream."""
    ts = stream_timestamps(0)
    for name, make in FACTORIES.items():
        assert run(make(), ts, context=context()), name


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("split", [1, 77, 150])
def test_state_round_trip_continues_identically(name, split):
    ts = stream_timestamps(1)
    whole = run(FACTORIES[name](), ts, context=context())
    first = FACTORIES[name]()
    first.setup(context())
    head = run(first, ts[:split])
    state = pickle.loads(pickle.dumps(first.state_dict()))
    first.inform(np.arange(split, N), ts[split:], np.zeros(N - split))  # the saved state must not alias this
    resumed = FACTORIES[name]()
    resumed.setup(context())
    resumed.load_state_dict(state)
    tail = resumed.inform(np.arange(split, N), ts[split:], np.zeros(N - split)) + split
    assert head + tail.tolist() == whole


def test_a_time_warmup_fire_known_only_after_an_interval_end_counts_at_the_next_detection_point():
    from lightning_modyn.triggers.warmup import BatchedTrigger

    class NeverDecides(BatchedTrigger):
        def _evaluate(self, position, calibrate):
            return False, {}

    class Context:
        has_model = True

    keys = np.arange(40)
    alone = TimeTrigger(every=10)
    alone.setup(Context())
    assert alone.inform(keys, keys, np.zeros(40)).tolist() == [9, 19, 29]
    batched = NeverDecides(detection_interval=10, warmup_intervals=100, warmup_trigger=TimeTrigger(every=10))
    batched.setup(Context())
    # the fire at 9 is reported when sample 10 arrives, in the interval 10..19: it counts at that interval's end
    assert batched.inform(keys, keys, np.zeros(40)).tolist() == [19, 29, 39]
    # every 15: the boundary at 15 lies inside the interval 10..19 and counts at its end; the one at 30 opens an
    # interval, so the fire at 29 counts at 39
    inside = NeverDecides(detection_interval=10, warmup_intervals=100, warmup_trigger=TimeTrigger(every=15))
    inside.setup(Context())
    assert inside.inform(keys, keys, np.zeros(40)).tolist() == [19, 39]
