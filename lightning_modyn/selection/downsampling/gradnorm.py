"""Gradient-norm sampling: draw samples in proportion to the norm of their last-layer gradient.

The norm has a closed form from one forward pass (see :mod:`.scoring`), so scoring needs no backward pass.

References: Katharopoulos & Fleuret, "Not All Samples Are Created Equal: Deep Learning with Importance
Sampling", ICML 2018 (the last-layer gradient norm as an upper-bound proxy of the full gradient norm).
"""

from __future__ import annotations

import torch

from lightning_modyn.selection.downsampling.base import ScoreBasedStrategy
from lightning_modyn.selection.downsampling.scoring import ScoringBatch


class GradNorm(ScoreBasedStrategy):
    """Score = the norm of the per-sample gradient of the last layer (weight and bias).

    Args:
        rule: ``"proportional"`` (default: ``k`` distinct samples drawn with ``p ∝`` norm, weight 1, so an
            unchanged training step misses nothing), ``"importance"`` (draws with replacement, weight ``1/(N p)``:
            unbiased for a step that applies the weights) or ``"top_k"``.
        balance: Equal shares per class.

    >>> b = ScoringBatch.from_outputs(torch.tensor([[0.0, 0.0]]), torch.tensor([0]),
    ...                               embeddings=torch.tensor([[3.0, 0.0]]))
    >>> round(GradNorm().score(b).item(), 4)  # |p - y| = sqrt(0.5), sqrt(|h|^2 + 1) = sqrt(10)
    2.2361
    """

    needs_embeddings = True

    def __init__(self, rule: str = "proportional", balance: bool = False) -> None:
        super().__init__(rule, balance)

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        return batch.last_layer_gradient_norms()
