"""Run by tests/test_datamodule_ddp.py: a 2-process CPU DDP (gloo) fit on a ModynDataModule.

Usage: python ddp_fit.py STORE_URL OUT_DIR MODE [CKPT]; MODE is "full", "stop" (max_steps=13, checkpoints every
4 steps) or "resume" (from CKPT). Each rank writes the keys and weights of every batch it trained on.
"""

import json
import os
import sys

import lightning as L
import numpy as np
from test_datamodule import PlainClickModel  # the same plain-Lightning module (this script runs from tests/)

from lightning_modyn import ModynDataModule


class Record(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = out
        self.batches: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append({"keys": batch.keys.tolist(), "weights": batch.weights.tolist(),
                             "epoch": trainer.current_epoch})

    def on_fit_end(self, trainer, pl_module):
        with open(os.path.join(self.out, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"batches": self.batches, "world": trainer.world_size}, f)


if __name__ == "__main__":
    url, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    ckpt = sys.argv[4] if len(sys.argv) > 4 else None
    dm = ModynDataModule(url, batch_size=64, seed=3)
    dm.set_training_set(np.arange(0, 1001, dtype=np.int64), np.linspace(1, 2, 1001))  # 1001: uneven split
    callbacks = [Record(out)]
    if mode == "stop":
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=os.path.join(out, "ckpt"),
                                                             every_n_train_steps=4, save_top_k=-1))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2,
                        max_steps=13 if mode == "stop" else -1, logger=False,
                        enable_checkpointing=mode == "stop", enable_progress_bar=False, enable_model_summary=False,
                        callbacks=callbacks)
    trainer.fit(PlainClickModel(), datamodule=dm, ckpt_path=ckpt)
