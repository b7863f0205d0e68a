"""Replay the hardest old samples: a presampling policy that reuses the scores a downsampling callback recorded.

Every new sample is trained on; of the older samples (the ``tail_triggers`` before the current one), only the
``ratio`` % that scored highest when they were last scored are replayed. Scores come from the ``npz`` files a
:class:`~lightning_modyn.selection.downsampling.BatchThenSample` or ``SampleThenBatch`` callback writes with
``scores_dir`` (``scores-trigger-NNNN.npz``); a key scored in several epochs or fits keeps its latest score.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np

from lightning_modyn._checks import check_percentage, check_tail
from lightning_modyn.selection.base import SelectionPolicy, TriggerHistory, live


def load_scores(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(keys, scores, epochs, trigger_id)`` from one score record (never unpickles)."""
    with np.load(path, allow_pickle=False) as f:
        missing = {"keys", "scores", "epochs", "trigger_id"} - set(f.files)
        if missing:
            raise ValueError(f"{path} is not a score record: it lacks {sorted(missing)}")
        return f["keys"], f["scores"], f["epochs"], int(f["trigger_id"])


def latest_scores(scores_dir: str, before_trigger: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every key's latest recorded score in ``scores_dir`` (records of triggers ``< before_trigger`` only)."""
    keys, scores, order = [], [], []
    for path in sorted(glob.glob(os.path.join(scores_dir, "scores-trigger-*.npz"))):
        k, s, e, t = load_scores(path)
        if before_trigger is not None and t >= before_trigger:
            continue
        keys.append(k)
        scores.append(s)
        order.append(t * (1 << 20) + e.astype(np.int64))  # later trigger, then later epoch, wins
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    k, s, o = np.concatenate(keys), np.concatenate(scores), np.concatenate(order)
    last = np.lexsort((np.arange(len(k)), o, k))  # by key, then recency; the last row of each key is its latest
    k, s = k[last], s[last]
    is_last = np.r_[k[1:] != k[:-1], True]
    return k[is_last], s[is_last].astype(np.float32)


class RecordedScores(SelectionPolicy):
    """New data plus the highest-scoring ``ratio`` % of the previous ``tail_triggers`` triggers' data.

    Args:
        scores_dir: Where the downsampling callback writes its records (its ``scores_dir``).
        ratio: Percentage of the older samples to replay, in (0, 100]. Old samples never scored rank last.
        tail_triggers: How many previous triggers' data to consider (None: all).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> np.savez(f"{d}/scores-trigger-0000.npz", keys=np.arange(4), scores=np.array([0.1, 0.9, 0.5, 0.2]),
        ...          epochs=np.zeros(4, np.int64), trigger_id=np.int64(0))
        >>> h = TriggerHistory([np.arange(4), np.arange(4, 6)])
        >>> RecordedScores(d, ratio=50).select(h, None)[0].tolist()  # keys 1 and 2 scored highest
        [1, 2, 4, 5]
    """

    def __init__(self, scores_dir: str, ratio: float = 50, tail_triggers: int | None = None,
                 warmup_triggers: int = 0) -> None:
        super().__init__(warmup_triggers)
        self.scores_dir = scores_dir
        self.ratio = check_percentage("ratio", ratio, "the percentage of old samples to replay")
        self.tail_triggers = check_tail(tail_triggers)

    def select(self, history: TriggerHistory, store: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.in_warmup(history):
            keys = self.warmup_keys(history, store)
            return keys, np.ones(len(keys), np.float32)
        current = history.intervals[-1] if history.intervals else np.zeros(0, np.int64)
        older = history.intervals[:-1]
        if self.tail_triggers is not None:
            older = older[len(older) - self.tail_triggers:] if self.tail_triggers else []
        new = live(current, store)
        old = live(np.concatenate(older) if older else np.zeros(0, np.int64), store)
        if len(old):
            scored_keys, scored = latest_scores(self.scores_dir, before_trigger=history.trigger_id)
            score = np.full(len(old), -np.inf)  # never scored: last
            if len(scored_keys):
                pos = np.minimum(np.searchsorted(scored_keys, old), len(scored_keys) - 1)
                hit = scored_keys[pos] == old
                score[hit] = scored[pos[hit]]
            keep = max(1, int(round(self.ratio / 100 * len(old))))
            old = np.sort(old[np.argsort(-score, kind="stable")[:keep]])
        keys = np.concatenate([old, new]).astype(np.int64)
        return keys, np.ones(len(keys), np.float32)
