"""The presampling contract: before a fit, choose ``(keys, weights)`` from what the stream has delivered.

A policy sees a :class:`TriggerHistory` — the keys that arrived in each trigger's interval so far (the last entry
is the trigger being trained now) — and the store for anything else (labels, timestamps). It returns the keys to
train on and their weights; the DataModule trains on exactly that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lightning_modyn._checks import check_int


@dataclass
class TriggerHistory:
    """Keys per trigger interval, oldest first; ``intervals[-1]`` is the data of the trigger now being trained."""

    intervals: list[np.ndarray] = field(default_factory=list)

    @property
    def trigger_id(self) -> int:
        return len(self.intervals) - 1

    def last(self, k: int | None) -> np.ndarray:
        """Keys of the last ``k`` intervals (all when ``k`` is None), in stream order."""
        chosen = self.intervals if k is None else self.intervals[-k:] if k > 0 else []
        return np.concatenate(chosen) if chosen else np.zeros(0, np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"intervals": [i.tolist() for i in self.intervals]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.intervals = [np.asarray(i, dtype=np.int64) for i in state["intervals"]]


def live(keys: np.ndarray, store: Any) -> np.ndarray:
    """``keys`` without those deleted from ``store`` since they arrived (all of them when ``store`` is None)."""
    if store is not None and len(keys):
        keys = keys[np.asarray(store.contains(keys), bool)]
    return keys


class SelectionPolicy(ABC):
    """Base class of presampling policies.

    Every policy takes ``warmup_triggers``: the first that many triggers train on all of their new data, with no
    selection (:meth:`in_warmup`, :meth:`warmup_keys`), e.g. while a model is too young for its scores to mean
    anything. A policy with state across triggers (which keys it used, scores it recorded) overrides
    :meth:`state_dict` / :meth:`load_state_dict`; the loop saves and restores every policy through them.
    """

    warmup_triggers: int = 0

    def __init__(self, warmup_triggers: int = 0) -> None:
        self.warmup_triggers = check_int("warmup_triggers", warmup_triggers, 0)

    @abstractmethod
    def select(self, history: TriggerHistory, store: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, weights)`` to train on for the trigger ``history.trigger_id``."""

    def in_warmup(self, history: TriggerHistory) -> bool:
        """Whether this trigger is one of the first ``warmup_triggers``."""
        return history.trigger_id < self.warmup_triggers

    @staticmethod
    def warmup_keys(history: TriggerHistory, store: Any) -> np.ndarray:
        """What a warm-up trigger trains on: the live keys that arrived since the trigger before it."""
        return live(history.last(1), store)

    def state_dict(self) -> dict[str, Any]:
        """What the policy carries from one trigger to the next (JSON-able); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
