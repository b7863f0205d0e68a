"""Presampling policies: determinism, cycles, freshness ratios, water filling, warm-up, argument checks, state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lightning_modyn.selection.pool import water_fill
from lightning_modyn.selection.balanced import LabelBalanced, TriggerBalanced
from lightning_modyn.selection.base import TriggerHistory
from lightning_modyn.selection.freshness import Freshness
from lightning_modyn.selection.random_policies import Random, RandomNoReplacement
from lightning_modyn.store.catalog import NO_LABEL


class FakeStore:
    """Labels from a dict (default ``key % 3``), some keys deleted."""

    def __init__(self, labels: dict[int, int] | None = None, deleted=()):
        self.labels = labels or {}
        self.deleted = set(deleted)

    def contains(self, keys):
        return np.array([int(k) not in self.deleted for k in keys], bool)

    def lookup(self, keys):
        labels = np.array([self.labels.get(int(k), int(k) % 3) for k in keys], np.int64)
        return type("Slice", (), {"keys": keys, "labels": labels, "timestamps": np.zeros(len(keys), np.int64)})()


def history(*sizes: int) -> TriggerHistory:
    bounds = np.cumsum((0,) + sizes)
    return TriggerHistory([np.arange(lo, hi, dtype=np.int64) for lo, hi in zip(bounds[:-1], bounds[1:])])


def grow(policy, sizes, store=None):
    """Run ``policy`` trigger by trigger over intervals of ``sizes``; the selections."""
    h, out, start = TriggerHistory(), [], 0
    for n in sizes:
        h.intervals.append(np.arange(start, start + n, dtype=np.int64))
        start += n
        keys, weights = policy.select(h, store)
        assert keys.dtype == np.int64 and weights.dtype == np.float32 and len(keys) == len(weights)
        assert len(np.unique(keys)) == len(keys)
        out.append(keys.tolist())
    return out


ALL = [
    lambda seed: Random(num_samples=5, seed=seed),
    lambda seed: Random(fraction=0.3, seed=seed),
    lambda seed: RandomNoReplacement(num_samples=5, seed=seed),
    lambda seed: Freshness(num_samples=6, unused_fraction=0.5, seed=seed),
    lambda seed: LabelBalanced(num_samples=7, seed=seed),
    lambda seed: TriggerBalanced(num_samples=7, seed=seed),
]


@pytest.mark.parametrize("make", ALL)
def test_deterministic_by_seed(make):
    sizes, store = [10, 7, 12, 3], FakeStore()
    assert grow(make(0), sizes, store) == grow(make(0), sizes, store)
    assert any(grow(make(s), sizes, store) != grow(make(0), sizes, store) for s in (1, 2, 3))


@pytest.mark.parametrize("make", ALL)
def test_warmup_returns_new_data(make):
    policy = make(0)
    policy.__init__(**{**_init_args(policy), "warmup_triggers": 2})
    sel = grow(policy, [10, 7, 12], FakeStore(deleted={11}))
    assert sel[0] == list(range(10)) and sel[1] == [10, 12, 13, 14, 15, 16]
    assert len(sel[2]) < 29


def _init_args(policy):
    names = policy.__init__.__code__.co_varnames[1:policy.__init__.__code__.co_argcount]
    return {n: getattr(policy, n) for n in names if hasattr(policy, n)}


def test_deleted_keys_never_selected():
    store = FakeStore(deleted=set(range(0, 30, 2)))
    for make in ALL:
        for keys in grow(make(0), [10, 10, 10], store):
            assert all(k % 2 for k in keys)


# ------------------------------------------------------------------------------------------------------ random
def test_random_draws_from_all_seen_and_fraction_size():
    h = history(10, 10)
    assert len(Random(num_samples=50).select(h, None)[0]) == 20
    assert len(Random(fraction=0.25).select(h, None)[0]) == 5
    assert len(Random(fraction=1.0).select(h, None)[0]) == 20
    assert len(Random(fraction=0.01).select(h, None)[0]) == 1
    seen = set().union(*map(set, grow(Random(num_samples=4, seed=3), [10] * 8)))
    assert min(seen) < 10  # old data keeps being drawn


@pytest.mark.parametrize("num_samples", [5, 3])
def test_random_no_replacement_covers_each_key_once_per_cycle(num_samples):
    policy = RandomNoReplacement(num_samples=num_samples, seed=5)
    h = history(10)
    counts = np.zeros(10, int)
    picks = []
    for t in range(12):
        if t:
            h.intervals.append(np.zeros(0, np.int64))
        keys = policy.select(h, None)[0]
        assert len(keys) == num_samples
        picks.append(keys.tolist())
        counts[keys] += 1
        # every key is used once per cycle before any repeats: use counts never differ by more than one
        assert counts.max() - counts.min() <= 1
    if num_samples == 5:  # cycles align with triggers: each pair of triggers covers all ten keys
        for c in range(6):
            assert sorted(picks[2 * c] + picks[2 * c + 1]) == list(range(10))
    assert policy.state_dict()["cycle"] == (12 * num_samples - 1) // 10


def test_random_no_replacement_new_data_joins_cycle():
    sel = grow(RandomNoReplacement(num_samples=4, seed=0), [4, 4, 4])
    assert [sorted(s) for s in sel] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_random_no_replacement_retry_is_idempotent_and_state_round_trip():
    policy = RandomNoReplacement(num_samples=3, seed=1)
    h = history(10)
    first = policy.select(h, None)[0].tolist()
    assert policy.select(h, None)[0].tolist() == first  # a retried fit gets the same keys
    state = json.loads(json.dumps(policy.state_dict()))
    clone = RandomNoReplacement(num_samples=3, seed=1)
    clone.load_state_dict(state)
    for _ in range(5):
        h.intervals.append(np.zeros(0, np.int64))
        assert clone.select(h, None)[0].tolist() == policy.select(h, None)[0].tolist()
    assert clone.state_dict() == policy.state_dict()


# --------------------------------------------------------------------------------------------------- freshness
@pytest.mark.parametrize("fraction,expect", [(0.5, (4, 4)), (0.25, (2, 6)), (1.0, (8, 0)), (0.0, (0, 8))])
def test_freshness_ratio_exact(fraction, expect):
    policy = Freshness(num_samples=8, unused_fraction=fraction, seed=0)
    h = history(20)
    used = set(policy.select(h, None)[0].tolist())
    assert len(used) == 8
    h.intervals.append(np.arange(20, 40))
    keys = policy.select(h, None)[0].tolist()
    n_unused = sum(k not in used for k in keys)
    assert (n_unused, len(keys) - n_unused) == expect


def test_freshness_fills_shortfall_and_never_reuses_while_fresh_enough():
    policy = Freshness(num_samples=6, unused_fraction=0.5, seed=0)
    h = history(6)
    assert policy.select(h, None)[0].tolist() == list(range(6))  # no used data yet: all fresh
    h.intervals.append(np.arange(6, 8))  # only 2 fresh: 2 fresh + 4 used
    keys = policy.select(h, None)[0].tolist()
    assert {6, 7} <= set(keys) and len(keys) == 6
    state = json.loads(json.dumps(policy.state_dict()))
    clone = Freshness(num_samples=6, unused_fraction=0.5, seed=0)
    clone.load_state_dict(state)
    h.intervals.append(np.arange(8, 20))
    assert clone.select(h, None)[0].tolist() == policy.select(h, None)[0].tolist()


# ----------------------------------------------------------------------------------------------- water filling
@pytest.mark.parametrize("sizes,budget,expect", [
    ([2, 10, 10], 12, [2, 5, 5]),
    ([1, 2, 100], 30, [1, 2, 27]),
    ([4, 4, 4], 100, [4, 4, 4]),
    ([5, 5, 5], 7, [3, 2, 2]),
    ([0, 6, 6], 6, [0, 3, 3]),
    ([3, 7, 8, 20], 20, [3, 6, 6, 5]),  # 3 + 5 + 5 + 5, the 2 left go to the first open groups
])
def test_water_fill(sizes, budget, expect):
    counts = water_fill(sizes, budget)
    assert counts.tolist() == expect
    assert counts.sum() == min(budget, sum(sizes))


def test_water_fill_force_options():
    assert water_fill([2, 10, 10], 12, force_size=False).tolist() == [2, 4, 4]
    assert water_fill([2, 10, 10], 12, force_balance=True).tolist() == [2, 2, 2]
    assert water_fill([20, 10, 10], 12, force_balance=True).tolist() == [4, 4, 4]
    assert water_fill([2, 10, 10], 12, force_balance=True, force_size=False).tolist() == [2, 2, 2]


def test_label_balanced_counts():
    labels = {k: (0 if k < 2 else 1 if k < 12 else 2) for k in range(22)}
    store = FakeStore(labels)
    h = history(22)
    for kwargs, expect in [({}, [2, 5, 5]), ({"force_size": False}, [2, 4, 4]), ({"force_balance": True}, [2, 2, 2])]:
        keys = LabelBalanced(num_samples=12, **kwargs).select(h, store)[0]
        assert np.bincount(store.lookup(keys).labels).tolist() == expect


def test_label_balanced_tail_triggers():
    store = FakeStore({k: k % 2 for k in range(30)})
    h = history(10, 10, 10)
    keys = LabelBalanced(num_samples=100, tail_triggers=0).select(h, store)[0]
    assert keys.tolist() == list(range(20, 30))
    keys = LabelBalanced(num_samples=4, tail_triggers=1).select(h, store)[0]
    assert keys.min() >= 10 and np.bincount(store.lookup(keys).labels).tolist() == [2, 2]


def test_label_balanced_missing_label():
    store = FakeStore({7: NO_LABEL})
    with pytest.raises(ValueError, match="key 7"):
        LabelBalanced(num_samples=3).select(history(10), store)


def test_trigger_balanced_counts():
    h = history(2, 10, 10)
    keys = TriggerBalanced(num_samples=12).select(h, None)[0]
    per = [int(((keys >= lo) & (keys < hi)).sum()) for lo, hi in [(0, 2), (2, 12), (12, 22)]]
    assert per == [2, 5, 5]
    keys = TriggerBalanced(num_samples=12, force_balance=True).select(h, None)[0]
    assert len(keys) == 6
    h.intervals.append(np.zeros(0, np.int64))  # an empty interval takes no share
    assert len(TriggerBalanced(num_samples=12, force_balance=True).select(h, None)[0]) == 6


# ------------------------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("make,name", [
    (lambda: Random(), "num_samples"),
    (lambda: Random(num_samples=3, fraction=0.5), "fraction"),
    (lambda: Random(num_samples=0), "num_samples"),
    (lambda: Random(num_samples=2.5), "num_samples"),
    (lambda: Random(fraction=0.0), "fraction"),
    (lambda: Random(fraction=1.5), "fraction"),
    (lambda: Random(num_samples=3, warmup_triggers=-1), "warmup_triggers"),
    (lambda: RandomNoReplacement(num_samples=-1), "num_samples"),
    (lambda: RandomNoReplacement(num_samples=True), "num_samples"),
    (lambda: Freshness(num_samples=0), "num_samples"),
    (lambda: Freshness(num_samples=3, unused_fraction=1.2), "unused_fraction"),
    (lambda: Freshness(num_samples=3, unused_fraction=-0.1), "unused_fraction"),
    (lambda: LabelBalanced(num_samples=0), "num_samples"),
    (lambda: LabelBalanced(num_samples=3, tail_triggers=-1), "tail_triggers"),
    (lambda: LabelBalanced(num_samples=3, force_balance="yes"), "force_balance"),
    (lambda: TriggerBalanced(num_samples=3, force_size=None), "force_size"),
    (lambda: TriggerBalanced(num_samples=3, warmup_triggers=1.5), "warmup_triggers"),
])
def test_bad_arguments(make, name):
    with pytest.raises(ValueError, match=name):
        make()


# ---------------------------------------------------------------------------------------------- one base for all
def every_policy(tmp_path, warmup_triggers: int):
    import lightning_modyn.selection as selection

    args = {"LabelBalanced": {"num_samples": 4}, "TriggerBalanced": {"num_samples": 4},
            "Freshness": {"num_samples": 4}, "Random": {"num_samples": 4}, "RandomNoReplacement": {"num_samples": 4},
            "RecordedScores": {"scores_dir": str(tmp_path)}, "NewData": {"tail_triggers": 1, "limit": 3},
            "AllData": {"limit": 3}}
    policies = {name: getattr(selection, name) for name in selection.__all__
                if isinstance(getattr(selection, name), type) and issubclass(getattr(selection, name),
                                                                               selection.SelectionPolicy)
                and getattr(selection, name) is not selection.SelectionPolicy}
    assert set(policies) == set(args)  # a new policy must be added here
    return {name: cls(**args[name], warmup_triggers=warmup_triggers) for name, cls in policies.items()}


def test_every_presampling_policy_takes_warmup_triggers(tmp_path):
    store = FakeStore(deleted={12})
    for name, policy in every_policy(tmp_path, warmup_triggers=2).items():
        h = TriggerHistory()
        for trigger, (lo, hi) in enumerate([(0, 10), (10, 20), (20, 30)]):
            h.intervals.append(np.arange(lo, hi, dtype=np.int64))
            keys, weights = policy.select(h, store)
            if trigger < 2:  # warm-up: the trigger's new live data, weight 1, nothing else
                assert keys.tolist() == [k for k in range(lo, hi) if k != 12], (name, trigger)
                assert weights.tolist() == [1.0] * len(keys)
            else:  # then the policy selects (each of these caps or mixes what it takes)
                assert keys.tolist() != list(range(lo, hi)), name
        assert json.loads(json.dumps(policy.state_dict())) == policy.state_dict()  # every policy has a state


def test_a_policy_of_ones_own_needs_only_select_and_the_loop_refuses_what_is_not_a_policy(tmp_path):
    from lightning_modyn.pipeline import ContinualLoop
    from lightning_modyn.selection import SelectionPolicy

    class Newest(SelectionPolicy):
        def select(self, history, store):
            keys = history.intervals[-1][-2:]
            return keys, np.ones(len(keys), np.float32)

    policy = Newest()
    assert policy.state_dict() == {} and policy.load_state_dict({}) is None and policy.warmup_triggers == 0
    assert policy.select(history(5, 3), None)[0].tolist() == [6, 7]
    with pytest.raises(ValueError, match="warmup_triggers must be an integer >= 0, got -1"):
        Newest(warmup_triggers=-1)
    import lightning as L

    from lightning_modyn import ModynDataModule, SampleStore
    from lightning_modyn.triggers import DataAmountTrigger

    SampleStore.create(tmp_path / "s").close()
    with pytest.raises(TypeError, match="selection must be a SelectionPolicy .* got function"):
        ContinualLoop(L.LightningModule(), ModynDataModule(str(tmp_path / "s")), DataAmountTrigger(5),
                      selection=lambda h, s: h)
