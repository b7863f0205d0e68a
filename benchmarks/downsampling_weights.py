#!/usr/bin/env python
"""Loss importance sampling on rotating digits with its selection weights applied and ignored, and alternatives.

``recipes/rotating_digits.yaml`` with batch-then-sample (every batch of 128 scored, 25 % trained on; the
downsampling recipe until it was rebuilt on a stream where downsampling pays, ``recipes/downsampling_digits.yaml``) is
run with loss importance sampling and a training step that applies the importance weights (``DigitsConvNet(
use_weights=True)``) or ignores them (``use_weights=False``, as an unchanged module would); with uniform sampling and
with the top-k rule (weights all 1, so nothing to ignore); and ``recipes/rotating_digits.yaml`` as it ships, the same
run on all data. Reported: composite accuracy of the active model over the stream's days (prequential: each day before
it is trained on) and over the held-out stream's days (images whose source digits no model trained on),
training seconds of all fits, and how many fits warned that the training step ignored weights that differed.

``--recipe downsampling`` runs the same comparison on ``recipes/downsampling_digits.yaml`` (sample-then-batch, one
selection of 50 % per fit; its uniform draw is the recipe as it ships), against
``recipes/downsampling_digits_full.yaml``.

Run from the repository root (about 5 minutes on 2 cores; ``--recipe downsampling`` about 6)::

    python benchmarks/downsampling_weights.py --out benchmarks/_work/downsampling_weights.md
    OMP_NUM_THREADS=1 python benchmarks/downsampling_weights.py --recipe downsampling
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import yaml

sys.path.insert(0, ".")

from _common import emit_table  # noqa: E402 - the scripts run from benchmarks/
from lightning_modyn.recipe import run_recipe  # noqa: E402

FULL = os.path.join("recipes", "rotating_digits.yaml")
DOWNSAMPLING = "batch-then-sample"  # FULL with the callback below and batches of 128
CALLBACK = {"class_path": "lightning_modyn.selection.downsampling.BatchThenSample",
            "init_args": {"strategy": {"class_path": "lightning_modyn.selection.downsampling.Loss",
                                       "init_args": {"rule": "importance"}}, "ratio": 25}}

VARIANTS = [  # name, recipe, strategy (None: the recipe's), use_weights
    ("all data (rotating_digits.yaml)", FULL, None, True),
    ("loss, importance, weights applied", DOWNSAMPLING, None, True),
    ("loss, importance, weights ignored", DOWNSAMPLING, None, False),
    ("uniform", DOWNSAMPLING, {"class_path": "lightning_modyn.selection.downsampling.Uniform"}, True),
    ("loss, top-k", DOWNSAMPLING, {"class_path": "lightning_modyn.selection.downsampling.Loss",
                                   "init_args": {"rule": "top_k"}}, False),
    ("loss, proportional (weights 1)", DOWNSAMPLING, {"class_path": "lightning_modyn.selection.downsampling.Loss",
                                                      "init_args": {"rule": "proportional"}}, False),
]


#: --recipe downsampling: the downsampling recipe's own callback (SampleThenBatch, 50 %, once per fit) with each
#: strategy, against its full-data twin
DS_RECIPE, DS_FULL = (os.path.join("recipes", f"downsampling_digits{suffix}.yaml") for suffix in ("", "_full"))
DS_LOSS = {"class_path": "lightning_modyn.selection.downsampling.Loss", "init_args": {"rule": "importance"}}
DS_VARIANTS = [
    ("all data (downsampling_digits_full.yaml)", DS_FULL, None, True),
    ("loss, importance, weights applied", DS_RECIPE, DS_LOSS, True),
    ("loss, importance, weights ignored", DS_RECIPE, DS_LOSS, False),
    ("uniform (downsampling_digits.yaml)", DS_RECIPE, None, True),
    ("loss, top-k", DS_RECIPE, {"class_path": "lightning_modyn.selection.downsampling.Loss",
                                "init_args": {"rule": "top_k"}}, False),
    ("loss, proportional (weights 1)", DS_RECIPE, {"class_path": "lightning_modyn.selection.downsampling.Loss",
                                                   "init_args": {"rule": "proportional"}}, False),
]


def run(index: int, recipe_path: str, strategy: dict | None, use_weights: bool, work: str) -> dict:
    recipe = yaml.safe_load(open(FULL if recipe_path == DOWNSAMPLING else recipe_path))
    if recipe_path == DOWNSAMPLING:
        recipe["data"]["batch_size"] = 128
        recipe["trainer"]["callbacks"] = [json.loads(json.dumps(CALLBACK))]
    folder = os.path.join(work, f"variant-{index}")
    recipe["model"]["init_args"]["use_weights"] = use_weights
    for callback in recipe["trainer"].get("callbacks") or []:
        if strategy is not None:
            callback["init_args"]["strategy"] = strategy
        callback["init_args"]["scores_dir"] = os.path.join(folder, "scores")
    recipe["pipeline"]["output_dir"] = folder
    path = os.path.join(work, f"variant-{index}.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(recipe, handle)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_recipe(["--config", path])
    saved = json.load(open(os.path.join(folder, "results.json")))
    summary = saved["summary"]
    return {"composite": summary["accuracy"]["composite_mean"],
            "heldout": saved["datasets"]["heldout"]["summary"]["accuracy"]["composite_mean"],
            "train_seconds": sum(t["train_seconds"] for t in result.triggers),
            "warned": sum("ignored the selection weights" in str(w.message) for w in caught)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join("benchmarks", "_work", "downsampling_weights"))
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--recipe", choices=["rotating", "downsampling"], default="rotating",
                        help="rotating_digits.yaml with batch-then-sample 25 %% (default), or downsampling_digits.yaml")
    args = parser.parse_args()
    if args.recipe == "downsampling" and args.work == parser.get_default("work"):
        args.work += "_recipe"
    os.makedirs(args.work, exist_ok=True)
    lines = ["| run | composite accuracy, stream | composite accuracy, held out | training s | fits warned about "
             "ignored weights |", "|---|---:|---:|---:|---:|"]
    for i, (name, recipe, strategy, use_weights) in enumerate(VARIANTS if args.recipe == "rotating" else DS_VARIANTS):
        r = run(i, recipe, strategy, use_weights, args.work)
        lines.append(f"| {name} | {r['composite']:.4f} | {r['heldout']:.4f} | {r['train_seconds']:.1f} | "
                     f"{r['warned']} |")
        print(lines[-1], flush=True)
    emit_table(lines, args.out)


if __name__ == "__main__":
    main()
