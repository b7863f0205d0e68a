"""Loss-based sampling: train more often on the samples the model currently gets most wrong.

References: Katharopoulos & Fleuret, "Not All Samples Are Created Equal: Deep Learning with Importance
Sampling", ICML 2018 (the loss as a cheap proxy of the gradient norm).
"""

from __future__ import annotations

import torch

from lightning_modyn.selection.downsampling.base import ScoreBasedStrategy
from lightning_modyn.selection.downsampling.scoring import ScoringBatch


class Loss(ScoreBasedStrategy):
    """Score = the per-sample loss; by default ``k`` distinct samples drawn with ``p ∝ loss``, weight 1.

    The default rule leaves no weights for a training step to miss: an unchanged ``training_step`` trains on
    exactly what a weight-aware one does. ``rule="importance"`` (draws with replacement, weight ``1/(N p)``) makes
    the weighted mean loss an unbiased estimate of the mean over all samples, for a step that applies the weights
    (``weighted_mean``; the callback warns a step that ignores them). On the downsampling recipe, importance with
    the weights applied scored 1.3 held-out points above the default, and 6.7 points below it with the weights
    ignored (docs/selection.md).

    Args:
        rule: ``"proportional"`` (default), ``"importance"`` or ``"top_k"``.
        balance: Equal shares per class.

    >>> b = ScoringBatch.from_outputs(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]))
    >>> Loss().score(b).round(decimals=3)
    tensor([0.1270, 2.1270])
    """

    def __init__(self, rule: str = "proportional", balance: bool = False) -> None:
        super().__init__(rule, balance)

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        return batch.losses
