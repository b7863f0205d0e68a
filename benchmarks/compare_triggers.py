"""Compare retraining triggers on the rotating-digits stream: composite accuracy, triggers and training seconds.

Runs the shipped rotating-digits recipes (amount, time, drift, performance) one after the other on one store,
then writes a markdown table (stdout and --out-md) and one plot of accuracy over time (--out-png).

    python benchmarks/compare_triggers.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

RECIPES = {
    "amount (every 1,600 samples)": "rotating_digits.yaml",
    "time (every 2 days)": "rotating_digits_time.yaml",
    "drift (MMD, dynamic quantile)": "rotating_digits_drift.yaml",
    "performance (accuracy < 0.7)": "rotating_digits_performance.yaml",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="benchmarks/_work/triggers")
    parser.add_argument("--out-md", default="benchmarks/_work/triggers/comparison.md")
    parser.add_argument("--out-png", default="docs/figures/trigger_comparison.png")
    args = parser.parse_args()

    from lightning_modyn.pipeline.cli import run_recipe

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shutil.rmtree(args.work, ignore_errors=True)
    store = os.path.join(args.work, "store")
    results = {}
    for name, recipe in RECIPES.items():
        out = os.path.join(args.work, recipe.removesuffix(".yaml"))
        print(f"== {name}: {recipe}", flush=True)
        run_recipe(["--config", os.path.join(root, "recipes", recipe), "--data.store", store,
                    "--pipeline.output_dir", out])
        with open(os.path.join(out, "results.json")) as handle:
            results[name] = json.load(handle)

    baseline = results["amount (every 1,600 samples)"]
    base_acc = baseline["summary"]["accuracy"]["composite_mean"]
    lines = ["| trigger | triggers | composite accuracy (mean over days with a model) | vs amount | "
             "training seconds |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        acc = r["summary"]["accuracy"]["composite_mean"]
        lines.append(f"| {name} | {len(r['triggers'])} | {acc:.3f} | {acc - base_acc:+.3f} | "
                     f"{r['total_train_seconds']:.1f} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(args.out_md), exist_ok=True)
    with open(args.out_md, "w") as handle:
        handle.write(table + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for name, r in results.items():
        days = [(w["start"] + w["end"]) / 2 / 86400 for w in r["windows"]]
        acc = [float("nan") if v is None else v for v in r["composite"]["accuracy"]]
        ax.plot(days, acc, marker="o", label=f"{name}: {len(r['triggers'])} triggers")
    ax.set_xlabel("day")
    ax.set_ylabel("accuracy of the currently active model")
    ax.set_title("Rotating digits: accuracy over time by trigger policy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out_png), exist_ok=True)
    fig.savefig(args.out_png, dpi=100)
    print(f"plot: {args.out_png}")


if __name__ == "__main__":
    main()
