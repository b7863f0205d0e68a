"""New data, the last k triggers' data, or all data — optionally capped at a limit."""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_modyn._checks import check_choice, check_int, check_seed, check_tail
from lightning_modyn.selection.base import SelectionPolicy, TriggerHistory, live

_LIMIT_MODES = ("newest", "uniform")


class NewData(SelectionPolicy):
    """Train on the data of the current trigger and the ``tail_triggers`` before it.

    Parameters
    ----------
    tail_triggers
        0: only the data that arrived since the last trigger; ``k``: also the previous ``k`` triggers' data;
        None: everything seen so far.
    limit
        At most this many samples (None: no limit).
    limit_mode
        How to cut to ``limit``: ``"newest"`` keeps the most recent samples, ``"uniform"`` draws uniformly
        without replacement (deterministic by ``seed`` and trigger id).
    seed
        Seed of the uniform draw.
    warmup_triggers
        The first this many triggers train on their new data only, without ``tail_triggers`` or ``limit``.

    Examples
    --------
    >>> h = TriggerHistory([np.arange(0, 5), np.arange(5, 8), np.arange(8, 10)])
    >>> NewData(tail_triggers=0).select(h, None)[0].tolist()
    [8, 9]
    >>> NewData(tail_triggers=1).select(h, None)[0].tolist()
    [5, 6, 7, 8, 9]
    >>> NewData(tail_triggers=None, limit=3).select(h, None)[0].tolist()
    [7, 8, 9]

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (NewDataStrategy).
    """

    def __init__(self, tail_triggers: int | None = 0, limit: int | None = None, limit_mode: str = "newest",
                 seed: int = 0, warmup_triggers: int = 0) -> None:
        super().__init__(warmup_triggers)
        if limit is not None:
            check_int("limit", limit, 1, hint="(a number of samples) or None")
        check_choice("limit_mode", limit_mode, _LIMIT_MODES)
        self.tail_triggers = check_tail(tail_triggers)
        self.limit = limit
        self.limit_mode = limit_mode
        self.seed = check_seed(seed)

    def select(self, history: TriggerHistory, store: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.in_warmup(history):
            keys = self.warmup_keys(history, store)
            return keys, np.ones(len(keys), np.float32)
        k = None if self.tail_triggers is None else self.tail_triggers + 1
        keys = live(history.last(k), store)  # without those deleted since they arrived
        if self.limit is not None and len(keys) > self.limit:
            if self.limit_mode == "newest":
                keys = keys[-self.limit :]
            else:
                rng = np.random.default_rng([self.seed, history.trigger_id])
                keys = np.sort(rng.choice(keys, self.limit, replace=False))
        return keys, np.ones(len(keys), np.float32)


class AllData(NewData):
    """Train on everything seen so far (optionally capped at ``limit``): ``NewData(tail_triggers=None)``.

    >>> h = TriggerHistory([np.arange(0, 2), np.arange(2, 4)])
    >>> AllData().select(h, None)[0].tolist()
    [0, 1, 2, 3]
    """

    def __init__(self, limit: int | None = None, limit_mode: str = "newest", seed: int = 0,
                 warmup_triggers: int = 0) -> None:
        super().__init__(tail_triggers=None, limit=limit, limit_mode=limit_mode, seed=seed,
                         warmup_triggers=warmup_triggers)
