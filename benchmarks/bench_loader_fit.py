#!/usr/bin/env python
"""Training throughput of a real Lightning fit with each loader path (issue 17): process workers or reader threads.

``bench_loader.py`` times the loaders alone (no training step): there the torchdata thread path
(``train_node(dm, num_workers=w, method="thread")``) delivers about twice the samples/s of the DataModule's process
workers. In a fit the reader threads share the training process (its GIL and the machine's cores) with the
training step; this script measures whether the thread path still keeps up.

Run from the repository root::

    python benchmarks/bench_loader_fit.py --torch-threads 1 --out benchmarks/_work/loader_fit_1thread.json \
        --table benchmarks/_work/loader_fit_1thread.md
    python benchmarks/bench_loader_fit.py --rows 100000 --images 5000 --rounds 1   # quick look (~1 min)

The first is the run in ``docs/data.md`` (~7 min on the busy 2-core VM). ``--torch-threads`` sets torch's
intra-op threads for the training step (default: one per CPU); on that VM, shared with other work, two threads on
two cores made epochs vary eightfold (OpenMP threads waiting on each other), whatever the loader.

Workloads (a fresh model, same initial weights, for every fit):

* ``rows``: ``--rows`` Criteo-format rows (``synthetic_criteo_rows``, 160 B) in a store
  (``append_records(rows, labels="label")``), decoded by ``RecordsToTensors(label_field="label")`` as the recipes
  do, batches of ``--row-batch``; model ``TinyDLRM(num_embeddings=5000, embedding_dim=8, lr=3e-3)`` (the
  synthetic-clicks recipe's).
* ``images``: ``--images`` random 32x32x3 uint8 images (3 KiB, as in ``bench_loader.py``), one sample per key,
  decoded by ``ArrayMember("raw", [32, 32, 3], scale=1/255, channels_first=True)``, batches of ``--image-batch``;
  model: ``DigitsConvNet`` (two conv blocks of 16 and 32 channels, a linear head; Adam) with a 3-channel first
  convolution, its input made contiguous first (see ``ContiguousDigitsConvNet``).

Loaders, each a ``ModynDataModule`` with that decode, batch size and seed, trained on every key (shuffled):

* ``process``: ``dm.train_dataloader()`` as the DataModule gives it (``worker_mode="process"``:
  ``ModynDataLoader``, process workers handing batches over in a shared-memory slot ring), with
  ``num_workers`` 0, 1, 2 and ``persistent_workers=True``.
* ``thread``: ``worker_mode="thread"``: the torchdata path, ``train_loader(dm, num_workers=w, method="thread")``
  (``ParallelMapper`` reader threads in the training process, ``Prefetcher(2)``), ``num_workers`` 1, 2.

Method: for each ``--rounds`` round, every loader in turn runs one ``trainer.fit`` (CPU, one device, no logger,
progress bar or checkpointing) of 1 warm-up epoch + ``--epochs`` timed epochs, in reverse order every other
round (so a steady drift in the machine's load favours none). An epoch's time runs from the end of
the previous epoch to the end of this one (so it includes starting the epoch's iterator); its samples are those the
training steps received. The table shows the median samples/s over all timed epochs of a loader, its range, the
ratio to the process path with the same ``num_workers``, and CPU seconds an epoch: the training process (all its
threads) and its worker processes (``/proc``). Before timing, the first batches of both paths are checked to be
the same (keys, weights, tensors), and every timed epoch to have trained on every sample.

Prints progress and a markdown table (``--table`` also writes it); every number goes to ``--out`` (JSON). Data
goes to ``benchmarks/_work/loader_fit_data`` and is reused by later runs with the same sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import sys
import time
import warnings

import lightning as L
import numpy as np
import torch
from torch import nn

from _common import emit_table, warm_files  # the scripts run from benchmarks/

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lightning_modyn.data import ArrayMember, ModynDataModule, RecordsToTensors  # noqa: E402
from lightning_modyn.datasets import synthetic_criteo_rows  # noqa: E402
from lightning_modyn.models import DigitsConvNet, TinyDLRM  # noqa: E402
from lightning_modyn.store import SampleStore  # noqa: E402

IMG_SHAPE = (32, 32, 3)
DATA_VERSION = 1
_T0 = time.perf_counter()
_TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


# ====================================================================== data
def prepare(kind: str, n: int, seed: int, data_dir: str) -> str:
    """The store of ``n`` rows or images (made once, then reused); its path."""
    root = os.path.join(data_dir, f"{kind}-{n}-seed{seed}")
    meta_path = os.path.join(root, "meta.json")
    want = {"version": DATA_VERSION, "kind": kind, "n": n, "seed": seed}
    try:
        with open(meta_path) as fh:
            if json.load(fh) == want:
                log(f"{kind}: reusing {root}")
                return os.path.join(root, "store")
    except (OSError, ValueError):
        pass
    t = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    store = SampleStore.create(os.path.join(root, "store"))
    if kind == "rows":
        store.append_records(synthetic_criteo_rows(n, seed=seed), labels="label")
    else:
        rng = np.random.default_rng(seed)
        for s in range(0, n, 50_000):
            e = min(n, s + 50_000)
            images = rng.integers(0, 256, size=(e - s,) + IMG_SHAPE, dtype=np.uint8)
            labels = rng.integers(0, 10, size=e - s)
            store.append([{"raw": im.tobytes(), "cls": int(c)} for im, c in zip(images, labels)], labels="cls")
    store.close()
    with open(meta_path, "w") as fh:
        json.dump(want, fh)
    log(f"{kind}: wrote {n:,} samples in {time.perf_counter() - t:.1f}s")
    return os.path.join(root, "store")


# ====================================================================== models
def make_model(kind: str) -> L.LightningModule:
    """The workload's model, with the same initial weights every time."""
    torch.manual_seed(0)
    if kind == "rows":
        return TinyDLRM(num_embeddings=5000, embedding_dim=8, lr=3e-3)
    model = ContiguousDigitsConvNet(num_classes=10)
    model.features[0] = nn.Conv2d(3, model.hparams.channels, 3, padding=1)  # RGB instead of grey
    return model


class ContiguousDigitsConvNet(DigitsConvNet):
    """``DigitsConvNet`` on a contiguous (NCHW) input whatever its strides. ``ArrayMember(channels_first=True)``
    decoded in the training process gives a channels-last strided tensor, a process worker's hand-over a
    contiguous one, and the convolutions' speed differs by ~15-25 % between the two on this CPU: without this,
    the table would compare memory formats rather than loaders."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return super().embed(x.contiguous())


def make_datamodule(kind: str, store: str, n: int, batch_size: int, mode: str, workers: int,
                    seed: int) -> ModynDataModule:
    decode = (RecordsToTensors(label_field="label") if kind == "rows"
              else ArrayMember("raw", list(IMG_SHAPE), scale=1 / 255, channels_first=True))
    dm = ModynDataModule(store, decode=decode, batch_size=batch_size, num_workers=workers, seed=seed,
                         persistent_workers=workers > 0, worker_mode=mode)
    dm.set_training_set(np.arange(n, dtype=np.int64))  # the stores' keys are 0 .. n-1
    return dm


# ====================================================================== timing
def children_cpu() -> float:
    """CPU seconds of this process's children: live ones from /proc, reaped ones from getrusage."""
    total = 0.0
    for child in multiprocessing.active_children():
        try:
            with open(f"/proc/{child.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + usage.ru_utime + usage.ru_stime


class EpochClock(L.Callback):
    """Wall time, CPU seconds and samples at the end of every training epoch."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float, float, int]] = []
        self.samples = 0
        self.threads: set[int] = set()  # torch intra-op threads of the training thread, seen at epoch ends

    def on_train_start(self, trainer, pl_module) -> None:
        self.marks.append((time.perf_counter(), time.process_time(), children_cpu(), 0))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.samples += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.marks.append((time.perf_counter(), time.process_time(), children_cpu(), self.samples))
        self.threads.add(torch.get_num_threads())

    def epochs(self) -> list[dict]:
        """One dict per epoch after the warm-up one."""
        out = []
        for (t0, c0, w0, s0), (t1, c1, w1, s1) in zip(self.marks[1:], self.marks[2:]):
            out.append({"seconds": t1 - t0, "samples": s1 - s0, "cpu_main": c1 - c0, "cpu_workers": w1 - w0})
        return out


def fit(kind: str, store: str, n: int, batch_size: int, mode: str, workers: int, epochs: int,
        seed: int) -> list[dict]:
    dm = make_datamodule(kind, store, n, batch_size, mode, workers, seed)
    clock = EpochClock()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1 + epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[clock])
    trainer.fit(make_model(kind), datamodule=dm)
    dm.store.close()
    runs = clock.epochs()
    if clock.threads != {torch.get_num_threads()}:
        raise AssertionError(f"{kind} {mode} {workers}: the training step ran on {clock.threads} intra-op threads")
    for r in runs:
        if r["samples"] != n:
            raise AssertionError(f"{kind} {mode} {workers}: an epoch trained on {r['samples']} samples, not {n}")
    return runs


def check_same_batches(kind: str, store: str, n: int, batch_size: int, seed: int) -> None:
    """The thread path's first batches are the process path's (same keys, same tensors)."""
    got = {}
    for mode, workers in (("process", 0), ("thread", 2)):
        dm = make_datamodule(kind, store, n, batch_size, mode, workers, seed)
        it = iter(dm.train_dataloader())
        got[mode] = [next(it) for _ in range(3)]
        del it
        dm.store.close()
    for a, b in zip(got["process"], got["thread"]):
        (xa, ya), (xb, yb) = tuple(a), tuple(b)
        same_x = all(torch.equal(xa[k], xb[k]) for k in xa) if isinstance(xa, dict) else torch.equal(xa, xb)
        if not (same_x and torch.equal(ya, yb) and torch.equal(a.keys, b.keys) and torch.equal(a.weights, b.weights)):
            raise AssertionError(f"{kind}: the thread path's batches differ from the process path's")


# ====================================================================== report
def summarize(kind: str, runs: dict) -> dict:
    out = {}
    for (mode, workers), epochs in runs.items():
        # median of the epochs' rates; CPU seconds and epoch time: medians too
        rates = [e["samples"] / e["seconds"] for e in epochs]
        out[f"{mode}{workers}"] = {
            "mode": mode, "workers": workers, "epochs": epochs, "rate": statistics.median(rates),
            "rate_min": min(rates), "rate_max": max(rates),
            "cpu_main": statistics.median(e["cpu_main"] for e in epochs),
            "cpu_workers": statistics.median(e["cpu_workers"] for e in epochs),
            "seconds": statistics.median(e["seconds"] for e in epochs),
        }
    for s in out.values():
        base = out.get(f"process{s['workers']}")
        s["vs_process"] = s["rate"] / base["rate"] if base else None
    return out


def table(results: dict, args) -> list[str]:
    lines = [
        "| workload | loader | workers | samples/s (median) | range | / process, same workers | epoch s | "
        "CPU s/epoch: training process | CPU s/epoch: workers |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, summary in results.items():
        for s in summary.values():
            lines.append(
                f"| {kind} | {s['mode']} | {s['workers']} | {s['rate']:,.0f} | {s['rate_min']:,.0f}–{s['rate_max']:,.0f}"
                f" | {s['vs_process']:.2f} | {s['seconds']:.2f} | {s['cpu_main']:.2f} | {s['cpu_workers']:.2f} |")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--row-batch", type=int, default=4096)
    parser.add_argument("--image-batch", type=int, default=256)
    parser.add_argument("--workloads", nargs="+", choices=("rows", "images"), default=["rows", "images"])
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs of each fit (after one warm-up epoch)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="fits of each loader, taking turns (every other round in reverse order)")
    parser.add_argument("--process-workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--thread-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                        help="torch's intra-op threads for the training step (default: one per CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.path.join(REPO, "benchmarks", "_work", "loader_fit_data"))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "_work", "loader_fit.json"))
    parser.add_argument("--table", default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    torch.get_num_threads()  # fixes this thread's count (see lightning_modyn.data.nodes.keep_intra_op_threads)

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    for message in (".*`val_dataloader` but have no `validation_step`.*", ".*Total length of `list` across ranks.*",
                    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*"):
        warnings.filterwarnings("ignore", message)
    load_start = os.getloadavg()
    loaders = [("process", w) for w in args.process_workers] + [("thread", w) for w in args.thread_workers]
    results = {}
    for kind in args.workloads:
        n = args.rows if kind == "rows" else args.images
        batch_size = args.row_batch if kind == "rows" else args.image_batch
        store = prepare(kind, n, args.seed, args.data_dir)
        warm_files(store)
        check_same_batches(kind, store, n, batch_size, args.seed)
        runs: dict = {loader: [] for loader in loaders}
        for r in range(args.rounds):
            for mode, workers in loaders if r % 2 == 0 else loaders[::-1]:
                epochs = fit(kind, store, n, batch_size, mode, workers, args.epochs, args.seed)
                runs[(mode, workers)] += epochs
                rates = ", ".join(f"{e['samples'] / e['seconds']:,.0f}" for e in epochs)
                log(f"{kind} round {r}: {mode} {workers} workers: {rates} samples/s")
        results[kind] = summarize(kind, runs)
    lines = table(results, args)
    lines += ["", f"{os.cpu_count()} CPUs, torch {torch.get_num_threads()} intra-op threads; 1-minute load average "
                  f"{load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; {args.rounds} round(s) "
                  f"x {args.epochs} timed epoch(s) per loader"]
    env = {"python": platform.python_version(), "torch": torch.__version__, "lightning": L.__version__,
           "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg(),
           "args": vars(args)}
    with open(args.out, "w") as fh:
        json.dump({"env": env, "results": results}, fh, indent=1)
    emit_table(lines, args.table)
    log(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
