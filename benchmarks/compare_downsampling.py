"""Downsampling: accuracy and training seconds of full data vs uniform, RS2, loss, gradient norm, CRAIG.

Two datasets, each one fit on a training window and a test on the next period:

* rotating digits (16x16, no rotation drift inside the window), ``DigitsConvNet``, metric: accuracy;
* synthetic clicks (Criteo-format rows), ``TinyDLRM``, metric: ROC-AUC.

Every method trains the same number of epochs with the same training batch size (digits: 64 epochs, where full
data has converged; clicks: one epoch, as DLRMs are trained). Batch-then-sample methods (uniform, loss, gradient
norm, CRAIG) read batches ``100/ratio`` times larger and keep ``ratio`` % of each; RS2 draws a new ``ratio`` %
subset every epoch; "loss, sample-then-batch" scores the whole window with the loss every 8 epochs and trains on
the weighted subset it samples in between. The models apply the selection weights with the one-line
opt-in ``weighted_mean``. Training seconds are the *CPU* seconds of ``trainer.fit`` on one torch thread (scoring
included): on a shared machine, wall time measures the neighbours. The scoring overhead per batch is measured
separately, in units of one training forward pass over the same batch. "Full data, x % of the epochs" is the
honest baseline for any downsampling: training less on everything.

    python benchmarks/compare_downsampling.py            # ~35 min on 2 CPU cores (3 seeds)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
import warnings

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from lightning_modyn import ModynDataModule, SampleStore
from lightning_modyn.data import ArrayMember, RecordsToTensors
from lightning_modyn.datasets.clicks import write_synthetic_clicks
from lightning_modyn.datasets.rotating_digits import write_rotating_digits
from lightning_modyn.models import DigitsConvNet, TinyDLRM
from lightning_modyn.selection.downsampling import (
    RS2,
    BatchThenSample,
    Craig,
    EL2N,
    GradNorm,
    Loss,
    SampleThenBatch,
    Uncertainty,
    Uniform,
    weighted_mean,
)


class WeightedDigits(DigitsConvNet):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return weighted_mean(F.cross_entropy(self(x), y, reduction="none"), batch)  # the one-line opt-in


class WeightedDLRM(TinyDLRM):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return weighted_mean(F.binary_cross_entropy_with_logits(self(x).squeeze(1), y.float(), reduction="none"),
                             batch)


def digits(work: str, seed: int, epochs: int = 64) -> dict:
    url = os.path.join(work, "digits-store")
    if not os.path.exists(url):
        write_rotating_digits(url, num_periods=5, samples_per_period=1200, image_size=16, seed=seed,
                              rotation_per_period=0.0, rotation_noise=10.0)
    store = SampleStore.open(url, readonly=True)
    keys = store.all().keys
    train, test = keys[:4800], keys[4800:]
    return {"name": "rotating digits", "metric": "accuracy", "store": store, "train": train, "test": test,
            "decode": ArrayMember("raw", [16, 16, 1], scale=1 / 255, channels_first=True), "batch": 64,
            "epochs": epochs, "model": lambda: WeightedDigits(num_classes=10, channels=16, lr=3e-3)}


def clicks(work: str, seed: int, epochs: int = 1) -> dict:
    url = os.path.join(work, "clicks-store")
    if not os.path.exists(url):
        write_synthetic_clicks(url, days=4, rows_per_day=20000, seed=seed, num_categories=2000)
    store = SampleStore.open(url, readonly=True)
    keys = store.all().keys
    train, test = keys[:60000], keys[60000:]
    # one epoch, as DLRMs are trained: the embedding tables memorize the rows from the second epoch on
    return {"name": "synthetic clicks", "metric": "roc_auc", "store": store, "train": train, "test": test,
            "decode": RecordsToTensors(label_dtype="int64"), "batch": 128, "epochs": epochs,
            "model": lambda: WeightedDLRM(num_embeddings=2000, embedding_dim=8, lr=1e-3)}


METHODS = {
    "uniform": lambda r: BatchThenSample(Uniform(), r),
    "RS2": lambda r: SampleThenBatch(RS2(), r, period=1),
    # importance sampling, weights applied (WeightedDLRM and the digits model use them), as measured in the docs
    "loss": lambda r: BatchThenSample(Loss(rule="importance"), r),
    "gradient norm": lambda r: BatchThenSample(GradNorm(rule="importance"), r),
    "CRAIG": lambda r: BatchThenSample(Craig(), r),
    # sample-then-batch: score the whole window every 8 epochs, train on a weighted subset in between
    "loss, sample-then-batch every 8 epochs": lambda r: SampleThenBatch(Loss(rule="importance"), r, period=8),
}
DEFAULT_METHODS = list(METHODS)


@torch.no_grad()
def evaluate(ds: dict, model: L.LightningModule) -> float:
    import torchmetrics.functional as tmf

    model.eval()
    outs, ys = [], []
    for x, y in ModynDataModule(ds["store"], decode=ds["decode"]).batches(ds["test"], 1024):
        outs.append(model(x).float())
        ys.append(y)
    logits, y = torch.cat(outs), torch.cat(ys)
    if ds["metric"] == "accuracy":
        return float((logits.argmax(1) == y).float().mean())
    return float(tmf.auroc(torch.sigmoid(logits[:, 0]), y.long(), task="binary"))


def fit(ds: dict, method: str, ratio: int, seed: int, work: str) -> tuple[float, float]:
    """Train with ``method`` (``full``, ``full-epochs``: full data for ``ratio`` % of the epochs, or a method of
    :data:`METHODS` keeping ``ratio`` %); returns (test metric, training CPU seconds)."""
    L.seed_everything(seed, verbose=False)
    epochs = ds["epochs"]
    if method == "full-epochs":
        epochs, method = max(1, round(ds["epochs"] * ratio / 100)), "full"
    model = ds["model"]()
    callbacks, batch, reload = [], ds["batch"], 0
    if method != "full":
        callback = METHODS[method](ratio)
        callback.seed = seed
        callbacks.append(callback)
        if isinstance(callback, BatchThenSample):
            batch = int(round(ds["batch"] * 100 / ratio))
        else:
            reload = 1
    dm = ModynDataModule(ds["store"], decode=ds["decode"], batch_size=batch, seed=seed)
    dm.set_training_set(ds["train"])
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        reload_dataloaders_every_n_epochs=reload, callbacks=callbacks,
                        default_root_dir=os.path.join(work, "fits"))
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
    seconds = time.process_time() - t0
    return evaluate(ds, model), seconds


def scoring_overhead(ds: dict, batch_size: int = 256, repeats: int = 15) -> dict[str, float]:
    """Seconds to score and select one batch, over seconds of one training forward pass (with autograd)."""
    model = ds["model"]()
    batch = next(ModynDataModule(ds["store"], decode=ds["decode"]).batches(ds["train"][:batch_size]))
    x = batch[0]

    def forward_train() -> None:
        model.train()
        model(x).sum()

    def median_seconds(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return statistics.median(times)

    base = median_seconds(forward_train)
    out = {}
    for name, strategy in {"loss": Loss(rule="importance"), "gradient norm": GradNorm(rule="importance"),
                           "uncertainty": Uncertainty(),
                           "EL2N": EL2N(), "CRAIG": Craig()}.items():
        cb = BatchThenSample(strategy, 25)
        g = torch.Generator().manual_seed(0)

        def score() -> None:
            scored = cb.forward(model, batch, strategy.needs_embeddings, batch.keys)
            strategy.select(scored, batch_size // 4, g)

        out[name] = median_seconds(score) / base
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="benchmarks/_work/downsampling")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratios", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS)
    parser.add_argument("--datasets", nargs="+", choices=["digits", "clicks"], default=["digits", "clicks"])
    parser.add_argument("--digits-epochs", type=int, default=64, help="epochs of every digits fit (default 64)")
    parser.add_argument("--out-json", default="benchmarks/_work/downsampling/results.json")
    parser.add_argument("--out-png", default="docs/figures/downsampling.png")
    args = parser.parse_args()
    torch.set_num_threads(1)  # CPU seconds of one thread: comparable across runs on a shared machine
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)

    results: dict = {}
    makers = {"digits": lambda: digits(args.work, 0, args.digits_epochs), "clicks": lambda: clicks(args.work, 0)}
    for name in args.datasets:
        ds = makers[name]()
        rows = results[ds["name"]] = {"metric": ds["metric"], "epochs": ds["epochs"], "runs": {}}
        configs = [("full", 100)] + [(m, r) for r in args.ratios for m in args.methods]
        if ds["epochs"] > 1:  # the honest baseline: full data, but fewer epochs
            configs += [("full-epochs", r) for r in args.ratios]
        for method, ratio in configs:
            runs = [fit(ds, method, ratio, seed, args.work) for seed in args.seeds]
            label = ("full data" if method == "full" else
                     f"full data, {ratio}% of the epochs" if method == "full-epochs" else f"{method} {ratio}%")
            rows["runs"][label] = {"method": method, "ratio": ratio, "metric": [r[0] for r in runs],
                                   "seconds": [r[1] for r in runs]}
            print(f"{ds['name']:>16} | {label:<18} | {ds['metric']} {np.mean([r[0] for r in runs]):.4f} | "
                  f"{np.mean([r[1] for r in runs]):6.1f} s", flush=True)
        rows["overhead"] = scoring_overhead(ds)
        ds["store"].close()
    with open(args.out_json, "w") as handle:
        json.dump(results, handle, indent=1)
    print(markdown(results, args))
    plot(results, args.out_png)


def markdown(results: dict, args) -> str:
    lines = []
    for name, rows in results.items():
        full = rows["runs"]["full data"]
        full_m, full_s = np.mean(full["metric"]), np.mean(full["seconds"])
        lines += [f"**{name}** ({rows['metric']}, {rows['epochs']} epoch(s) a fit, mean of seeds {args.seeds}; "
                  "± is half the spread)", "",
                  f"| method | {rows['metric']} | vs full (points) | training CPU s | speed-up |",
                  "|---|---:|---:|---:|---:|"]
        for label, r in rows["runs"].items():
            m, s = np.mean(r["metric"]), np.mean(r["seconds"])
            spread = (max(r["metric"]) - min(r["metric"])) / 2
            lines.append(f"| {label} | {m:.4f} ± {spread:.4f} | {100 * (m - full_m):+.2f} | {s:.1f} | "
                         f"{full_s / s:.2f}× |")
        lines += ["", "Scoring + selection per batch of 256, in training-forward-pass units: " + ", ".join(
            f"{k} {v:.2f}" for k, v in rows["overhead"].items()), ""]
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4))
    for ax, (name, rows) in zip(np.atleast_1d(axes), results.items()):
        for label, r in rows["runs"].items():
            marker = "*" if r["method"].startswith("full") else ("o" if r["ratio"] == 25 else "s")
            ax.scatter(np.mean(r["seconds"]), np.mean(r["metric"]), marker=marker, s=80 if marker == "*" else 40)
            ax.annotate(label, (np.mean(r["seconds"]), np.mean(r["metric"])), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("training CPU seconds (1 thread, scoring included)")
        ax.set_ylabel(rows["metric"])
        ax.set_title(f"{name}: downsampling at 25 % (o) and 50 % (s)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
