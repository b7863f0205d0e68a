#!/usr/bin/env python
"""The registry's storage policies on real runs: bytes per trigger and time to load a trigger's model.

Takes finished runs (their registries hold every trigger's model) and stores the same models again under each
policy, in trigger order, as the loop would; then loads every trigger's model in a random order with a new
registry object (so that nothing is cached between loads but the chain a load rebuilds). Times are CPU seconds of
this process (``time.process_time``); the machine is shared.

Run from the repository root, after the recipes::

    lightning-modyn run --config recipes/rotating_digits.yaml
    lightning-modyn run --config recipes/synthetic_clicks.yaml
    python benchmarks/bench_registry.py runs/rotating-digits-amount runs/synthetic-clicks
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, ".")

from _common import emit_table  # noqa: E402 - the scripts run from benchmarks/
from lightning_modyn.pipeline import FullStorage, IncrementalStorage, ModelRegistry  # noqa: E402

POLICIES = [
    ("full", FullStorage()),
    ("full, zlib", FullStorage("zlib")),
    ("full, lzma", FullStorage("lzma")),
    ("xor, every 5th full, zlib", IncrementalStorage("xor", full_every=5, codec="zlib")),
    ("xor, every 5th full, lzma", IncrementalStorage("xor", full_every=5, codec="lzma")),
    ("sub, every 5th full, lzma", IncrementalStorage("sub", full_every=5, codec="lzma")),
]


class Holder(torch.nn.Module):
    """A module whose state_dict is a given one (the registry stores modules)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.state = state

    def state_dict(self, *args, **kwargs):  # noqa: D102 - the weights as given
        return dict(self.state)

    def load_state_dict(self, state, strict=True):  # noqa: D102
        self.state = dict(state)


def measure(run: str) -> list[str]:
    source = ModelRegistry(run)
    triggers = [e["trigger_id"] for e in source.entries()]
    weights = [source.weights(t) for t in triggers]
    params = sum(v.numel() for v in weights[0].values())
    raw = sum(v.numel() * v.element_size() for v in weights[0].values())
    rows = []
    for name, policy in POLICIES:
        folder = tempfile.mkdtemp(prefix="bench-registry-")
        try:
            registry = ModelRegistry(folder, policy)
            t0 = time.process_time()
            for t, w in zip(triggers, weights):
                registry.save(t, Holder(w), {})
            save_s = (time.process_time() - t0) / len(triggers)
            sizes = [e["bytes"] for e in registry.entries()]
            order = np.random.default_rng(0).permutation(triggers)
            t0 = time.process_time()
            for t in order:
                holder = Holder({})
                ModelRegistry(folder).load_into(int(t), holder)
                assert all(torch.equal(holder.state[k], weights[triggers.index(t)][k]) for k in holder.state) \
                    or policy.describe().get("diff") == "sub"
            load_ms = (time.process_time() - t0) / len(triggers) * 1000
            rows.append(f"| {os.path.basename(run.rstrip('/'))} ({len(triggers)} models, {params:,} weights) | "
                        f"{name} | {np.mean(sizes) / 1024:.1f} | {np.mean(sizes) / raw:.3f} | "
                        f"{save_s * 1000:.1f} | {load_ms:.1f} |")
            print(rows[-1], flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="output folders of finished runs")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    lines = ["| run | policy | KiB per trigger | of the raw weights | save ms (CPU) | load ms (CPU, random "
             "order) |", "|---|---|---:|---:|---:|---:|"]
    for run in args.runs:
        lines += measure(run)
    emit_table(lines, args.out)


if __name__ == "__main__":
    main()
