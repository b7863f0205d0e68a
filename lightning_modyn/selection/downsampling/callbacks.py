"""Downsampling as Lightning callbacks: train an unchanged model on a scored, weighted subset of its data.

Two modes, as in Modyn:

* :class:`BatchThenSample` scores every (large) training batch with one no-grad forward pass and trains on
  ``ratio`` % of it. The batch is shrunk *in place* before ``training_step`` sees it, so ``x, y = batch`` works
  unchanged.
* :class:`SampleThenBatch` scores the whole training set every ``period`` epochs (0: once per fit) and trains on
  ``ratio`` % of it through :meth:`ModynDataModule.set_training_subset`.

The selection weights (importance weights, coreset weights; 1 otherwise) reach the loss through a one-line opt-in
in ``training_step``: ``loss = weighted_mean(per_sample_losses, batch)``. An unchanged ``training_step`` trains on
the subset with equal weights.

Under DDP the scores of all ranks are gathered, every rank draws the same selection from the same global ranking or
sample (one shared seed), and each rank trains on its own part of it.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Any

import lightning as L
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
import numpy as np
import torch

from lightning_modyn.data.batch import KeyedBatch, batch_keys
from lightning_modyn._checks import check_int, check_percentage
from lightning_modyn.selection.downsampling.base import DownsamplingStrategy
from lightning_modyn.selection.downsampling.context import SelectionContext
from lightning_modyn.selection.downsampling.forward import ScoringForward
from lightning_modyn.selection.downsampling.scoring import LossSpec, ScoringBatch
from lightning_modyn.selection.downsampling.weights import IGNORED_WEIGHTS_HELP, set_batch_weights, weights_ignored

SCORES_FILE = "selection_scores.npz"


class _Downsampling(L.Callback):
    """What both modes share: the strategy, the ratio, the scoring forward, seeds, score records, DDP gather."""

    def __init__(self, strategy: DownsamplingStrategy | str, ratio: float, loss: LossSpec = "auto",
                 last_layer: str | None = None, seed: int = 0, record_scores: bool = True,
                 scores_dir: str | None = None, embedding_layer: str | None = None) -> None:
        from lightning_modyn.selection.downsampling import strategy_by_name

        self.strategy = strategy_by_name(strategy) if isinstance(strategy, str) else strategy
        if not isinstance(self.strategy, DownsamplingStrategy):
            raise TypeError(f"strategy must be a DownsamplingStrategy or its name, got {type(strategy).__name__}")
        self.ratio = check_percentage("ratio", ratio, "the percentage of samples to keep")
        self.forward = ScoringForward(loss=loss, last_layer=last_layer, embedding_layer=embedding_layer)
        self.seed = seed
        self.record_scores = record_scores
        self.scores_dir = scores_dir
        # steps_without_samples: batch-then-sample steps where another rank held every chosen sample (DDP);
        # steps_ignoring_weights: training steps that never read selection weights that differed between samples
        self.stats = {"scored_samples": 0, "kept_samples": 0, "steps_without_samples": 0,
                      "steps_ignoring_weights": 0, "scoring_seconds": 0.0}
        self._step_without_samples = False
        self._said_weights_ignored = False
        self._step_weights: torch.Tensor | None = None
        self._fits = 0
        self._trigger_id = 0
        self._records: list[tuple[np.ndarray, np.ndarray, int]] = []

    @property
    def scoring_seconds(self) -> float:
        """Seconds spent scoring samples over every fit so far (a continual loop counts them as its scoring
        stage)."""
        return float(self.stats["scoring_seconds"])

    @property
    def state_key(self) -> str:
        return self._generate_state_key(strategy=type(self.strategy).__name__, ratio=self.ratio)

    def target_size(self, n: int) -> int:
        return max(1, int(round(self.ratio / 100 * n)))

    # ------------------------------------------------------------------ fit boundaries
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        trigger = getattr(dm, "trigger_id", None)
        self._trigger_id = int(trigger) if trigger is not None else self._fits
        self._fits += 1
        self._records = []
        self._said_weights_ignored = False

    def _check_weights_applied(self, batch: Any, weights: torch.Tensor | None) -> None:
        """After a training step: if it ignored weights that mattered, count it, and warn once per fit."""
        if weights is None or not weights_ignored(batch, weights):
            return
        self.stats["steps_ignoring_weights"] += 1
        if not self._said_weights_ignored:
            self._said_weights_ignored = True
            rule = getattr(self.strategy, "rule", None)
            why = ("importance weights 1/(N·p) that undo the loss-biased draw" if rule == "importance" else
                   f"the weights of rule {rule!r}" if rule else f"the weights {type(self.strategy).__name__} gives")
            rank_zero_warn(f"{type(self).__name__}: " + IGNORED_WEIGHTS_HELP.format(
                what=f"{type(self.strategy).__name__}" + (f"(rule={rule!r})" if rule else ""), why=why))

    def _context(self, trainer: L.Trainer, pl_module: L.LightningModule, batch_size: int) -> SelectionContext:
        return SelectionContext(trainer, pl_module, trainer.datamodule, self._trigger_id, self.seed, self.forward,
                                batch_size)

    def _generator(self, *salt: int) -> torch.Generator:
        """The same generator on every rank: a function of the seed, the trigger and the salt only."""
        return torch.Generator().manual_seed(zlib.crc32(repr((self.seed, self._trigger_id) + salt).encode()))

    def _check_data(self, keys: torch.Tensor | None) -> None:
        if self.strategy.needs_keys and keys is None:
            raise ValueError(f"{type(self.strategy).__name__} needs store keys per sample: train with a "
                             "lightning_modyn ModynDataModule (its batches carry batch.keys)")

    # ------------------------------------------------------------------ scoring and selecting
    def _score(self, pl_module: L.LightningModule, batch: Any, keys: torch.Tensor | None, n: int) -> ScoringBatch:
        if self.strategy.needs_forward:
            return self.forward(pl_module, batch, self.strategy.needs_embeddings, keys,
                                self.strategy.needs_representations)
        _, y = self.forward.split(batch)
        return ScoringBatch.unscored(n, y, keys, pl_module.device)

    def _select_global(self, trainer: L.Trainer, local: ScoringBatch, valid: torch.Tensor, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor, ScoringBatch]:
        """Gather every rank's scored samples, select ``ratio`` % of the valid ones, return the global positions
        (into the gathered batch), weights, and the gathered batch."""
        scored, valid = _gather(trainer, local, valid)
        candidates = torch.nonzero(valid).flatten()
        pool = scored.subset(candidates)
        positions, weights = self.strategy.select(pool, self.target_size(len(pool)), generator)
        self._record(trainer, pool)
        return candidates[positions.to(candidates.device)], weights.float(), scored

    def _record(self, trainer: L.Trainer, pool: ScoringBatch) -> None:
        scores = self.strategy.last_scores
        if not self.record_scores or scores is None or pool.keys is None:
            return
        self._records.append((pool.keys.cpu().numpy().astype(np.int64), scores.detach().float().cpu().numpy(),
                              trainer.current_epoch))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._records and trainer.is_global_zero:
            folder = self.scores_dir or trainer.default_root_dir
            os.makedirs(folder, exist_ok=True)
            name = SCORES_FILE if self.scores_dir is None else f"scores-trigger-{self._trigger_id:04d}.npz"
            np.savez(os.path.join(folder, name),
                     keys=np.concatenate([r[0] for r in self._records]),
                     scores=np.concatenate([r[1] for r in self._records]),
                     epochs=np.concatenate([np.full(len(r[0]), r[2], np.int64) for r in self._records]),
                     trigger_id=np.int64(self._trigger_id))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.logger is not None and self.stats["scored_samples"]:
            pl_module.log_dict({"downsampling/kept_fraction": self.stats["kept_samples"] / self.stats["scored_samples"],
                                "downsampling/scoring_seconds": self.stats["scoring_seconds"]}, rank_zero_only=True)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.state_dict(), "stats": dict(self.stats), "fits": self._fits}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strategy.load_state_dict(state["strategy"])
        self.stats.update(state["stats"])
        self._fits = state["fits"]


class BatchThenSample(_Downsampling):
    """Score each training batch and train on ``ratio`` % of it (an unchanged ``training_step`` keeps working).

    Cost per batch of ``B`` samples, in units of one training forward pass over one sample: the scoring pass is a
    no-grad forward over ``B`` (about ``B`` units or less: no graph is kept), then the training step runs forward
    and backward on ``ratio·B`` (about ``3·ratio·B``). Full training costs about ``3·B``, so at ratio 25 % a batch
    costs ~58 % of a full one. Strategies that need gradients use the last layer's closed form, so scoring never
    runs a backward pass; a second forward over the kept samples is needed only because ``training_step`` is
    unchanged (it builds its own graph). Use a batch size ``100/ratio`` times the one you would train with.

    Args:
        strategy: A :class:`DownsamplingStrategy` or its name (see ``lightning_modyn.selection.downsampling``).
        ratio: Percentage of every batch to keep, in (0, 100].
        loss: What the scores measure: ``"auto"`` (cross-entropy for several outputs, BCE for one), a name
            (``"cross_entropy"``, ``"binary_cross_entropy"``, ``"mse"``), or a per-sample loss function
            ``loss(logits, targets) -> (N,)`` — in a recipe by import path (``mypackage.losses.focal``) or as a
            ``class_path`` of a callable class. Gradient-based strategies differentiate it with respect to the
            outputs by autograd.
        last_layer: The model's last layer, whose input gives last-layer gradients (found automatically if None).
        seed: Selection seed (draws are a function of seed, trigger and step only — the same on every rank).
        record_scores: Keep every scored key and its score; written at the end of the fit as ``npz``.
        scores_dir: Where to write the scores (default: the Trainer's ``default_root_dir``).
        embedding_layer: The module whose output embedding-based strategies (k-center, coresets on
            ``"embeddings"``) compare samples by, e.g. ``"backbone.fc1"``; None: the model's ``embed()`` if it
            defines one, else the input of the last layer (logged once).

    Example::

        trainer = L.Trainer(callbacks=[BatchThenSample("loss", ratio=25)])
        trainer.fit(model, datamodule)   # training_step unchanged
    """

    def __init__(self, strategy: DownsamplingStrategy | str, ratio: float, loss: LossSpec = "auto",
                 last_layer: str | None = None, seed: int = 0, record_scores: bool = True,
                 scores_dir: str | None = None, embedding_layer: str | None = None) -> None:
        super().__init__(strategy, ratio, loss, last_layer, seed, record_scores, scores_dir, embedding_layer)
        _warn_if_rs2_is_uniform(self.strategy, "BatchThenSample selects once from every batch",
                                "SampleThenBatch(period=1)")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.strategy.setup(self._context(trainer, pl_module, getattr(trainer.datamodule, "batch_size", 256)))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        t0 = time.perf_counter()
        keys = batch_keys(batch)
        self._check_data(keys)
        n = _batch_size(batch, keys)
        valid = (batch.weights > 0) if isinstance(batch, KeyedBatch) else torch.ones(n, dtype=torch.bool,
                                                                                       device=pl_module.device)
        local = self._score(pl_module, batch, keys, n)
        generator = self._generator(trainer.global_step, batch_idx)
        positions, weights, gathered = self._select_global(trainer, local, valid.to(local.losses.device), generator)
        offset = trainer.global_rank * (len(gathered) // max(trainer.world_size, 1))
        mine = (positions >= offset) & (positions < offset + n)
        local_pos, local_w = positions[mine] - offset, weights[mine]
        self._step_without_samples = len(local_pos) == 0
        if self._step_without_samples:
            # Other ranks hold every chosen sample (or this rank's batch is all DDP padding). The rank must still
            # take the step (DDP reduces gradients across ranks), so it runs its training step on one row, with
            # weight 0, and on_before_backward zeroes the gradient that flows back from its loss: whatever the
            # step does with the weights, this rank adds nothing to the update.
            local_pos = torch.zeros(1, dtype=torch.long, device=positions.device)
            local_w = torch.zeros(1, device=weights.device)
        local_pos = local_pos.to(pl_module.device)
        take_rows_in_place(batch, local_pos, n)
        if isinstance(batch, KeyedBatch):
            batch.keys = batch.keys[local_pos.to(batch.keys.device)]
            batch.weights = batch.weights[local_pos.to(batch.weights.device)] * local_w.to(batch.weights.device)
        set_batch_weights(batch, local_w.to(pl_module.device))
        self._step_weights = None if self._step_without_samples else local_w
        self.stats["scored_samples"] += int(valid.sum())
        self.stats["kept_samples"] += 0 if self._step_without_samples else len(local_pos)
        self.stats["steps_without_samples"] += int(self._step_without_samples)
        self.stats["scoring_seconds"] += time.perf_counter() - t0

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if self._step_without_samples:  # seed this rank's backward pass with 0: every gradient it adds is 0
            loss.register_hook(torch.zeros_like)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._check_weights_applied(batch, self._step_weights)
        self._step_without_samples = False
        self._step_weights = None


class SampleThenBatch(_Downsampling):
    """Score the whole training set every ``period`` epochs and train on ``ratio`` % of it.

    Needs a :class:`~lightning_modyn.data.ModynDataModule`: the subset goes through
    :meth:`~lightning_modyn.data.ModynDataModule.set_training_subset`, so the loader reads only the kept keys
    (and an epoch costs ``ratio`` % of a full one, plus one scoring pass over the training set per period).
    With ``period > 0`` the Trainer must reload its train loader every epoch
    (``reload_dataloaders_every_n_epochs=1``). The subset is part of the callback's state, so a fit resumed from a
    mid-epoch checkpoint continues on the same subset.

    Args:
        strategy, ratio, loss, last_layer, seed, record_scores, scores_dir, embedding_layer: As for
            :class:`BatchThenSample`.
        period: Select again every ``period`` epochs; 0 selects once per fit.
        batch_size: Samples per scoring batch (default: the DataModule's ``val_batch_size``).
    """

    def __init__(self, strategy: DownsamplingStrategy | str, ratio: float, period: int = 1,
                 loss: LossSpec = "auto", last_layer: str | None = None, seed: int = 0, batch_size: int | None = None,
                 record_scores: bool = True, scores_dir: str | None = None,
                 embedding_layer: str | None = None) -> None:
        super().__init__(strategy, ratio, loss, last_layer, seed, record_scores, scores_dir, embedding_layer)
        check_int("period", period, 0, hint="(0: select once per fit)")
        if period == 0:
            _warn_if_rs2_is_uniform(self.strategy, "SampleThenBatch(period=0) selects once per fit", "period=1")
        if batch_size is not None:
            check_int("batch_size", batch_size, 1)
        self.period = period
        self.batch_size = batch_size
        self._subset: tuple[np.ndarray, np.ndarray] | None = None
        self._restored = False

    def _datamodule(self, trainer: L.Trainer):
        from lightning_modyn.data import ModynDataModule

        dm = trainer.datamodule
        if not isinstance(dm, ModynDataModule):
            raise ValueError("SampleThenBatch selects keys through a lightning_modyn ModynDataModule; "
                             f"this fit's datamodule is {type(dm).__name__ if dm is not None else 'None'}. "
                             "Use BatchThenSample for other data")
        if dm.training_set is None:
            raise ValueError("SampleThenBatch needs a training set: call set_training_set(keys) first")
        return dm

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = self._datamodule(trainer)
        if self.period > 0 and trainer.reload_dataloaders_every_n_epochs != 1 and trainer.max_epochs != 1:
            raise ValueError(f"SampleThenBatch(period={self.period}) changes the training subset between epochs, "
                             "which the Trainer only picks up with Trainer(reload_dataloaders_every_n_epochs=1); "
                             "set it, or use period=0 to select once per fit")
        context = self._context(trainer, pl_module, self.batch_size or dm.val_batch_size)
        self.strategy.setup(context)
        if self._restored and self._subset is not None:  # resuming: keep the subset the checkpoint trained on
            self._restored = False
        else:
            self._subset = self._select(trainer, pl_module, context)
        dm.set_training_subset(*self._subset)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # the subset's weights ride on the DataModule's batches; note whether the training step reads them
        self._step_weights = None
        if isinstance(batch, KeyedBatch):
            self._step_weights = batch.weights
            batch.weights_read = False  # our own read does not count

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._check_weights_applied(batch, self._step_weights)
        self._step_weights = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        next_epoch = trainer.current_epoch + 1
        if self.period == 0 or next_epoch % self.period or trainer.should_stop:
            return
        if trainer.max_epochs is not None and trainer.max_epochs >= 0 and next_epoch >= trainer.max_epochs:
            return
        dm = self._datamodule(trainer)
        context = self._context(trainer, pl_module, self.batch_size or dm.val_batch_size)
        self._subset = self._select(trainer, pl_module, context, next_epoch)
        dm.set_training_subset(*self._subset)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if stage == "fit" and hasattr(dm, "clear_training_subset"):
            dm.clear_training_subset()

    def _select(self, trainer: L.Trainer, pl_module: L.LightningModule, context: SelectionContext,
                epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        keys, weights = context.training_set()
        world, rank = max(trainer.world_size, 1), trainer.global_rank
        per_rank = -(-len(keys) // world)
        mine = keys[rank * per_rank : (rank + 1) * per_rank]
        if self.strategy.needs_forward:
            local = context.score_keys(mine, embeddings=self.strategy.needs_embeddings,
                                       representations=self.strategy.needs_representations)
        else:
            local = ScoringBatch.unscored(len(mine), keys=torch.as_tensor(mine, device=pl_module.device),
                                          device=pl_module.device)
        local = _pad(local, per_rank)
        valid = torch.arange(per_rank, device=local.losses.device) < len(mine)
        positions, w, _ = self._select_global(trainer, local, valid, self._generator(epoch))
        positions = positions.cpu().numpy()
        # gathered position p is sample rank*per_rank + i = p of the training set (the padding is never chosen)
        subset = keys[positions], (weights[positions] * w.cpu().numpy()).astype(np.float32)
        self.stats["scored_samples"] += len(keys)
        self.stats["kept_samples"] += len(positions)
        self.stats["scoring_seconds"] += time.perf_counter() - t0
        return subset

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._subset is not None:
            state["subset"] = {"keys": self._subset[0].tolist(), "weights": self._subset[1].tolist()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "subset" in state:
            self._subset = (np.asarray(state["subset"]["keys"], np.int64),
                            np.asarray(state["subset"]["weights"], np.float32))
            self._restored = True


# ---------------------------------------------------------------------- helpers
def _batch_size(batch: Any, keys: torch.Tensor | None) -> int:
    if keys is not None:
        return len(keys)
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    while isinstance(first, dict):
        first = next(iter(first.values()))
    return len(first)


def take_rows_in_place(obj: Any, index: torch.Tensor, n: int) -> None:
    """Keep only the rows ``index`` of every tensor (and list) with ``n`` rows inside ``obj``, in place.

    The Trainer hands the same batch object to ``on_train_batch_start`` and then to ``training_step``; changing
    its tensors in place is how a callback can shrink the batch an unchanged ``training_step`` sees.

    >>> x, y = torch.arange(6).reshape(3, 2), torch.tensor([7, 8, 9])
    >>> take_rows_in_place((x, {"y": y}), torch.tensor([2, 0]), 3)
    >>> x.tolist(), y.tolist()
    ([[4, 5], [0, 1]], [9, 7])
    """
    if isinstance(obj, torch.Tensor):
        if obj.ndim and obj.shape[0] == n:
            with torch.no_grad():
                obj.set_(obj[index.to(obj.device)].contiguous())
        return
    if isinstance(obj, dict):
        for value in obj.values():
            take_rows_in_place(value, index, n)
        return
    if isinstance(obj, list):
        if len(obj) == n and not any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in obj):
            obj[:] = [obj[i] for i in index.tolist()]
        else:
            for value in obj:
                take_rows_in_place(value, index, n)
        return
    if isinstance(obj, tuple):
        if len(obj) == n and n > 1 and not any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in obj):
            raise TypeError("BatchThenSample cannot shrink a tuple of per-sample values in place; return a list "
                            "or a tensor for them from your collate/decode function")
        for value in obj:
            take_rows_in_place(value, index, n)
        return
    if isinstance(obj, np.ndarray) and obj.ndim and obj.shape[0] == n:
        raise TypeError("BatchThenSample cannot shrink a numpy array in place; convert batches to tensors")


def _pad(batch: ScoringBatch, size: int) -> ScoringBatch:
    """Extend with zero rows to ``size`` samples (every rank must gather the same shape)."""
    missing = size - len(batch)
    if missing <= 0:
        return batch
    fill = batch.subset(torch.zeros(missing, dtype=torch.long, device=batch.losses.device)) if len(batch) else None
    if fill is None:
        raise ValueError("a rank has no samples to score; the training set is smaller than the number of ranks")
    return ScoringBatch.cat([batch, fill])


def _gather(trainer: L.Trainer, batch: ScoringBatch, valid: torch.Tensor) -> tuple[ScoringBatch, torch.Tensor]:
    """Every rank's samples, rank 0's first; the identity on one process."""
    if trainer.world_size <= 1:
        return batch, valid
    strategy = trainer.strategy
    sizes = strategy.all_gather(torch.tensor([len(batch)], device=batch.losses.device)).flatten()
    size = int(sizes.max())
    batch, valid = _pad(batch, size), torch.cat([valid, valid.new_zeros(size - len(valid))])

    def gather(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else strategy.all_gather(t).reshape((-1,) + tuple(t.shape[1:]))

    gathered = ScoringBatch(gather(batch.logits), gather(batch.targets), gather(batch.losses), batch.loss,
                            gather(batch.embeddings), gather(batch.keys), gather(batch.representations))
    return gathered, gather(valid).bool()


def _warn_if_rs2_is_uniform(strategy: DownsamplingStrategy, why: str, instead: str) -> None:
    """RS2's point is a fresh subset of the *same* training set at every selection; where it selects once per set,
    it draws exactly what :class:`~.uniform.Uniform` draws, which a user choosing RS2 should hear."""
    from lightning_modyn.selection.downsampling.rs2 import RS2

    if isinstance(strategy, RS2):
        rank_zero_warn(f"RS2 here is Uniform: {why}, so no set is ever drawn from twice and RS2 never moves on to "
                       f"samples it has not shown yet. Use {instead} for a fresh subset every epoch, or name "
                       "Uniform to say what this does", category=UserWarning)
