"""Freshness sampling: a fixed mix of data never trained on and data trained on before."""

from __future__ import annotations

import numpy as np

from lightning_modyn._checks import check_int, check_fraction
from lightning_modyn.selection.pool import (
    UsageTrackingPolicy,
    UsedKeys,
    draw,
)
from lightning_modyn.selection.base import SelectionPolicy, TriggerHistory  # noqa: F401 (TriggerHistory: doctest)


class Freshness(UsageTrackingPolicy):
    """Train on ``num_samples`` keys of which a share ``unused_fraction`` was never trained on before.

    The pool is every live key seen so far, split into *unused* keys (no earlier trigger trained on them) and
    *used* keys. A trigger takes ``round(unused_fraction * n)`` unused keys and ``n - that`` used keys, each drawn
    uniformly, where ``n = min(num_samples, pool size)``. When one side has too few keys, all of it is taken
    and the other side fills the gap, so the ratio is exact whenever both sides are large enough and the total
    is always ``n``. Chosen keys become used for good (unlike :class:`RandomNoReplacement` there are no cycles);
    keys trained on during warm-up count as used.

    Selecting again for the trigger selected last (a retried fit) returns the same keys. Save and restore the
    record with :meth:`state_dict` / :meth:`load_state_dict` (JSON-serialisable).

    Parameters
    ----------
    num_samples
        Keys per trigger.
    unused_fraction
        Share of the keys that must be unused, in ``[0, 1]``: 1 trains only on fresh data while it lasts,
        0 only on data seen in training before (fresh data fills in while there is not enough of it).
    seed
        Seed of the draws; the generator of trigger ``t`` is seeded with ``(seed, t)``.
    warmup_triggers
        The first this many triggers train on all of their new data without sampling.

    Examples
    --------
    >>> policy = Freshness(num_samples=4, unused_fraction=0.5, seed=0)
    >>> h = TriggerHistory([np.arange(0, 4)])
    >>> policy.select(h, None)[0].tolist()  # nothing used yet: all fresh
    [0, 1, 2, 3]
    >>> h.intervals.append(np.arange(4, 10))
    >>> keys = policy.select(h, None)[0]
    >>> int((keys < 4).sum()), int((keys >= 4).sum())  # two used, two fresh
    (2, 2)

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025
    (FreshnessSamplingStrategy).
    """

    def __init__(self, num_samples: int, unused_fraction: float = 0.5, seed: int = 0,
                 warmup_triggers: int = 0) -> None:
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.unused_fraction = check_fraction("unused_fraction", unused_fraction, low_open=False)
        self.seed = seed
        SelectionPolicy.__init__(self, warmup_triggers)
        self._used = UsedKeys()

    def _choose(self, keys: np.ndarray, gen: np.random.Generator) -> np.ndarray:
        was_used = self._used.is_used(keys)
        unused, used = keys[~was_used], keys[was_used]
        n = min(self.num_samples, len(keys))
        n_unused = min(round(self.unused_fraction * n), len(unused))
        n_used = min(n - n_unused, len(used))
        n_unused = n - n_used  # fill a shortfall of used keys with unused ones
        chosen = np.sort(np.concatenate([draw(unused, n_unused, gen), draw(used, n_used, gen)]))
        self._used.add(chosen)
        return chosen
