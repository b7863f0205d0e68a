#!/usr/bin/env python
"""The downsampling recipe against its full-data twin, as a figure: held-out accuracy of the active model per day,
and training seconds per fit, of ``recipes/downsampling_digits.yaml`` and ``recipes/downsampling_digits_full.yaml``.

It reads the two runs' ``results.json`` (as ``benchmarks/recipe_table.py`` leaves them) and draws
``docs/figures/downsampling_recipe.png``. Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/recipe_table.py --only downsampling_digits downsampling_digits_full
    python benchmarks/downsampling_recipe_figure.py
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

RUNS = (("downsampling_digits", "random 50 % per fit", "tab:orange"),
        ("downsampling_digits_full", "all data", "tab:blue"))


def load(work: str, name: str) -> dict:
    path = os.path.join(work, name, "results.json")
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} is missing; run: OMP_NUM_THREADS=1 python benchmarks/recipe_table.py "
                         f"--only downsampling_digits downsampling_digits_full")
    with open(path) as handle:
        return json.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join("benchmarks", "_work", "recipes"))
    parser.add_argument("--out", default=os.path.join("docs", "figures", "downsampling_recipe.png"))
    args = parser.parse_args()
    fig, (acc_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    for name, label, colour in RUNS:
        result = load(args.work, name)
        held = result["datasets"]["heldout"]
        days = [w["start"] / 86400 for w in held["windows"]]
        accuracy = held["composite"]["accuracy"]
        mean = held["summary"]["accuracy"]["composite_mean"]
        shown = [(d, a) for d, a in zip(days, accuracy) if a is not None]
        acc_ax.plot([d for d, _ in shown], [a for _, a in shown], "o-", color=colour,
                    label=f"{label}: mean {mean:.3f}")
        fits = [t["train_seconds"] for t in result["triggers"]]
        trained = sum(t["samples_trained"] for t in result["triggers"])
        time_ax.plot(range(len(fits)), fits, "o-", color=colour,
                     label=f"{label}: {sum(fits):.0f} s, {trained:,} samples")
        print(f"{name}: held-out composite accuracy {mean:.4f}, training {sum(fits):.1f} s, "
              f"{trained:,} samples trained")
    acc_ax.set(xlabel="day of the stream (each model is evaluated on the days after its fit)",
               ylabel="held-out accuracy of the active model", title="Held-out accuracy per day")
    acc_ax.set_ylim(0, 1.02)
    shift = 8  # the recipe's abrupt shift: contrast inverted from day 8
    acc_ax.axvline(shift, color="tab:red", ls="--", lw=1)
    acc_ax.annotate("contrast inverted", (shift, 0.3), xytext=(4, 0), textcoords="offset points", color="tab:red",
                    fontsize=8)
    acc_ax.grid(alpha=0.3)
    acc_ax.legend(loc="lower left", fontsize=8)
    time_ax.set(xlabel="trigger (one fit a day)", ylabel="training seconds (one torch thread)",
                title="Training seconds per fit")
    time_ax.set_ylim(bottom=0)
    time_ax.grid(alpha=0.3)
    time_ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("downsampling_digits.yaml vs downsampling_digits_full.yaml (seed 0)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
