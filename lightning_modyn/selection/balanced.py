"""Balanced presampling: fair shares of the budget across classes or across trigger intervals (water filling)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_modyn._checks import check_int, check_tail
from lightning_modyn.selection.pool import (
    draw,
    live,
    ones,
    pool,
    rng,
    water_fill,
)
from lightning_modyn.selection.base import SelectionPolicy, TriggerHistory
from lightning_modyn.store.catalog import NO_LABEL


class _Balanced(SelectionPolicy):
    """Shared machinery: split the candidate pool into groups, water-fill the budget, draw within each group."""

    def __init__(self, num_samples: int, tail_triggers: int | None = None, force_balance: bool = False,
                 force_size: bool = True, seed: int = 0, warmup_triggers: int = 0) -> None:
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.tail_triggers = check_tail(tail_triggers)
        for name, value in (("force_balance", force_balance), ("force_size", force_size)):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        self.force_balance = bool(force_balance)
        self.force_size = bool(force_size)
        self.seed = seed
        SelectionPolicy.__init__(self, warmup_triggers)

    def _groups(self, history: TriggerHistory, store: Any) -> list[np.ndarray]:
        raise NotImplementedError

    def select(self, history: TriggerHistory, store: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.in_warmup(history):
            return ones(self.warmup_keys(history, store))
        groups = [g for g in self._groups(history, store) if len(g)]
        counts = water_fill([len(g) for g in groups], self.num_samples, self.force_balance, self.force_size)
        gen = rng(self.seed, history.trigger_id)
        chosen = [draw(g, int(c), gen) for g, c in zip(groups, counts)]
        return ones(np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64))


_SHARES = """
    How the budget is shared (``G`` non-empty groups, budget ``B = num_samples``):

    * default (``force_size=True``): water filling. A group smaller than the fair share ``B // G`` gives all its
      keys; the leftover is shared again among the larger groups, repeatedly. The ``B % G`` samples that do not
      divide evenly go one each to the first groups ({first}). The total is ``min(B, pool size)``: with sizes
      ``[2, 10, 10]`` and ``B = 12`` the groups get ``[2, 5, 5]``.
    * ``force_size=False``: one round, no redistribution: each group gets ``min(size, B // G)`` and the total may
      fall short of ``B`` (``[2, 10, 10]``, ``B = 12`` → ``[2, 4, 4]``).
    * ``force_balance=True``: every group gets exactly ``min(smallest group size, B // G)`` keys, so the result
      is perfectly balanced at the cost of size (``[2, 10, 10]``, ``B = 12`` → ``[2, 2, 2]``); it takes
      precedence over ``force_size``.

    Within a group the keys are drawn uniformly without replacement, deterministic by ``seed`` and trigger id.
"""

_PARAMS = """
    Parameters
    ----------
    num_samples
        The budget: at most this many keys per trigger.
    tail_triggers
        The candidate pool, as in :class:`~lightning_modyn.selection.NewData`: 0 the current trigger's data,
        ``k`` also the ``k`` triggers before, None (default) everything seen so far. Deleted keys are skipped.
    force_balance
        Give every group the same number of keys, capped by the smallest group (see above).
    force_size
        Redistribute what small groups leave over so the budget is filled (see above).
    seed
        Seed of the draws; the generator of trigger ``t`` is seeded with ``(seed, t)``.
    warmup_triggers
        The first this many triggers train on all of their new data (like ``NewData(tail_triggers=0)``)
        without selection.
"""


class LabelBalanced(_Balanced):
    __doc__ = """Train on a class-balanced sample: fair shares of the budget for every label in the pool.

    Labels come from ``store.lookup(keys).labels``; every candidate must have one — a key without a label
    (``NO_LABEL``) raises ``ValueError`` naming it.
    """ + _SHARES.format(first="the smallest labels") + _PARAMS + """
    Examples
    --------
    >>> class Store:  # a stand-in with labels ``key % 3`` for keys < 20, label 2 above
    ...     def contains(self, keys): return np.ones(len(keys), bool)
    ...     def lookup(self, keys):
    ...         return type("Slice", (), {"labels": np.where(keys < 20, keys % 3, 2)})()
    >>> h = TriggerHistory([np.arange(0, 6), np.arange(20, 40)])
    >>> keys = LabelBalanced(num_samples=12).select(h, Store())[0]
    >>> np.bincount(Store().lookup(keys).labels).tolist()  # class sizes [2, 2, 22]: 2 + 2 + 8
    [2, 2, 8]
    >>> keys = LabelBalanced(num_samples=12, force_balance=True).select(h, Store())[0]
    >>> np.bincount(Store().lookup(keys).labels).tolist()
    [2, 2, 2]

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025
    (LabelBalancedPresamplingStrategy).
    """

    def _groups(self, history: TriggerHistory, store: Any) -> list[np.ndarray]:
        keys = pool(history, store, self.tail_triggers)
        if not len(keys):
            return []
        if store is None:
            raise ValueError("LabelBalanced needs a store to look up labels, got store=None")
        labels = np.asarray(store.lookup(keys).labels, np.int64)
        missing = labels == NO_LABEL
        if missing.any():
            raise ValueError(f"LabelBalanced needs a label for every sample, but key {int(keys[missing][0])} has "
                             f"none ({int(missing.sum())} of {len(keys)} candidates lack one); append samples with "
                             "labels or use TriggerBalanced")
        order = np.argsort(labels, kind="stable")
        labels, keys = labels[order], keys[order]
        cuts = np.flatnonzero(np.diff(labels)) + 1
        return np.split(keys, cuts)


class TriggerBalanced(_Balanced):
    __doc__ = """Train on a sample balanced across trigger intervals: fair shares of the budget for each trigger's data.

    The groups are the candidate intervals (see ``tail_triggers``) with live data; intervals with none take no
    share.
    """ + _SHARES.format(first="the oldest triggers") + _PARAMS + """
    Examples
    --------
    >>> h = TriggerHistory([np.arange(0, 2), np.arange(2, 12), np.arange(12, 22)])
    >>> keys = TriggerBalanced(num_samples=12).select(h, None)[0]
    >>> [int(((keys >= lo) & (keys < hi)).sum()) for lo, hi in [(0, 2), (2, 12), (12, 22)]]
    [2, 5, 5]
    >>> len(TriggerBalanced(num_samples=12, tail_triggers=1).select(h, None)[0])  # 6 + 6 of the last two
    12

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025
    (TriggerBalancedPresamplingStrategy).
    """

    def _groups(self, history: TriggerHistory, store: Any) -> list[np.ndarray]:
        k = len(history.intervals) if self.tail_triggers is None else self.tail_triggers + 1
        chosen = history.intervals[-k:] if k > 0 else []
        return [live(np.asarray(i, np.int64), store) for i in chosen]
