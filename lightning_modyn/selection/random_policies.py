"""Uniform random samples of everything seen so far: with replacement across triggers, or cycling without it."""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_modyn._checks import check_int, check_fraction
from lightning_modyn.selection.pool import (
    UsageTrackingPolicy,
    UsedKeys,
    draw,
    ones,
    pool,
    rng,
)
from lightning_modyn.selection.base import SelectionPolicy, TriggerHistory


class Random(SelectionPolicy):
    """Train on a uniform random sample of all live data seen so far, drawn afresh at every trigger.

    Each trigger's draw is independent of the others (a key may be chosen by many triggers) and deterministic:
    the same ``seed`` and trigger id always give the same sample of the same pool.

    Parameters
    ----------
    num_samples
        Sample this many keys (all of them when fewer have been seen). Give exactly one of ``num_samples`` and
        ``fraction``.
    fraction
        Sample this share of the pool, in ``(0, 1]``: ``round(fraction * pool size)`` keys, at least one.
    seed
        Seed of the draw; the generator of trigger ``t`` is seeded with ``(seed, t)``.
    warmup_triggers
        The first this many triggers train on all of their new data (like ``NewData(tail_triggers=0)``)
        without sampling.

    Examples
    --------
    >>> h = TriggerHistory([np.arange(0, 5), np.arange(5, 10)])
    >>> keys, weights = Random(num_samples=4, seed=1).select(h, None)
    >>> len(keys), bool(np.isin(keys, np.arange(10)).all()), weights.tolist()
    (4, True, [1.0, 1.0, 1.0, 1.0])
    >>> Random(num_samples=4, seed=1).select(h, None)[0].tolist() == keys.tolist()
    True
    >>> len(Random(fraction=0.5).select(h, None)[0])
    5
    >>> Random(num_samples=2, warmup_triggers=2).select(h, None)[0].tolist()
    [5, 6, 7, 8, 9]

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (uniform random
    presampling).
    """

    def __init__(self, num_samples: int | None = None, fraction: float | None = None, seed: int = 0,
                 warmup_triggers: int = 0) -> None:
        if (num_samples is None) == (fraction is None):
            raise ValueError(f"give exactly one of num_samples and fraction, got num_samples={num_samples!r}, "
                             f"fraction={fraction!r}")
        self.num_samples = None if num_samples is None else check_int("num_samples", num_samples, 1)
        self.fraction = None if fraction is None else check_fraction("fraction", fraction)
        self.seed = seed
        SelectionPolicy.__init__(self, warmup_triggers)

    def _size(self, n: int) -> int:
        if self.num_samples is not None:
            return min(self.num_samples, n)
        return min(n, max(1, round(self.fraction * n))) if n else 0

    def select(self, history: TriggerHistory, store: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.in_warmup(history):
            return ones(self.warmup_keys(history, store))
        keys = pool(history, store, None)
        return ones(draw(keys, self._size(len(keys)), rng(self.seed, history.trigger_id)))


class RandomNoReplacement(UsageTrackingPolicy):
    """Train on random data that earlier triggers have not used yet; once everything was used, start over.

    The policy keeps the set of keys trained on in the current *cycle*. Each trigger draws uniformly from the
    live keys seen so far that are not in that set. When fewer than ``num_samples`` are left, it takes all of
    them, starts a new cycle (the set is emptied) and draws the rest from the other keys — so within a cycle every
    key is used exactly once before any key repeats, and one trigger's selection never holds a key twice. Data
    arriving mid-cycle joins the current cycle as unused. Keys trained on during warm-up count as used.

    Selecting again for the trigger selected last (a retried fit) returns the same keys. Save and restore the
    record with :meth:`state_dict` / :meth:`load_state_dict` (JSON-serialisable).

    Parameters
    ----------
    num_samples
        Keys per trigger (all live keys when fewer have been seen).
    seed
        Seed of the draws; the generator of trigger ``t`` is seeded with ``(seed, t)``.
    warmup_triggers
        The first this many triggers train on all of their new data without sampling.

    Examples
    --------
    >>> policy = RandomNoReplacement(num_samples=2, seed=0)
    >>> h = TriggerHistory([np.arange(4)])
    >>> first = policy.select(h, None)[0].tolist()
    >>> h.intervals.append(np.zeros(0, np.int64))
    >>> second = policy.select(h, None)[0].tolist()
    >>> sorted(first + second)
    [0, 1, 2, 3]
    >>> policy.state_dict()["cycle"]
    0

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (random sampling
    without replacement across triggers).
    """

    def __init__(self, num_samples: int, seed: int = 0, warmup_triggers: int = 0) -> None:
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.seed = seed
        SelectionPolicy.__init__(self, warmup_triggers)
        self._used = UsedKeys()

    def _choose(self, keys: np.ndarray, gen: np.random.Generator) -> np.ndarray:
        unused = keys[~self._used.is_used(keys)]
        if len(unused) >= self.num_samples:
            chosen = draw(unused, self.num_samples, gen)
            self._used.add(chosen)
            return chosen
        # the cycle ends: take what is left, start the next cycle with the rest
        self._used.new_cycle()
        rest = keys[~np.isin(keys, unused)]
        extra = draw(rest, self.num_samples - len(unused), gen)
        self._used.add(extra)
        return np.sort(np.concatenate([unused, extra]))
