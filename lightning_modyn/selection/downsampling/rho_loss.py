"""RHO-LOSS: train on the samples whose loss the model can still reduce — learnable, worth learning, not learnt.

The *reducible* loss of a sample is its training loss minus its *irreducible* loss: the loss of a model trained on
held-out data only. Noisy or ambiguous samples have a high irreducible loss and are skipped; samples already learnt
have a low training loss and are skipped too.

At the start of every fit the irreducible-loss (IL) model is trained on a holdout drawn from the training set:

* ``twin=False`` (simple): one IL model trained on a holdout of ``holdout`` samples; holdout samples are never
  selected for training (their irreducible loss would be optimistic);
* ``twin=True``: the training set is split in two halves, an IL model is trained on each and scores the other
  half, so every sample gets an honest irreducible loss and all can be trained on.

References: Mindermann et al., "Prioritized Training on Points that are Learnable, Worth Learning, and Not Yet
Learnt", ICML 2022.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from lightning_modyn._checks import check_int
from lightning_modyn.selection.downsampling.base import ScoreBasedStrategy
from lightning_modyn.selection.downsampling.context import SelectionContext
from lightning_modyn.selection.downsampling.scoring import ScoringBatch, per_sample_loss, resolve_loss


class RhoLoss(ScoreBasedStrategy):
    """Score = training loss − irreducible loss (from an IL model trained on a holdout); top-k by default.

    Needs store keys (a ``ModynDataModule``).

    Args:
        holdout: Fraction of the training set (float in (0, 1)) or number of samples (int) to train the IL model
            on (simple mode). Ignored with ``twin=True``.
        twin: Two IL models on two halves, each scoring the other half.
        il_model: The module to train as IL model (e.g. a smaller network); default: a freshly initialized copy
            of the model being fitted.
        il_epochs: Epochs of IL training.
        il_lr: Adam learning rate of IL training.
        rule, balance: How scores become a subset.
    """

    needs_keys = True

    def __init__(self, holdout: float | int = 0.1, twin: bool = False, il_model: torch.nn.Module | None = None,
                 il_epochs: int = 5, il_lr: float = 1e-3, rule: str = "top_k", balance: bool = False) -> None:
        super().__init__(rule, balance)
        if isinstance(holdout, bool) or not isinstance(holdout, (int, float)):
            raise ValueError(f"holdout must be a fraction in (0, 1) or a number of samples, got {holdout!r}")
        if isinstance(holdout, float) and not 0 < holdout < 1:
            raise ValueError(f"holdout as a fraction must be in (0, 1), got {holdout}")
        if isinstance(holdout, int) and holdout < 1:
            raise ValueError(f"holdout as a number of samples must be >= 1, got {holdout}")
        check_int("il_epochs", il_epochs, 1)
        self.holdout = holdout
        self.twin = twin
        self.il_model = il_model
        self.il_epochs = il_epochs
        self.il_lr = il_lr
        self._keys = np.zeros(0, np.int64)  # sorted training keys
        self._irreducible = np.zeros(0, np.float32)  # their irreducible losses (-inf marks holdout samples)

    # ------------------------------------------------------------------ the irreducible-loss model
    def setup(self, context: SelectionContext) -> None:
        keys = np.unique(context.training_set()[0])
        rng = np.random.default_rng([context.seed, context.trigger_id])
        order = rng.permutation(keys)
        if self.twin:
            if len(keys) < 2:
                raise ValueError(f"RhoLoss(twin=True) needs at least 2 training samples, got {len(keys)}")
            halves = np.array_split(order, 2)
            pairs = [(halves[0], halves[1]), (halves[1], halves[0])]
        else:
            size = self.holdout if isinstance(self.holdout, int) else int(round(self.holdout * len(keys)))
            if size >= len(keys):
                raise ValueError(f"RhoLoss holdout of {size} samples is not smaller than the training set "
                                 f"({len(keys)} samples); lower holdout")
            size = max(size, 1)
            pairs = [(order[:size], order)]
        self._keys = keys
        self._irreducible = np.zeros(len(keys), np.float32)
        for train_on, score in pairs:
            model = self._train_il_model(context, train_on)
            il = context.score_keys(score, module=model).losses.cpu().numpy()
            self._irreducible[np.searchsorted(keys, score)] = il
        if not self.twin:
            self._irreducible[np.searchsorted(keys, pairs[0][0])] = np.inf  # holdout: never selected

    def _train_il_model(self, context: SelectionContext, keys: np.ndarray) -> torch.nn.Module:
        model = copy.deepcopy(self.il_model if self.il_model is not None else context.pl_module)
        if self.il_model is None:
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        model = model.to(context.pl_module.device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.il_lr)
        generator = torch.Generator().manual_seed(context.seed + 7919 * context.trigger_id)
        for _ in range(self.il_epochs):
            for batch in context.batches(keys, generator):
                x, y = context.forward.split(batch)
                logits = model(x)
                loss = per_sample_loss(logits.reshape(len(logits), -1), y,
                                       resolve_loss(context.forward.loss, logits.reshape(len(logits), -1))).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return model.eval()

    # ------------------------------------------------------------------ scores
    def irreducible_losses(self, keys: torch.Tensor) -> torch.Tensor:
        """The irreducible loss of each key (``inf`` for holdout samples, 0 for keys outside the training set)."""
        k = keys.cpu().numpy()
        pos = np.clip(np.searchsorted(self._keys, k), 0, max(len(self._keys) - 1, 0))
        found = (self._keys[pos] == k) if len(self._keys) else np.zeros(len(k), bool)
        return torch.as_tensor(np.where(found, self._irreducible[pos] if len(self._keys) else 0, 0.0),
                               dtype=torch.float32, device=keys.device)

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        if batch.keys is None:
            raise ValueError("RhoLoss needs store keys: train with a ModynDataModule")
        il = self.irreducible_losses(batch.keys).to(batch.losses.device)
        reducible = batch.losses - il
        if self.rule != "top_k":  # sampling rules need scores >= 0; holdout samples get 0
            return torch.where(torch.isfinite(reducible), reducible.clamp_min(0), torch.zeros_like(reducible))
        floor = reducible[torch.isfinite(reducible)].min() - 1 if torch.isfinite(reducible).any() else -1.0
        return torch.where(torch.isfinite(reducible), reducible, torch.as_tensor(floor, device=reducible.device))

    def state_dict(self) -> dict[str, Any]:
        return {"keys": self._keys.tolist(), "irreducible": self._irreducible.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._keys = np.asarray(state["keys"], np.int64)
        self._irreducible = np.asarray(state["irreducible"], np.float32)
