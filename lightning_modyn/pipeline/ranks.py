"""How the ranks of a multi-process strategy share one continual loop.

Only rank 0 replays the stream and decides (trigger, selection). Its decision for a fit, a :class:`FitPlan`, is
broadcast inside the fit by the :class:`SharePlan` callback and every rank trains on it. Ranks whose processes
outlive a fit (``strategy="ddp"``, torchrun, SLURM) wait between fits for rank 0's next :class:`LeaderWord`; under
``ddp_spawn`` the loop stays in the main process and each fit spawns its workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch


@dataclass
class FitPlan:
    """What one fit trains: rank 0's decision, the same on every rank once broadcast."""

    trigger_id: int
    seed: int
    keys: np.ndarray
    weights: np.ndarray


@dataclass
class LeaderWord:
    """Rank 0's word to the following ranks between two fits: ``"fit"`` again, ``"done"`` (with the run's
    result) or ``"abort"`` (rank 0 failed outside a fit)."""

    what: str
    trigger_id: int | None = None
    triggers: list[dict[str, Any]] = field(default_factory=list)
    stream_samples: int = 0
    error: str = ""


class SharePlan(L.Callback):
    """Broadcasts rank 0's :class:`FitPlan` at the start of a fit; the other ranks adopt it.

    ``setup`` is the first callback hook that runs with the process group up (the strategy creates it in
    ``setup_environment``) and it runs before the train loader is built (``fit_loop.setup_data``), so a rank that
    joined at this fit without having seen the stream (``strategy="ddp"`` re-executes the script for ranks > 0)
    still trains on exactly what rank 0 chose. Every rank seeds here, at the same point of the fit.
    """

    def __init__(self, plan: FitPlan | None) -> None:
        self.plan = plan

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        plan = trainer.strategy.broadcast(self.plan, src=0)
        if plan is None:
            raise RuntimeError("a ContinualLoop fit started without rank 0's plan: rank 0 must run the loop too")
        if trainer.global_rank > 0:
            # inside the fit's setup, before the train loader is built: this rank trains on rank 0's choice
            trainer.datamodule.set_training_set(plan.keys, plan.weights)
            trainer.datamodule.trigger_id = plan.trigger_id
        self.plan = plan
        L.seed_everything(plan.seed, workers=True, verbose=False)


def keeps_process_group(trainer: L.Trainer) -> bool:
    """Whether this process stays in a process group with other ranks after a fit (``ddp``, torchrun, SLURM), as
    opposed to one process alone (single device) or the main process of ``ddp_spawn`` (its workers are gone)."""
    return trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
