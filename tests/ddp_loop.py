"""Run by tests/test_loop_ddp.py: a ContinualLoop, or the same fits by hand, on 2 CPU processes (gloo).

Usage: python ddp_loop.py STORE_URL OUT_DIR STRATEGY [--triggers N] [--crash-after I] [--known]; a
``ContinualLoop`` with ``strategy="ddp"`` (Lightning re-executes this script for rank 1 at the first fit) or
``"ddp_spawn"`` (the loop stays in this process, each fit spawns 2 workers).

``--triggers N`` replays the first ``300 N`` samples only (N triggers); ``--crash-after I`` makes rank 0's trigger
raise ``KeyboardInterrupt`` once model I is trained (outside a fit, as a killed run); ``--known`` (ddp only) then
runs, in the same processes, plain DDP fits on rank 0's plan known in advance, recorded under ``OUT_DIR/known``
(the reference: starting 2 more processes costs more than the fits).

The trigger and the selection decide differently on every rank (they read the rank from ``LOCAL_RANK``): a rank that
decided for itself would train another plan than rank 0's, or a different number of times. Every fit appends the
rank, trigger id, keys and weights it trained on to ``OUT_DIR/fits-rank{r}.jsonl`` and saves the rank's final weights
to ``OUT_DIR/weights/rank{r}-trigger{i}.pt``; each process that ran the loop writes its ``RunResult`` to
``OUT_DIR/result-rank{r}.json``.
"""

import argparse
import json
import os

import lightning as L
import numpy as np
import torch
from test_pipeline import Classifier  # the same plain Lightning module (this script runs from tests/)

from lightning_modyn import ModynDataModule
from lightning_modyn.evaluation import Evaluation
from lightning_modyn.pipeline import ContinualLoop
from lightning_modyn.selection import SelectionPolicy
from lightning_modyn.triggers import DataAmountTrigger

EVERY = 300  # rank 0's trigger: every 300 samples of the 1200-sample stream -> 4 triggers
SEED = 0


def rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def weights_of(trigger_id: int, rank: int, n: int) -> np.ndarray:
    """The selection's weights for a trigger as decided on ``rank``."""
    return np.random.default_rng([7, trigger_id, rank]).uniform(0.5, 2.0, n).astype(np.float32)


class RankSaltedAmount(DataAmountTrigger):
    """Fires every 300 samples on rank 0, every 250 elsewhere; optionally "crashes" once model ``crash_after`` is in."""

    def __init__(self, crash_after: int | None = None) -> None:
        super().__init__(EVERY if rank() == 0 else EVERY - 50)
        self.crash_after = crash_after

    def inform_new_model(self, model_id, trained_keys, train_seconds):
        if model_id == self.crash_after:
            raise KeyboardInterrupt("simulated crash")


class RankSaltedWeights(SelectionPolicy):
    """The data since the last trigger, with weights that depend on the deciding rank."""

    def select(self, history, store):
        keys = history.intervals[-1]
        return keys, weights_of(history.trigger_id, rank(), len(keys))


class Record(L.Callback):
    """What each rank trained on (after the train loader is built) and the weights it ended the fit with."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_start(self, trainer, pl_module):
        keys, weights = trainer.datamodule.training_set
        self.fit = {"rank": trainer.global_rank, "world": trainer.world_size,
                    "trigger_id": trainer.datamodule.trigger_id, "keys": keys.tolist(), "weights": weights.tolist()}

    def on_fit_end(self, trainer, pl_module):
        r, i = trainer.global_rank, self.fit["trigger_id"]
        torch.save(pl_module.state_dict(), os.path.join(self.out, "weights", f"rank{r}-trigger{i}.pt"))
        with open(os.path.join(self.out, f"fits-rank{r}.jsonl"), "a") as handle:
            handle.write(json.dumps(self.fit) + "\n")


def trainer_args(out: str, strategy: str) -> dict:
    return {"accelerator": "cpu", "devices": 2, "strategy": strategy, "max_epochs": 2, "logger": False,
            "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
            "callbacks": [Record(out)]}


def run_loop(url: str, out: str, strategy: str, triggers: int, crash_after: int | None) -> None:
    torch.manual_seed(SEED)
    loop = ContinualLoop(Classifier(), ModynDataModule(url, batch_size=50, seed=0), RankSaltedAmount(crash_after),
                         selection=RankSaltedWeights(), trainer=trainer_args(out, strategy),
                         output_dir=os.path.join(out, "run"), end=EVERY * triggers, chunk_size=128, seed=SEED,
                         evaluation=Evaluation(every=EVERY, plots=False))
    result = loop.run()
    with open(os.path.join(out, f"result-rank{loop.global_rank}.json"), "w") as handle:
        json.dump({"triggers": result.triggers, "stream_samples": result.stream_samples,
                   "has_evaluation": result.evaluation is not None}, handle)


def run_known(url: str, out: str, triggers: int) -> None:
    """Rank 0's decisions, known in advance: trigger i trains on stream positions [300 i, 300 (i + 1))."""
    os.makedirs(os.path.join(out, "weights"), exist_ok=True)
    dm = ModynDataModule(url, batch_size=50, seed=0)
    stream = dm.store.time_range(None, None)
    keys = stream.keys[np.lexsort((stream.keys, stream.timestamps))]
    torch.manual_seed(SEED)
    model = Classifier()
    for i in range(triggers):
        part = keys[i * EVERY:(i + 1) * EVERY]
        dm.set_training_set(part, weights_of(i, 0, len(part)))
        dm.trigger_id = i
        L.seed_everything(SEED + i, workers=True, verbose=False)
        L.Trainer(**trainer_args(out, "ddp")).fit(model, datamodule=dm)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("strategy", choices=["ddp", "ddp_spawn"])
    parser.add_argument("--triggers", type=int, default=4)
    parser.add_argument("--crash-after", type=int, default=None)
    parser.add_argument("--known", action="store_true")
    args = parser.parse_args()
    os.makedirs(os.path.join(args.out, "weights"), exist_ok=True)
    run_loop(args.url, args.out, args.strategy, args.triggers, args.crash_after)
    if args.known:
        run_known(args.url, os.path.join(args.out, "known"), args.triggers)
