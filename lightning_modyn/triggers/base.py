"""The trigger contract: see the stream in chunks, say where to retrain.

A trigger is told about the stream chunk by chunk — numpy arrays of keys, timestamps and labels in stream
order — and returns the positions *within the chunk* where it fires. Firing at position ``i`` means: retrain now,
on data up to and including sample ``i``; the next trigger's data starts at ``i + 1``. A position of ``-1`` means
the last sample of the previous chunk (a time period can only close when the next sample, the first of a new
chunk, arrives). Model-aware triggers
(drift, performance, cost) reach the current model through the :class:`TriggerContext` the loop gives them and
are told when a new model is ready. Every trigger is resumable through ``state_dict`` / ``load_state_dict``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import numpy as np


class TriggerContext(Protocol):
    """What the loop offers model-aware triggers. ``has_model`` is False before the first model is trained."""

    has_model: bool

    def embed(self, keys: np.ndarray) -> np.ndarray:
        """(n, d) float32 embeddings of the samples by the current model (or its inputs before any model)."""

    def predict(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted labels, true labels) of the samples by the current model."""

    def training_seconds_forecast(self, num_samples: int) -> float:
        """Forecast of how long a retraining on ``num_samples`` samples takes (from past fits)."""


class Trigger(ABC):
    """Base class of every trigger. Subclasses implement :meth:`inform`; model-aware ones also
    :meth:`inform_new_model`."""

    context: TriggerContext | None = None
    uses_model: bool = False
    """Whether decisions depend on the models the loop trains (through the context: predictions, embeddings,
    training-time forecasts). The loop then lets such a trigger see no sample past a fire before the model trained
    for it is in place, rewinding the trigger with ``state_dict`` / ``load_state_dict`` (which must be complete);
    so its decisions do not depend on how the stream is chunked."""

    def setup(self, context: TriggerContext) -> None:
        """Called once by the loop before the first chunk."""
        self.context = context

    @abstractmethod
    def inform(self, keys: np.ndarray, timestamps: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Positions (int64, increasing, within this chunk; ``-1`` for the previous chunk's last sample) where the
        trigger fires."""

    def inform_new_model(self, model_id: int, trained_keys: np.ndarray, train_seconds: float) -> None:
        """A new model was trained at the last firing point (on ``trained_keys``, taking ``train_seconds``)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream after a restart (plain Python / numpy values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
