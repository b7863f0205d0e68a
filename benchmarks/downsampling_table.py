#!/usr/bin/env python
"""Downsampling per strategy at 25 % and 50 % against the same recipe on full data: held-out metrics and training
CPU seconds, mean ± standard deviation over seeds.

Two recipes, each run as it ships except for its downsampling callback:

* **digits**: ``recipes/downsampling_digits.yaml`` (rotating digits, 4,800 images a day, a fit every day on that
  day's images, 10 epochs, ``SampleThenBatch`` selecting once per fit). Full data is the recipe without its callback
  (``recipes/downsampling_digits_full.yaml``); every other row swaps the callback's strategy and ratio. Metric:
  held-out composite accuracy. "full data, x % of the epochs" is the honest baseline of any downsampling: training
  less on everything.
* **clicks**: ``recipes/synthetic_clicks.yaml`` (a TinyDLRM fine-tuned every day on 20,000 rows, one epoch at
  batch 256) as it ships is the full-data row; the other rows add the digits recipe's callback (sample-then-batch,
  once per fit) with each strategy and ratio. Metrics: held-out composite ROC-AUC and accuracy.

A seed sets the streams (``dataset.init_args.seed``: training and held-out stores per seed, shared by every row of
that seed), the model's initial weights and every fit (``seed_everything``, ``data.seed``, ``pipeline.seed``, the
callback's ``seed``). Training seconds are the *CPU* seconds of the process inside ``Trainer.fit``, summed over
the run's fits (scoring and selection included, evaluation not), with torch on one thread: on a shared machine
wall time measures the neighbours. Δ and the speed-up are against full data of the same seeds; "goal" counts the
seeds whose run is within 1 point of full data's metric (the first one: accuracy, ROC-AUC) at ≥ 1.5× less
training CPU time.

Run from the repository root, one torch thread (the default grid: about 45 CPU minutes for digits, 10 for clicks;
Craig runs on clicks only when ``--strategies`` names it, at ~300 CPU s a run)::

    OMP_NUM_THREADS=1 python benchmarks/downsampling_table.py --out benchmarks/_work/downsampling_table.md
    OMP_NUM_THREADS=1 python benchmarks/downsampling_table.py --only digits --seeds 0 --strategies loss rs2
    OMP_NUM_THREADS=1 python benchmarks/downsampling_table.py --only clicks --seeds 0 --ratios 25 --strategies craig
    OMP_NUM_THREADS=1 python benchmarks/downsampling_table.py --no-fewer-epochs --work benchmarks/_work/ds_more \
        --strategies gradmatch kcenter submodular grand forgetting selective_backprop rho_loss   # the other rows
    python benchmarks/downsampling_table.py --reuse --no-run --out benchmarks/_work/downsampling_table.md  # tabulate

Every run writes ``<work>/<recipe>/<row>-<ratio>-seed<seed>/measure.json``; ``--reuse`` reads those that exist
instead of running again (and runs only what is missing, unless ``--no-run``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from typing import Any

import yaml

sys.path.insert(0, ".")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import emit_table  # noqa: E402 - the scripts run from benchmarks/

DS = "lightning_modyn.selection.downsampling."

#: strategy row -> its class name and init_args, and what it changes in the callback's init_args. RS2 draws a fresh
#: random subset at every selection (without replacement: every sample once per cycle), so it selects every epoch
#: (period 1); with one selection per fit it would be Uniform.
STRATEGIES: dict[str, tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], dict[str, Any]]] = {
    "uniform": ("Uniform", {}),
    "rs2": ("RS2", {}, {"period": 1}),
    "loss": ("Loss", {"rule": "importance"}),
    "gradnorm": ("GradNorm", {"rule": "importance"}),
    "el2n": ("EL2N", {}),
    "uncertainty": ("Uncertainty", {"metric": "entropy"}),
    "craig": ("Craig", {}),
    "gradmatch": ("GradMatch", {}),
    "kcenter": ("KCenter", {}),
    "forgetting": ("ForgettingEvents", {}),
    "selective_backprop": ("SelectiveBackprop", {}),
    "grand": ("GraNd", {}),
    "submodular": ("Submodular", {"optimizer": "lazy"}),
    "rho_loss": ("RhoLoss", {}),
}
DEFAULT_STRATEGIES = ["uniform", "rs2", "loss", "gradnorm", "el2n", "uncertainty", "craig"]
FEWER_EPOCHS = "full-epochs"  # full data for ratio % of the epochs (recipes that train more than one epoch)

RECIPES: dict[str, dict[str, Any]] = {
    "digits": {"path": "recipes/downsampling_digits.yaml", "metrics": ["accuracy"]},
    # Craig's per-class facility location over a day's 20,000 rows: ~300 CPU s a run against ~5 for full data, so it
    # runs on clicks only when --strategies names it
    "clicks": {"path": "recipes/synthetic_clicks.yaml", "metrics": ["roc_auc", "accuracy"], "slow": ["craig"]},
}
METRIC_NAMES = {"accuracy": "accuracy", "roc_auc": "ROC-AUC"}
# the digits recipe's callback, added to recipes that ship without one (clicks)
DEFAULT_CALLBACK = {"class_path": DS + "SampleThenBatch",
                    "init_args": {"strategy": {"class_path": DS + "Loss", "init_args": {"rule": "importance"}},
                                  "ratio": 50, "period": 0}}


# ---------------------------------------------------------------------- recipes
def _downsampling(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in recipe["trainer"].get("callbacks") or [] if c["class_path"].startswith(DS)]


def recipe_for(name: str, row: str, ratio: int, seed: int, work: str) -> dict[str, Any]:
    """The recipe ``name`` for one row (``full``, ``full-epochs`` or a strategy) at ``ratio`` % and ``seed``."""
    with open(RECIPES[name]["path"]) as handle:
        recipe = yaml.safe_load(handle)
    trainer = recipe["trainer"]
    callbacks = _downsampling(recipe) or [copy.deepcopy(DEFAULT_CALLBACK)]
    others = [c for c in trainer.get("callbacks") or [] if not c["class_path"].startswith(DS)]
    out = os.path.join(work, name, f"{row}-{ratio}-seed{seed}")
    if row in ("full", FEWER_EPOCHS):
        trainer["callbacks"] = others
        trainer.pop("reload_dataloaders_every_n_epochs", None)
        if row == FEWER_EPOCHS:
            trainer["max_epochs"] = max(1, round(trainer["max_epochs"] * ratio / 100))
    else:
        (callback,) = callbacks
        class_name, init_args, *callback_args = STRATEGIES[row]
        callback["init_args"].update(strategy={"class_path": DS + class_name, "init_args": dict(init_args)},
                                     ratio=ratio, seed=seed, scores_dir=os.path.join(out, "scores"))
        callback["init_args"].update(*callback_args)
        trainer["callbacks"] = others + [callback]
        if callback["class_path"].endswith("SampleThenBatch") and callback["init_args"].get("period", 1) > 0:
            trainer["reload_dataloaders_every_n_epochs"] = 1
    recipe["seed_everything"] = seed
    recipe["dataset"]["init_args"]["seed"] = seed
    recipe["data"]["seed"] = seed
    recipe["pipeline"]["seed"] = seed
    # stores per recipe and seed, shared by its rows; the held-out store where the stream writes it and where the
    # evaluation reads it
    recipe["data"]["store"] = os.path.join(work, name, f"train-store-seed{seed}")
    heldout = os.path.join(work, name, f"heldout-store-seed{seed}")
    recipe["dataset"]["init_args"]["heldout_store"] = heldout
    for dataset in recipe["pipeline"]["evaluation"]["datasets"]:
        if dataset["name"] == "heldout":
            dataset["store"] = heldout
    recipe["pipeline"]["output_dir"] = out
    recipe["pipeline"]["evaluation"]["plots"] = False
    return recipe


# ---------------------------------------------------------------------- running
class FitClock:
    """CPU seconds of this process inside ``Trainer.fit`` (every fit of a run: scoring, selection, training)."""

    def __init__(self) -> None:
        import lightning as L

        self.seconds: list[float] = []
        original = L.Trainer.fit

        def fit(trainer, *args, **kwargs):
            t0 = time.process_time()
            try:
                return original(trainer, *args, **kwargs)
            finally:
                self.seconds.append(time.process_time() - t0)

        L.Trainer.fit = fit


def run_one(name: str, row: str, ratio: int, seed: int, work: str, clock: FitClock) -> dict[str, Any]:
    """Run one recipe variant; its measures (also written to ``measure.json`` in its output folder)."""
    from lightning_modyn.recipe import run_recipe

    recipe = recipe_for(name, row, ratio, seed, work)
    out = recipe["pipeline"]["output_dir"]
    shutil.rmtree(out, ignore_errors=True)  # a leftover loop_state.json would resume instead of rerun
    os.makedirs(out)
    config = os.path.join(out, "recipe.yaml")
    with open(config, "w") as handle:
        yaml.safe_dump(recipe, handle, sort_keys=False)
    clock.seconds.clear()
    log = io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_recipe(["--config", config])
    with open(os.path.join(out, "run.log"), "w") as handle:
        handle.write(log.getvalue())
    with open(os.path.join(out, "results.json")) as handle:
        saved = json.load(handle)
    held = saved["datasets"]["heldout"]["summary"]
    measure = {
        "recipe": name, "row": row, "ratio": ratio, "seed": seed,
        "heldout": {m: held[m]["composite_mean"] for m in RECIPES[name]["metrics"]},
        "fit_cpu_seconds": sum(clock.seconds), "fits": len(clock.seconds),
        "train_seconds": sum(t["train_seconds"] for t in result.triggers),
        "samples_trained": sum(t["samples_trained"] for t in saved["triggers"]),
        "run_cpu_seconds": time.process_time() - c0, "run_wall_seconds": time.perf_counter() - t0,
    }
    with open(os.path.join(out, "measure.json"), "w") as handle:
        json.dump(measure, handle, indent=1)
    return measure


def rows_of(name: str, strategies: list[str], ratios: list[int]) -> list[tuple[str, int]]:
    with open(RECIPES[name]["path"]) as handle:
        epochs = yaml.safe_load(handle)["trainer"].get("max_epochs", 1)
    rows = [("full", 100)] + [(s, r) for s in strategies for r in ratios]
    if epochs > 1:
        rows += [(FEWER_EPOCHS, r) for r in ratios]
    return rows


# ---------------------------------------------------------------------- table
def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def label(row: str, ratio: int, epochs: int) -> str:
    if row == "full":
        return "full data"
    if row == FEWER_EPOCHS:
        return f"full data, {max(1, round(epochs * ratio / 100))} of {epochs} epochs"
    class_name, init_args, *callback_args = STRATEGIES[row]
    args = ", ".join(f"{k}={v!r}" for k, v in init_args.items())
    changed = "".join(f", {k} {v}" for extra in callback_args for k, v in extra.items())
    return f"{class_name}({args}) {ratio} %{changed}"


def table(name: str, measures: dict[tuple[str, int, int], dict[str, Any]], rows: list[tuple[str, int]],
          seeds: list[int]) -> list[str]:
    metrics = RECIPES[name]["metrics"]
    with open(RECIPES[name]["path"]) as handle:
        epochs = yaml.safe_load(handle)["trainer"].get("max_epochs", 1)
    full = {s: measures[("full", 100, s)] for s in seeds if ("full", 100, s) in measures}
    head = " | ".join(f"held-out {METRIC_NAMES[m]}" for m in metrics)
    lines = [f"| {name}: run | {head} | Δ {METRIC_NAMES[metrics[0]]} (points) | training CPU s | speed-up | "
             "goal (seeds) |", "|---|" + "---:|" * (len(metrics) + 4)]
    for row, ratio in rows:
        have = [s for s in seeds if (row, ratio, s) in measures]
        if not have:
            continue
        ms = [measures[(row, ratio, s)] for s in have]
        cells = []
        for m in metrics:
            mean, sd = _mean_sd([x["heldout"][m] for x in ms])
            cells.append(f"{mean:.4f} ± {sd:.4f}")
        cpu, cpu_sd = _mean_sd([x["fit_cpu_seconds"] for x in ms])
        paired = [s for s in have if s in full]
        if paired and row != "full":
            deltas = [100 * (measures[(row, ratio, s)]["heldout"][metrics[0]] - full[s]["heldout"][metrics[0]])
                      for s in paired]
            speedups = [full[s]["fit_cpu_seconds"] / measures[(row, ratio, s)]["fit_cpu_seconds"] for s in paired]
            d_mean, d_sd = _mean_sd(deltas)
            goal = sum(d >= -1.0 and x >= 1.5 for d, x in zip(deltas, speedups))
            extra = [f"{d_mean:+.2f} ± {d_sd:.2f}", f"{cpu:.1f} ± {cpu_sd:.1f}",
                     f"{statistics.fmean(speedups):.2f}×", f"{goal}/{len(paired)}"]
        else:
            extra = ["–", f"{cpu:.1f} ± {cpu_sd:.1f}", "1.00×" if row == "full" else "–", "–"]
        lines.append(f"| {label(row, ratio, epochs)} | " + " | ".join(cells + extra) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(RECIPES), default=list(RECIPES), help="recipes to run")
    parser.add_argument("--strategies", nargs="+", choices=list(STRATEGIES),
                        help=f"default: {' '.join(DEFAULT_STRATEGIES)} (less a recipe's slow ones)")
    parser.add_argument("--ratios", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-fewer-epochs", action="store_true", help="leave out the full data, fewer epochs rows")
    parser.add_argument("--reuse", action="store_true", help="read the measures of runs already done")
    parser.add_argument("--no-run", action="store_true", help="with --reuse: tabulate only, run nothing")
    parser.add_argument("--work", default=os.path.join("benchmarks", "_work", "downsampling_table"))
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # CPU seconds of one thread: comparable across runs on a shared machine
    clock = FitClock()
    lines: list[str] = []
    for name in args.only:
        strategies = args.strategies or [s for s in DEFAULT_STRATEGIES if s not in RECIPES[name].get("slow", [])]
        rows = [r for r in rows_of(name, strategies, args.ratios)
                if not (args.no_fewer_epochs and r[0] == FEWER_EPOCHS)]
        measures: dict[tuple[str, int, int], dict[str, Any]] = {}
        for seed in args.seeds:  # seed by seed: a partial grid still compares full data and rows per seed
            for row, ratio in rows:
                path = os.path.join(args.work, name, f"{row}-{ratio}-seed{seed}", "measure.json")
                if args.reuse and os.path.exists(path):
                    with open(path) as handle:
                        measures[(row, ratio, seed)] = json.load(handle)
                    continue
                if args.no_run:
                    continue
                m = measures[(row, ratio, seed)] = run_one(name, row, ratio, seed, args.work, clock)
                print(f"{name} {row} {ratio} % seed {seed}: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in m["heldout"].items()) + f", fit CPU {m['fit_cpu_seconds']:.1f} s",
                    file=sys.stderr, flush=True)
        lines += [f"Mean ± standard deviation over seeds {', '.join(map(str, args.seeds))} "
                  f"({RECIPES[name]['path']}):", ""] + table(name, measures, rows, args.seeds) + [""]
    emit_table(lines, args.out)


if __name__ == "__main__":
    main()
