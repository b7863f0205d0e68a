#!/usr/bin/env python
"""GradMatch's greedy rule against orthogonal matching pursuit, on a trained model's gradients.

The gradients are last-layer gradient embeddings of a 20-64-10 MLP trained for 300 full-batch SGD steps on its 512
samples (``tests/test_coresets.py: trained_mlp_gradients``); k = 128. Each rule picks samples greedily and refits
all weights of the picked ones after each pick (ridge ``lam``, non-negative). Reported per seed: the relative
matching error ``|sum_S w g - sum g| / |sum g|``, the regularised objective, and the median gradient norm of the
picks over the batch's median.

Run from the repository root::

    python benchmarks/bench_gradmatch.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

sys.path.insert(0, ".")
sys.path.insert(0, "tests")

from test_coresets import (  # noqa: E402 - the test's plain OMP and its trained-model gradients
    gradmatch_sum_scale,
    matching_error,
    objective,
    plain_omp,
    trained_mlp_gradients,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--lam", type=float, default=0.5)
    args = parser.parse_args()
    rows = ["| seed | rule | lam | matching error | objective | median pick norm / median norm |",
            "|---:|---|---:|---:|---:|---:|"]
    for seed in args.seeds:
        g = trained_mlp_gradients(seed)
        median = np.median(np.linalg.norm(g, axis=1))
        runs = [
            ("GradMatch: <g,r>² / (‖g‖² + lam)", args.lam, gradmatch_sum_scale(g, args.k, args.lam)),
            ("OMP rank <g,r> / ‖g‖ (GradMatch before)", args.lam, plain_omp(g, args.k, args.lam)),
            ("GradMatch, no ridge (= OMP)", 0.0, gradmatch_sum_scale(g, args.k, 0.0)),
        ]
        for name, lam, (picks, w) in runs:
            rows.append(f"| {seed} | {name} | {lam:g} | {matching_error(g, picks, w):.3f} | "
                        f"{objective(g, picks, w, lam):.1f} | "
                        f"{np.median(np.linalg.norm(g[picks], axis=1)) / median:.2f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
