"""ModynDataModule under strategy="ddp" with 2 CPU processes (gloo): disjoint ranks, equal batches, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lightning_modyn import SampleStore
from lightning_modyn.datasets import synthetic_criteo_rows

SCRIPT = os.path.join(os.path.dirname(__file__), "ddp_fit.py")


def run(url: str, out: str, mode: str, ckpt: str | None = None, worker_mode: str | None = None,
        num_workers: int = 0) -> dict[int, dict]:
    """ddp_fit.py's fit; with ``worker_mode``, on a DataModule of that worker mode and ``num_workers`` (this file
    runs ddp_fit.py then, see the end of it)."""
    os.makedirs(out, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    script = SCRIPT
    if worker_mode is not None:
        script = os.path.abspath(__file__)
        env.update({"DDP_FIT_WORKER_MODE": worker_mode, "DDP_FIT_NUM_WORKERS": str(num_workers)})
    result = subprocess.run([sys.executable, script, url, out, mode] + ([ckpt] if ckpt else []),
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return {r: json.load(open(os.path.join(out, f"rank{r}.json"))) for r in (0, 1)}


@pytest.mark.slow
@pytest.mark.parametrize("worker_mode, num_workers", [(None, 0), ("process", 1), ("thread", 2)],
                         ids=["defaults", "process-1", "thread-2"])
def test_ddp_ranks_are_disjoint_even_and_resumable(tmp_path, worker_mode, num_workers):
    store = SampleStore.create(tmp_path / "clicks")
    keys = store.append_records(synthetic_criteo_rows(1001, seed=2), labels="label")
    assert keys.tolist() == list(range(1001))
    store.close()
    url = str(tmp_path / "clicks")

    options = {"worker_mode": worker_mode, "num_workers": num_workers}
    full = run(url, str(tmp_path / "full"), "full", **options)
    assert full[0]["world"] == 2
    per_rank = {r: full[r]["batches"] for r in (0, 1)}
    assert len(per_rank[0]) == len(per_rank[1]) == 2 * 8  # ceil(1001 / 2) = 501 samples -> 8 batches of 64
    for epoch in (0, 1):
        real, pad = [], []
        for r in (0, 1):
            for b in per_rank[r]:
                if b["epoch"] == epoch:
                    real += [k for k, w in zip(b["keys"], b["weights"]) if w > 0]
                    pad += [k for k, w in zip(b["keys"], b["weights"]) if w == 0]
        assert sorted(real) == list(range(1001))  # ranks disjoint, union = training set
        assert len(pad) == 1  # one padding sample makes 1001 split evenly, with weight 0

    stopped = run(url, str(tmp_path / "stop"), "stop", **options)
    ckpt = tmp_path / "stop" / "ckpt" / "epoch=1-step=12.ckpt"
    assert ckpt.exists(), os.listdir(tmp_path / "stop" / "ckpt")
    resumed = run(url, str(tmp_path / "resume"), "resume", str(ckpt), **options)
    for r in (0, 1):
        first = [b["keys"] for b in stopped[r]["batches"]][:12]
        rest = [b["keys"] for b in resumed[r]["batches"]]
        assert first + rest == [b["keys"] for b in per_rank[r]], f"rank {r} differs after resuming"


if __name__ == "__main__":
    # ``python test_datamodule_ddp.py <ddp_fit.py's arguments>`` with DDP_FIT_WORKER_MODE and DDP_FIT_NUM_WORKERS
    # set: ddp_fit.py's fit on a ModynDataModule of that worker mode and number of workers. Lightning starts rank 1
    # with this file's command line and environment, so it runs the same.
    import runpy

    import lightning_modyn

    worker_mode, num_workers = os.environ["DDP_FIT_WORKER_MODE"], int(os.environ["DDP_FIT_NUM_WORKERS"])

    class ConfiguredDataModule(lightning_modyn.ModynDataModule):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, worker_mode=worker_mode, num_workers=num_workers,
                             persistent_workers=num_workers > 0, **kwargs)

    lightning_modyn.ModynDataModule = ConfiguredDataModule  # what ddp_fit.py imports
    runpy.run_path(SCRIPT, run_name="__main__")
