"""Selective backprop: keep each sample with a probability that grows with its loss percentile.

The percentile is taken against a running history of recent losses, so the probability of a sample does not
depend on which other samples share its batch.

References: Jiang et al., "Accelerating Deep Learning by Focusing on the Biggest Losers", arXiv:1910.00762, 2019.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_modyn._checks import check_int, check_number
from lightning_modyn.selection.downsampling import rules
from lightning_modyn.selection.downsampling.base import DownsamplingStrategy
from lightning_modyn.selection.downsampling.scoring import ScoringBatch


class SelectiveBackprop(DownsamplingStrategy):
    """Draw ``k`` distinct samples with probability ``∝ percentile(loss)^beta`` (weight 1).

    Args:
        beta: Sharpness; higher favours the largest losses more.
        history: How many recent losses the percentile is computed against.

    >>> s = SelectiveBackprop(beta=1.0)
    >>> b = ScoringBatch.from_outputs(torch.tensor([[0.0, 3], [0, 0], [3, 0]]), torch.tensor([1, 1, 1]))
    >>> s.percentiles(b).tolist()  # losses ascending by sample: percentiles 1/3, 2/3, 3/3
    [0.3333333432674408, 0.6666666865348816, 1.0]
    """

    def __init__(self, beta: float = 2.0, history: int = 1024) -> None:
        check_number("beta", beta, 0, low_open=True)
        check_int("history", history, 1)
        self.beta = beta
        self.history = history
        self._recent = torch.zeros(0)

    def percentiles(self, batch: ScoringBatch) -> torch.Tensor:
        losses = batch.losses.float().cpu()
        self._recent = torch.cat([self._recent, losses])[-self.history:]
        ranked = torch.sort(self._recent).values
        percentile = torch.searchsorted(ranked, losses, right=True).float() / len(ranked)
        return percentile.to(batch.losses.device)

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        self.last_scores = self.percentiles(batch)
        return rules.proportional_sample(self.last_scores.pow(self.beta), k, generator)

    def state_dict(self) -> dict[str, Any]:
        return {"recent": self._recent.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._recent = torch.tensor(state["recent"], dtype=torch.float32)
