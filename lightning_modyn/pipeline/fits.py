"""``FitTrainers``: a fresh ``Trainer`` for every fit of a continual loop, from the user's Trainer arguments, where
each fit logs under a version of its own and checkpoints into a folder of its own.

A Trainer, its loggers and its ``ModelCheckpoint`` callbacks keep state from the fit they ran (a logger's version
and step count, a checkpoint callback's folder and best scores), so sharing them across fits would write every fit
into one ``version_0`` with the steps restarting at 0, and checkpoints as anonymous ``-v1``, ``-v2`` files that
compete for ``save_top_k`` across models. Each fit therefore gets copies of the loggers and checkpoint callbacks
as the user configured them (before any fit): a logger picks the next free version (``version_0`` for the first
fit, ...) and records the fit's ``trigger_id`` among its hyperparameters; checkpoints go to that version's folder,
or to ``<dirpath>/trigger-NNNN`` when the callback names a ``dirpath``. Other callbacks (selection callbacks that
learn across fits) are shared by every fit.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from lightning_modyn.data import batch_keys, batch_weights

_QUIET = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
"""The loop's defaults where the user's arguments say nothing: one fit per trigger would repeat each of these."""


class TriggerIdInLogs(L.Callback):
    """Records which trigger a fit trained for among every logger's hyperparameters (``trigger_id``)."""

    def __init__(self, trigger_id: int) -> None:
        self.trigger_id = trigger_id

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_hyperparams({"trigger_id": self.trigger_id})


class TrainedSamples(L.Callback):
    """What a fit's training steps received, on every rank together: ``count``, the distinct samples of the fit's
    training set that reached a step with a weight above 0, and ``passes``, the rows with a weight above 0 over all
    steps (a sample trained in 10 epochs counts 10 times: the fit's training work). A loop records them per trigger
    as ``samples_trained`` and ``sample_passes``, beside ``samples_selected`` (the set the selection policy chose).

    ``count`` is below the selected set when a downsampling callback keeps one share for the whole fit
    (``SampleThenBatch(period=0)``) or ``limit_train_batches`` cuts epochs short; a callback that draws anew every
    epoch or batch reaches more of the set as epochs go by, and ``passes`` shows what it saved. Counting stays on the
    batches' device (an int32 mask over the training set, no host sync per step). Both stay None when no training
    batch carried store keys, and where the fit ran in processes of its own (``ddp_spawn``): then the loop records
    the selected set's size."""

    def __init__(self) -> None:
        self._sorted = torch.zeros(0, dtype=torch.long)
        self._trained = torch.zeros(0, dtype=torch.int32)
        self._passes = torch.zeros((), dtype=torch.long)
        self._keyed = False
        self.count: int | None = None
        self.passes: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # a fit that skips training (limit_train_batches=0) trained nothing
            self.count, self.passes, self._keyed = 0, 0, False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the training set as this rank knows it once the fit is set up (ranks > 0 learn it in SharePlan.setup)
        chosen = getattr(trainer.datamodule, "training_set", None)
        keys = np.sort(np.asarray(chosen[0], np.int64)) if chosen is not None else np.zeros(0, np.int64)
        self._sorted = torch.as_tensor(keys, device=pl_module.device)
        self._trained = torch.zeros(len(keys), dtype=torch.int32, device=pl_module.device)
        self._passes = torch.zeros((), dtype=torch.long, device=pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # on the batch's device, without a host sync per step: a mask update and a running sum
        keys, weights = batch_keys(batch), batch_weights(batch, note=False)  # a look, not the step applying them
        if keys is None:
            return
        self._keyed = True
        keys = keys.to(self._sorted.device)
        trained = (torch.ones(len(keys), dtype=torch.bool, device=keys.device) if weights is None
                   else weights.to(keys.device) > 0)
        self._passes += trained.sum()
        if len(self._sorted):
            at = torch.searchsorted(self._sorted, keys).clamp_(max=len(self._sorted) - 1)
            hit = (self._sorted[at] == keys) & trained
            self._trained.scatter_reduce_(0, at, hit.to(torch.int32), reduce="amax")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trained = self._trained.to(pl_module.device)
        totals = torch.stack([self._passes.to(pl_module.device),
                              torch.tensor(int(self._keyed), device=pl_module.device)])
        if trainer.world_size > 1:  # each rank trained its own part: a sample counts if any rank trained it
            trained = trainer.strategy.reduce(trained, reduce_op="sum")
            totals = trainer.strategy.reduce(totals, reduce_op="sum")
        keyed = int(totals[1]) > 0
        self.count = int((trained > 0).sum()) if keyed else None
        self.passes = int(totals[0]) if keyed else None


class FitTrainers:
    """Makes each fit's Trainer.

    Args:
        trainer: Keyword arguments of ``lightning.Trainer`` (``logger``, ``callbacks``, ``default_root_dir``... as
            for one fit), or a callable returning a fresh Trainer (then it decides everything itself).
        output_dir: The run's folder: fits write under ``<default_root_dir or output_dir/trainer>/trigger-NNNN``.
    """

    def __init__(self, trainer: dict[str, Any] | Callable[[], L.Trainer] | None, output_dir: str) -> None:
        if trainer is not None and not callable(trainer) and not isinstance(trainer, dict):
            raise TypeError(f"trainer must be a dict of lightning.Trainer arguments or a callable returning a "
                            f"Trainer, got {type(trainer).__name__}")
        self.factory = trainer if callable(trainer) else None
        given = dict(trainer or {"max_epochs": 1}) if self.factory is None else {}
        if any(isinstance(c, ModelCheckpoint) for c in _as_list(given.get("callbacks"))):
            given.setdefault("enable_checkpointing", True)  # a ModelCheckpoint given means checkpoints wanted
        args = {**_QUIET, **given}
        self.root = args.pop("default_root_dir", None) or os.path.join(output_dir, "trainer")
        logger = args.pop("logger", None)
        # copies taken before any fit: what each fit starts from
        self.loggers = copy.deepcopy(logger) if isinstance(logger, (Logger, list, tuple)) else logger
        self.callbacks = [copy.deepcopy(c) if isinstance(c, ModelCheckpoint) else c
                          for c in _as_list(args.pop("callbacks", None))]
        self.args = args

    def trainer(self, trigger_id: int | None, *extra_callbacks: L.Callback) -> L.Trainer:
        """A fresh Trainer for the fit of ``trigger_id`` (None: the Trainer that only tells this process's rank),
        with ``extra_callbacks`` first."""
        if self.factory is not None:
            trainer = self.factory()
        else:
            folder = "setup" if trigger_id is None else f"trigger-{trigger_id:04d}"
            callbacks = [self._checkpoint(c, folder) if isinstance(c, ModelCheckpoint) else c for c in self.callbacks]
            if trigger_id is not None:
                callbacks.append(TriggerIdInLogs(trigger_id))
            trainer = L.Trainer(**self.args, default_root_dir=os.path.join(self.root, folder),
                                logger=copy.deepcopy(self.loggers), callbacks=callbacks)
        for callback in reversed(extra_callbacks):
            trainer.callbacks.insert(0, callback)
        return trainer

    @staticmethod
    def _checkpoint(template: ModelCheckpoint, folder: str) -> ModelCheckpoint:
        """A fresh copy of a checkpoint callback: in ``<dirpath>/<folder>`` if it names a folder, else where the
        Trainer puts it (the fit's logger version, or its ``default_root_dir``)."""
        callback = copy.deepcopy(template)
        if callback.dirpath is not None:
            callback.dirpath = os.path.join(callback.dirpath, folder)
        return callback


def _as_list(callbacks: Any) -> list[L.Callback]:
    if not callbacks:
        return []
    return [callbacks] if isinstance(callbacks, L.Callback) else list(callbacks)
