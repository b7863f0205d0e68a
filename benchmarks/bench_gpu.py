"""Issue 3's GPU variant: selected Criteo-format rows delivered to a GPU training step, per second.

Loaders feed pinned batches that are moved to the device (``non_blocking``) and, with ``--step dlrm`` (default),
each batch drives one forward/backward/Adam step of :class:`lightning_modyn.models.TinyDLRM`:

* ``step``: the step alone on one batch already on the device — what the GPU eats, the ceiling of every loader;
* ``a``: contiguous chunks of the same rows from a local file (bench_loader's (a)), handed over as (c) is;
* ``c100`` / ``c50`` / ``c10``: ``ModynDataModule`` training on 100 % (shuffled), 50 % and 10 % random subsets.

Target of issue 3: ≥ 1.44 M selected rows/s delivered (with the step) on the 16-core H100/H200 host. The data
(``--rows`` rows, 160 B each) is generated, written to a store and to a flat file under ``--data-dir`` first.

    python benchmarks/bench_gpu.py --device cuda --rows 8000000 --workers 0 4 8 12 --out gpu.json
    python benchmarks/bench_gpu.py --device cpu --rows 200000 --batch 8192 --workers 0 1   # smoke run, no GPU

It needs only torch, lightning, numpy and fsspec besides this repository (on PYTHONPATH): no webdataset.
Prints progress and a markdown table; writes every number to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import RandomSampler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_loader import REPO, ChunkDataset, UnpackingLoader, log, shutdown  # noqa: E402

sys.path.insert(0, REPO)
from lightning_modyn.data import ModynDataModule  # noqa: E402
from lightning_modyn.datasets import synthetic_criteo_rows  # noqa: E402
from lightning_modyn.models import TinyDLRM  # noqa: E402
from lightning_modyn.store import SampleStore  # noqa: E402

TARGET = 1.44e6
FRACTIONS = {"c100": 1.0, "c50": 0.5, "c10": 0.1}


def prepare(data_dir: str, n: int, seed: int) -> dict:
    """Rows as a store of records and as a flat file (for (a)); reused when already there."""
    root = os.path.join(data_dir, f"gpu-rows-{n}-seed{seed}")
    meta_path = os.path.join(root, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as fh:
            return json.load(fh)
    os.makedirs(root, exist_ok=True)
    t = time.perf_counter()
    rows = synthetic_criteo_rows(n, seed=seed)
    rows.tofile(os.path.join(root, "rows.bin"))
    store = SampleStore.create(os.path.join(root, "store"))
    keys = store.append_records(rows, labels="label")
    store.close()
    meta = {"n": n, "first_key": int(keys[0]), "bin": os.path.join(root, "rows.bin"),
            "store": os.path.join(root, "store")}
    with open(meta_path, "w") as fh:
        json.dump(meta, fh)
    log(f"generated and stored {n:,} rows in {time.perf_counter() - t:.1f}s")
    return meta


class Step:
    """One TinyDLRM training step on a batch already on the device (or nothing, with ``kind="none"``)."""

    def __init__(self, kind: str, device: torch.device) -> None:
        self.kind = kind
        self.model = TinyDLRM().to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def __call__(self, x: dict, y: torch.Tensor) -> None:
        if self.kind == "none":
            return
        loss = F.binary_cross_entropy_with_logits(self.model(x).squeeze(1), y.float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(batch, device: torch.device) -> tuple[dict, torch.Tensor]:
    x, y = batch[0], batch[1]
    return {k: v.to(device, non_blocking=True) for k, v in x.items()}, y.to(device, non_blocking=True)


def time_epoch(loader, step: Step, device: torch.device, max_batches: int | None) -> dict:
    """Rows/s from the end of the first batch (worker start-up excluded) to the end of the last step."""
    rows, t0, first_s, start = 0, None, None, time.perf_counter()
    for i, batch in enumerate(loader):
        x, y = to_device(batch, device)
        step(x, y)
        if t0 is None:
            sync(device)
            t0 = time.perf_counter()
            first_s = t0 - start
        else:
            rows += len(y)
        if max_batches and i + 1 >= max_batches:
            break
    sync(device)
    seconds = time.perf_counter() - (t0 or start)
    return {"rows": rows, "seconds": seconds, "rate": rows / seconds if seconds and rows else None,
            "first_batch_s": first_s}


def step_ceiling(step: Step, meta: dict, batch: int, device: torch.device, repeats: int) -> float:
    """Rows/s of the step alone, on one batch that stays on the device."""
    ds = ChunkDataset("rows", meta, batch)
    x, y = to_device(ds[0], device)
    for _ in range(3):
        step(x, y)
    sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        step(x, y)
    sync(device)
    return repeats * len(y) / (time.perf_counter() - t)


def loaders_for(meta: dict, batch: int, workers: int, pin: bool, seed: int) -> tuple[dict, ModynDataModule]:
    ds = ChunkDataset("rows", meta, batch, keyed=True, packed=True)
    gen = torch.Generator()
    gen.manual_seed(seed)
    out = {"a": UnpackingLoader(ds, batch_size=None, sampler=RandomSampler(ds, generator=gen), num_workers=workers,
                                persistent_workers=workers > 0, pin_memory=pin)}
    dm = ModynDataModule(meta["store"], batch_size=batch, num_workers=workers, seed=seed, pin_memory=pin,
                         persistent_workers=workers > 0)
    keys = np.arange(meta["first_key"], meta["first_key"] + meta["n"], dtype=np.int64)
    rng = np.random.default_rng(seed + 1)
    for name, frac in FRACTIONS.items():
        dm.set_training_set(keys if frac == 1.0 else np.sort(rng.choice(keys, int(frac * len(keys)), replace=False)))
        out[name] = dm.train_dataloader()
    return out, dm


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--batch", type=int, default=65536)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8, 12])
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per loader (after one warm-up)")
    parser.add_argument("--max-batches", type=int, default=None, help="cap every epoch at this many batches")
    parser.add_argument("--step", choices=["dlrm", "none"], default="dlrm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.path.join(REPO, "benchmarks", "_work", "gpu_data"))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "_work", "gpu.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    pin = device.type == "cuda"
    meta = prepare(args.data_dir, args.rows, args.seed)
    step = Step(args.step, device)
    ceiling = step_ceiling(step, meta, args.batch, device, 20) if args.step != "none" else None
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "device": torch.cuda.get_device_name(device) if pin else platform.processor() or "cpu"}
    log(f"{env}; step alone: {ceiling or 0:,.0f} rows/s")
    results: dict = {}
    for w in args.workers:
        loaders, dm = loaders_for(meta, args.batch, w, pin, args.seed)
        for name, loader in loaders.items():
            time_epoch(loader, step, device, args.max_batches)  # warm-up: page cache, workers, CUDA
        runs = {name: [] for name in loaders}
        for epoch in range(1, args.epochs + 1):
            for name, loader in loaders.items():  # loaders take turns, epoch by epoch
                if hasattr(loader.sampler, "set_epoch"):
                    loader.sampler.set_epoch(epoch)
                r = time_epoch(loader, step, device, args.max_batches)
                runs[name].append(r)
                log(f"w={w} epoch {epoch} {name}: {r['rows']:,} rows in {r['seconds']:.2f}s ({r['rate'] or 0:,.0f}/s)")
        for loader in loaders.values():
            shutdown(loader)
        dm.store.close()
        results[f"w{w}"] = {name: {"rate": statistics.median(r["rate"] for r in rs), "epochs": rs}
                            for name, rs in runs.items()}
    lines = [f"GPU variant on {env['device']} ({env['cpus']} CPUs), batch {args.batch:,}, {args.rows:,} rows, "
             f"step {args.step}" + (f" (alone: {ceiling / 1e6:.2f} M rows/s)" if ceiling else "") + "; rows/s:", "",
             "| loader | " + " | ".join(f"num_workers={w}" for w in args.workers) + " |",
             "|---|" + "---:|" * len(args.workers)]
    for name in ("a", *FRACTIONS):
        cells = [results[f"w{w}"][name]["rate"] for w in args.workers]
        lines.append(f"| {name} | " + " | ".join(f"{c / 1e6:.2f} M" if c else "—" for c in cells) + " |")
    best = max(results[f"w{w}"]["c100"]["rate"] or 0 for w in args.workers)
    verdict = ("met" if best >= TARGET else "missed") if pin and args.step == "dlrm" else \
        "not judged (it holds for --step dlrm on a GPU)"
    lines += ["", f"best (c, 100 %): {best / 1e6:.2f} M rows/s; target ≥ {TARGET / 1e6:.2f} M: {verdict}"]
    print("\n".join(lines))
    out = {"args": vars(args), "environment": env, "step_alone": ceiling, "results": results, "table": lines}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
