"""The downsampling contract: choose ``k`` of ``N`` scored samples, with weights.

A :class:`DownsamplingStrategy` receives a :class:`~.scoring.ScoringBatch` (one scoring forward pass over a large
batch, or over the whole training set) and returns ``(positions, weights)``. Strategies are small classes with
typed arguments so that a LightningCLI config names them by ``class_path``; the callbacks in
:mod:`.callbacks` decide *when* they run (batch-then-sample or sample-then-batch).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch

from lightning_modyn._checks import check_choice
from lightning_modyn.selection.downsampling import rules
from lightning_modyn.selection.downsampling.scoring import ScoringBatch

if TYPE_CHECKING:
    from lightning_modyn.selection.downsampling.context import SelectionContext

RULES = ("top_k", "importance", "proportional")


class DownsamplingStrategy(ABC):
    """Chooses which of the scored samples to train on.

    Class attributes say what the scoring pass must provide: ``needs_forward`` (False: no model pass at all, e.g.
    uniform or RS2), ``needs_embeddings`` (the inputs of the model's last layer, for last-layer gradients),
    ``needs_representations`` (the embeddings samples are compared by: ``embedding_layer``'s output, ``embed()``, or
    the last layer's inputs; :meth:`ScoringBatch.sample_embeddings`), ``needs_keys`` (store keys, i.e. a
    :class:`~lightning_modyn.data.ModynDataModule`).
    """

    needs_forward: bool = True
    needs_embeddings: bool = False
    needs_representations: bool = False
    needs_keys: bool = False
    #: The per-sample scores of the last :meth:`select` (None for strategies without scores), for the score log.
    last_scores: torch.Tensor | None = None

    def setup(self, context: "SelectionContext") -> None:
        """Called once at the start of every fit, before the first selection (e.g. RHO-LOSS trains a model)."""

    @abstractmethod
    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions (``0 <= p < len(batch)``; repeats allowed for sampling with replacement) and their weights."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class ScoreBasedStrategy(DownsamplingStrategy):
    """A strategy that scores every sample and keeps ``k`` by a rule.

    Args:
        rule: ``"top_k"`` (highest scores, weight 1), ``"importance"`` (draws with replacement, ``p ∝ score``,
            weight ``1/(N p)``) or ``"proportional"`` (distinct samples drawn ``∝ score``, weight 1).
        balance: Apply the rule within every class, with equal shares (water filling) — needs labels.
    """

    def __init__(self, rule: str = "top_k", balance: bool = False) -> None:
        self.rule = check_choice("rule", rule, RULES)
        self.balance = balance

    @abstractmethod
    def score(self, batch: ScoringBatch) -> torch.Tensor:
        """``(N,)`` scores; higher means more useful to train on."""

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.last_scores = self.score(batch)
        return self.apply_rule(scores, batch, k, generator)

    def apply_rule(self, scores: torch.Tensor, batch: ScoringBatch, k: int, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        def pick(positions: torch.Tensor, quota: int) -> tuple[torch.Tensor, torch.Tensor]:
            s = scores[positions]
            if self.rule == "top_k":
                return rules.top_k(s, quota)
            if self.rule == "importance":
                return rules.importance_sample(s, quota, generator)
            return rules.proportional_sample(s, quota, generator)

        if self.balance:
            if batch.targets is None:
                raise ValueError(f"{type(self).__name__}(balance=True) needs labels; the batches have no targets")
            return rules.per_class(batch.targets, k, pick)
        return pick(torch.arange(len(scores), device=scores.device), k)
