"""Uniform downsampling: a random subset, the baseline every other strategy must beat."""

from __future__ import annotations

import torch

from lightning_modyn.selection.downsampling import rules
from lightning_modyn.selection.downsampling.base import DownsamplingStrategy
from lightning_modyn.selection.downsampling.scoring import ScoringBatch


class Uniform(DownsamplingStrategy):
    """Keep ``k`` samples drawn uniformly without replacement, weight 1; needs no model pass.

    >>> idx, w = Uniform().select(ScoringBatch.unscored(10), 3, torch.Generator().manual_seed(0))
    >>> len(set(idx.tolist())), w.tolist()
    (3, [1.0, 1.0, 1.0])
    """

    needs_forward = False

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return rules.uniform_sample(len(batch), k, generator, batch.losses.device)
