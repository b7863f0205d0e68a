"""Run by tests/test_downsampling_ddp.py: downsampling callbacks under a 2-process CPU DDP (gloo) fit.

Usage: python ddp_downsampling.py STORE_URL OUT_DIR. Two fits: sample-then-batch (loss importance sampling, once
per fit) and batch-then-sample (EL2N top-k), then batch-then-sample on 3 keys with batch size 1 (a batch of
DDP padding only). Each rank writes what it selected and trained on.
"""

import json
import os
import sys

import lightning as L
import numpy as np
from test_downsampling import TinyClassifier  # this script runs from tests/

from lightning_modyn import ModynDataModule
from lightning_modyn.selection.downsampling import BatchThenSample, SampleThenBatch


class Spy(L.Callback):
    def __init__(self, selector) -> None:
        self.selector = selector
        self.subset = None
        self.steps: list = []

    def on_train_start(self, trainer, pl_module):
        sub = trainer.datamodule.training_subset
        self.subset = None if sub is None else [sub[0].tolist(), sub[1].tolist()]

    def on_before_backward(self, trainer, pl_module, loss):
        self.seed_grad = None

        def seen(grad):  # runs after the selector's hook: the gradient this rank's backward really starts from
            self.seed_grad = float(grad)
        loss.register_hook(seen)
        self.loss = float(loss)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        keys, scores, _ = self.selector._records[-1]
        self.steps.append({"kept": batch.keys.tolist(), "weights": batch.weights.tolist(),
                           "pool_keys": keys.tolist(), "pool_scores": scores.tolist(), "loss": self.loss,
                           "seed_grad": self.seed_grad, "rows": len(batch.keys)})


def fit(url, callback, keys=301, batch_size=40, **kwargs):
    dm = ModynDataModule(url, batch_size=batch_size, seed=1)
    dm.set_training_set(np.arange(0, keys, dtype=np.int64))  # 301 samples: an uneven split
    spy = Spy(callback)
    model = TinyClassifier()
    kwargs.setdefault("max_epochs", 1)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=os.path.join(sys.argv[2], "fit"), callbacks=[callback, spy], **kwargs)
    trainer.fit(model, datamodule=dm)
    return trainer, spy, model


if __name__ == "__main__":
    url, out = sys.argv[1], sys.argv[2]
    trainer, stb, m1 = fit(url, SampleThenBatch("loss", ratio=50, period=0, seed=5))
    _, bts, m2 = fit(url, BatchThenSample("el2n", ratio=25, seed=5))
    # 3 keys, batch size 1: rank 1's second batch is all DDP padding, and half of the steps leave a rank nothing
    tiny = BatchThenSample("loss", ratio=50, seed=5)
    _, pad, m3 = fit(url, tiny, keys=3, batch_size=1, max_epochs=3)
    result = {"rank": trainer.global_rank, "world": trainer.world_size, "stb_subset": stb.subset,
              "stb_trained": [k for _, ks in m1.seen for k in ks], "bts_steps": bts.steps,
              "padding_steps": pad.steps, "padding_stats": tiny.stats}
    with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump(result, f)
