"""One "node" of tests/test_cluster.py, started by torchrun: a live ContinualLoop under DDP (gloo, CPU) on a store on
S3 with a PostgreSQL catalog, while writer processes append to it.

Usage: torchrun --nnodes 2 --nproc-per-node 1 --node-rank R ... cluster_node.py STORE_URL OPTIONS_JSON OUT_DIR EVERY

Rank 0 watches the store, fires a trigger every EVERY samples and trains on the data since the last trigger; rank 1
follows rank 0 from fit to fit. The watch ends after 6 s without new data. Each rank writes what the loop returned
to ``OUT_DIR/result-rank{r}.json`` and, at every fit, the keys it trained on to ``OUT_DIR/fits-rank{r}.jsonl``.
"""

import json
import os
import sys

import lightning as L
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_pipeline import Classifier, EveryN  # noqa: E402 - the plain module and trigger of the pipeline tests

from lightning_modyn import ModynDataModule, SampleStore  # noqa: E402
from lightning_modyn.pipeline import ContinualLoop  # noqa: E402


class Record(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_start(self, trainer, pl_module):
        keys, _ = trainer.datamodule.training_set
        with open(os.path.join(self.out, f"fits-rank{trainer.global_rank}.jsonl"), "a") as handle:
            handle.write(json.dumps({"trigger_id": trainer.datamodule.trigger_id, "keys": keys.tolist(),
                                     "world": trainer.world_size, "nodes": trainer.num_nodes}) + "\n")


def main() -> None:
    url, options, out, every = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    torch.manual_seed(0)
    store = SampleStore.open(url, readonly=True, storage_options=options)
    trainer = {"accelerator": "cpu", "devices": 1, "num_nodes": 2, "strategy": "ddp", "max_epochs": 1,
               "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
               "enable_model_summary": False, "callbacks": [Record(out)]}
    loop = ContinualLoop(Classifier(), ModynDataModule(store, batch_size=50, seed=0), EveryN(every),
                         trainer=trainer, output_dir=os.path.join(out, "run"), chunk_size=50, progress=False,
                         live=True, poll_seconds=0.2, idle_timeout=6.0)
    result = loop.run()
    with open(os.path.join(out, f"result-rank{loop.global_rank}.json"), "w") as handle:
        json.dump({"triggers": result.triggers, "stream_samples": result.stream_samples}, handle)


if __name__ == "__main__":
    main()
