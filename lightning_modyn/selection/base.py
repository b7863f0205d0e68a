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


class SelectionPolicy(ABC):
    """Base class of presampling policies."""

    @abstractmethod
    def select(self, history: TriggerHistory, store: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, weights)`` to train on for the trigger ``history.trigger_id``."""
