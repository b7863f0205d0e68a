"""What a strategy may use when a fit starts: the Trainer, the model, the data, and ways to score any keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from lightning_modyn.selection.downsampling.forward import ScoringForward
from lightning_modyn.selection.downsampling.scoring import ScoringBatch


@dataclass
class SelectionContext:
    """Handed to :meth:`DownsamplingStrategy.setup` at the start of every fit.

    Attributes:
        trainer, pl_module: The fit's Trainer and LightningModule.
        datamodule: The fit's DataModule (a ``ModynDataModule`` for anything keyed).
        trigger_id: The trigger this fit trains for (0 outside a continual loop).
        seed: The selection seed; strategies derive their randomness from it.
        forward: The scoring forward pass the callback uses.
        batch_size: Samples per batch when scoring or training on keys.
    """

    trainer: Any
    pl_module: Any
    datamodule: Any
    trigger_id: int
    seed: int
    forward: ScoringForward
    batch_size: int = 256

    def training_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The fit's training ``(keys, weights)`` (before any downsampling)."""
        dm = self.datamodule
        if dm is None or getattr(dm, "training_set", None) is None:
            raise ValueError("this strategy needs the training set's keys: train with a ModynDataModule on which "
                             "set_training_set(keys) was called")
        return dm.training_set

    def batches(self, keys: np.ndarray, generator: torch.Generator | None = None) -> Iterator[Any]:
        """Batches of the given keys on the model's device, in order or shuffled by ``generator``."""
        self.training_set()  # the same check: keyed data needs a ModynDataModule
        keys = np.asarray(keys, np.int64)
        if generator is not None:
            keys = keys[torch.randperm(len(keys), generator=generator).numpy()]
        device = self.pl_module.device
        for batch in self.datamodule.batches(keys, self.batch_size):
            yield batch.to(device)

    def score_keys(self, keys: np.ndarray, module: torch.nn.Module | None = None, embeddings: bool = False,
                   representations: bool = False) -> ScoringBatch:
        """One scoring pass of ``module`` (default: the model being fitted) over ``keys``, in their order."""
        module = module if module is not None else self.pl_module
        parts = [self.forward(module, b, embeddings, b.keys, representations) for b in self.batches(keys)]
        if not parts:
            return ScoringBatch.unscored(0, keys=torch.zeros(0, dtype=torch.long))
        return ScoringBatch.cat(parts)
