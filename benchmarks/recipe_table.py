#!/usr/bin/env python
"""Every bundled recipe, run as it ships: held-out composite metrics, triggers and seconds per stage.

Each recipe in ``recipes/`` runs once with its own settings, into ``<work>/<recipe name>`` (stores are those the
recipes name, under ``runs/``, shared between recipes as they are in use). Reported per recipe: the mean over the
held-out stream's windows of the currently active model's accuracy (and ROC-AUC where the recipe measures it), the
same on the training stream (prequential: each window before its data is trained on), triggers, samples trained,
and the seconds of training (fits, scoring included) and of the whole run's stages.

Run from the repository root (about 15-25 minutes on 2 cores)::

    python benchmarks/recipe_table.py --out benchmarks/_work/recipe_table.md
    python benchmarks/recipe_table.py --only rotating_digits synthetic_clicks   # a few recipes
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time

import yaml

sys.path.insert(0, ".")

from _common import emit_table  # noqa: E402 - the scripts run from benchmarks/
from lightning_modyn.recipe import run_recipe  # noqa: E402


def run(path: str, work: str) -> dict:
    """Run one recipe into ``work``; its results and wall seconds."""
    name = os.path.splitext(os.path.basename(path))[0]
    recipe = yaml.safe_load(open(path))
    folder = os.path.join(work, name)
    shutil.rmtree(folder, ignore_errors=True)  # a run left there would be resumed (or refused), not run again
    recipe["pipeline"]["output_dir"] = folder
    for callback in recipe["trainer"].get("callbacks") or []:
        if "scores_dir" in callback.get("init_args", {}):
            callback["init_args"]["scores_dir"] = os.path.join(folder, "scores")
    os.makedirs(work, exist_ok=True)
    config = os.path.join(work, f"{name}.yaml")
    with open(config, "w") as handle:
        yaml.safe_dump(recipe, handle, sort_keys=False)
    t0 = time.perf_counter()
    result = run_recipe(["--config", config])
    wall = time.perf_counter() - t0
    saved = json.load(open(os.path.join(folder, "results.json")))
    return {"name": name, "result": result, "saved": saved, "wall": wall}


def row(run_: dict) -> str:
    saved, result = run_["saved"], run_["result"]
    held = saved.get("datasets", {}).get("heldout", {}).get("summary", {})

    def mean(summary: dict, metric: str) -> str:
        value = summary.get(metric, {}).get("composite_mean")
        return "–" if value is None else f"{value:.3f}"

    stages = {}
    for trigger in result.triggers:
        for stage, seconds in trigger.get("seconds", {}).items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    cost = ", ".join(f"{stage} {s:.0f}" for stage, s in stages.items() if s >= 0.5)
    return (f"| `{run_['name']}` | {mean(held, 'accuracy')} | {mean(held, 'roc_auc')} | "
            f"{mean(saved['summary'], 'accuracy')} | {result.num_triggers} | "
            f"{sum(t['samples_trained'] for t in result.triggers):,} | "
            f"{sum(t['train_seconds'] for t in result.triggers):.0f} | {cost} | {run_['wall']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join("benchmarks", "_work", "recipes"))
    parser.add_argument("--only", nargs="+", help="recipe names (file names without .yaml)")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join("recipes", "*.yaml")))
    if args.only:
        paths = [p for p in paths if os.path.splitext(os.path.basename(p))[0] in args.only]
    lines = ["| recipe | held-out accuracy | held-out ROC-AUC | stream accuracy | triggers | samples trained | "
             "training s | seconds per stage | wall s |", "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for path in paths:
        lines.append(row(run(path, args.work)))
        print(lines[-1], flush=True)
    emit_table(lines, args.out)


if __name__ == "__main__":
    main()
