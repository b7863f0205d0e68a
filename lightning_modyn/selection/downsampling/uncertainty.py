"""Uncertainty sampling: keep the samples the model is least sure about.

References: Coleman et al., "Selection via Proxy: Efficient Data Selection for Deep Learning", ICLR 2020
(least confidence, entropy and margin as selection scores).
"""

from __future__ import annotations

import torch

from lightning_modyn._checks import check_choice
from lightning_modyn.selection.downsampling.base import ScoreBasedStrategy
from lightning_modyn.selection.downsampling.scoring import ScoringBatch

METRICS = ("least_confidence", "entropy", "margin")


class Uncertainty(ScoreBasedStrategy):
    """Score by predictive uncertainty; keep the ``k`` most uncertain (weight 1).

    Args:
        metric: ``"least_confidence"`` (1 - max p), ``"entropy"`` (-Σ p log p) or ``"margin"``
            (1 - (p_top1 - p_top2)).
        balance: Equal shares per class (by label).
        rule: How scores become a subset (default ``"top_k"``).

    >>> b = ScoringBatch.from_outputs(torch.tensor([[4.0, 0.0], [0.1, 0.0]]), torch.tensor([0, 0]))
    >>> Uncertainty("margin").score(b).round(decimals=3)
    tensor([0.0360, 0.9500])
    """

    def __init__(self, metric: str = "least_confidence", balance: bool = False, rule: str = "top_k") -> None:
        check_choice("metric", metric, METRICS)
        super().__init__(rule, balance)
        self.metric = metric

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        p = batch.probabilities()
        if self.metric == "least_confidence":
            return 1 - p.max(dim=1).values
        if self.metric == "entropy":
            return -(p * torch.log(p.clamp_min(1e-12))).sum(1)
        top2 = p.topk(2, dim=1).values
        return 1 - (top2[:, 0] - top2[:, 1])
