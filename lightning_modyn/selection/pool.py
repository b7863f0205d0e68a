"""Shared pieces of the selection policies: candidate pools, seeded draws, water filling (presampling and
downsampling's class balance), and the record of which keys earlier triggers trained on."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lightning_modyn.selection.base import SelectionPolicy, TriggerHistory, live


def pool(history: TriggerHistory, store: Any, tail_triggers: int | None) -> np.ndarray:
    """Live keys of the current trigger and the ``tail_triggers`` before it (None: all seen so far)."""
    k = None if tail_triggers is None else tail_triggers + 1
    return live(history.last(k), store)


def ones(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = np.asarray(keys, np.int64)
    return keys, np.ones(len(keys), np.float32)


def rng(seed: int, trigger_id: int) -> np.random.Generator:
    """The generator of one trigger's draw: the same ``(seed, trigger_id)`` always draws the same sample."""
    return np.random.default_rng([seed, trigger_id])


def draw(keys: np.ndarray, n: int, gen: np.random.Generator) -> np.ndarray:
    """``n`` of ``keys`` uniformly without replacement (all when ``n >= len(keys)``), sorted."""
    if n >= len(keys):
        return np.sort(keys)
    return np.sort(gen.choice(keys, n, replace=False)) if n > 0 else np.zeros(0, np.int64)


# ------------------------------------------------------------------------------------------------ water filling
def water_fill(sizes: Sequence[int], budget: int, force_balance: bool = False, force_size: bool = True) -> np.ndarray:
    """How many samples each group gets out of ``budget``: fair shares capped by the group sizes.

    * ``force_size=True`` (water filling): groups smaller than the fair share ``budget // groups`` give all they
      have and the leftover is shared again among the rest, until every group is exhausted or the budget is spent;
      the ``budget % groups`` samples that do not divide evenly go one each to the first groups that can take
      them. The total is ``min(budget, sum(sizes))``.
    * ``force_size=False``: one round only — every group gets ``min(size, budget // groups)``; what small groups
      leave over is not redistributed (the total may fall short of the budget).
    * ``force_balance=True``: every group gets the same ``min(smallest size, budget // groups)``; this takes
      precedence over ``force_size``.

    >>> water_fill([2, 10, 10], 12).tolist()
    [2, 5, 5]
    >>> water_fill([2, 10, 10], 12, force_size=False).tolist()
    [2, 4, 4]
    >>> water_fill([2, 10, 10], 12, force_balance=True).tolist()
    [2, 2, 2]
    >>> water_fill([3, 3, 3], 10).tolist()
    [3, 3, 3]
    >>> water_fill([5, 5, 5], 7).tolist()
    [3, 2, 2]
    """
    sizes = np.asarray(sizes, np.int64)
    out = np.zeros(len(sizes), np.int64)
    if not len(sizes) or budget <= 0:
        return out
    if force_balance:
        out[:] = min(int(sizes.min()), budget // len(sizes))
        return out
    if not force_size:
        return np.minimum(sizes, budget // len(sizes))
    open_ = np.ones(len(sizes), bool)
    left = int(budget)
    while left > 0 and open_.any():
        share = left // int(open_.sum())
        small = open_ & (sizes <= share)
        if small.any():  # these give all they have; share the rest again
            out[small] = sizes[small]
            left -= int(sizes[small].sum())
            open_ &= ~small
            continue
        out[open_] = share  # every open group can take the share (and one more: size > share)
        left -= share * int(open_.sum())
        extra = np.flatnonzero(open_)[:left]
        out[extra] += 1
        left -= len(extra)
        break
    return out


# ---------------------------------------------------------------------------------------------- used-key record
class UsedKeys:
    """The keys that earlier triggers trained on, as a sorted array, with an undo point for the last trigger.

    Selecting again for the trigger selected last (a retried fit) starts from the record as it was before that
    trigger, so a retry returns the same keys instead of treating its own first selection as used.
    """

    def __init__(self) -> None:
        self.used = np.zeros(0, np.int64)
        self.cycle = 0
        self.last_trigger: int | None = None
        self._before: tuple[np.ndarray, int] = (self.used, 0)

    def begin(self, trigger_id: int) -> None:
        if trigger_id == self.last_trigger:
            self.used, self.cycle = self._before
        self._before = (self.used, self.cycle)
        self.last_trigger = trigger_id

    def is_used(self, keys: np.ndarray) -> np.ndarray:
        return np.isin(keys, self.used, assume_unique=False)

    def add(self, keys: np.ndarray) -> None:
        self.used = np.union1d(self.used, np.asarray(keys, np.int64))

    def new_cycle(self) -> None:
        self.used = np.zeros(0, np.int64)
        self.cycle += 1

    def forget_dead(self, pool_keys: np.ndarray) -> None:
        """Drop keys that are no longer candidates (deleted from the store)."""
        self.used = self.used[np.isin(self.used, pool_keys)]

    def state_dict(self) -> dict[str, Any]:
        before_used, before_cycle = self._before
        return {"used": self.used.tolist(), "cycle": self.cycle, "last_trigger": self.last_trigger,
                "before_used": before_used.tolist(), "before_cycle": before_cycle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.used = np.asarray(state["used"], np.int64).reshape(-1)
        self.cycle = int(state["cycle"])
        self.last_trigger = None if state["last_trigger"] is None else int(state["last_trigger"])
        self._before = (np.asarray(state["before_used"], np.int64).reshape(-1), int(state["before_cycle"]))


class UsageTrackingPolicy(SelectionPolicy):
    """Policies that remember which keys earlier triggers trained on (``RandomNoReplacement``, ``Freshness``).

    Subclasses implement :meth:`_choose` on the live keys seen so far; warm-up, dropping deleted keys, recording
    the choice and the state are handled here.
    """

    _used: UsedKeys

    def select(self, history: TriggerHistory, store: Any) -> tuple[np.ndarray, np.ndarray]:
        self._used.begin(history.trigger_id)
        if self.in_warmup(history):
            keys = self.warmup_keys(history, store)
            self._used.add(keys)
            return ones(keys)
        keys = pool(history, store, None)
        self._used.forget_dead(keys)
        return ones(self._choose(keys, rng(self.seed, history.trigger_id)))

    def _choose(self, keys: np.ndarray, gen: np.random.Generator) -> np.ndarray:
        """The sorted keys to train on out of ``keys``; records them in ``self._used``."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return self._used.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._used.load_state_dict(state)
