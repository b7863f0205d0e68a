"""EL2N and GraNd: "data diet" scores of how hard a sample is for the current model.

References: Paul, Ganguli & Dziugaite, "Deep Learning on a Data Diet: Finding Important Examples Early in
Training", NeurIPS 2021. GraNd here uses the last layer's gradient (closed form), as Modyn does.
"""

from __future__ import annotations

import torch

from lightning_modyn.selection.downsampling.base import ScoreBasedStrategy
from lightning_modyn.selection.downsampling.scoring import ScoringBatch


class EL2N(ScoreBasedStrategy):
    """Score = ``|softmax(z) - onehot(y)|_2`` (the error L2 norm); keep the ``k`` highest by default.

    >>> b = ScoringBatch.from_outputs(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))
    >>> round(EL2N().score(b).item(), 4)
    0.7071
    """

    def __init__(self, rule: str = "top_k", balance: bool = False) -> None:
        super().__init__(rule, balance)

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        return batch.output_gradients().norm(dim=1) if batch.loss != "mse" else batch.losses.sqrt()


class GraNd(ScoreBasedStrategy):
    """Score = the norm of the sample's last-layer gradient; keep the ``k`` highest by default."""

    needs_embeddings = True

    def __init__(self, rule: str = "top_k", balance: bool = False) -> None:
        super().__init__(rule, balance)

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        return batch.last_layer_gradient_norms()
