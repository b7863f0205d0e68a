#!/usr/bin/env python
"""What the store's safety checks cost on its hot paths (issue 13), each measured against the same code with the
check switched off, alternating in one run:

1. the check that no mapped shard a read touches was cut since it was mapped (an inotify read per read, and a
   ``stat`` of the shards reported changed; so a shard cut while mapped is a ``TruncatedShardError`` instead of
   zeros or SIGBUS): ``get_member`` of 3 KiB samples over 20 shards (random keys, 256 a batch) and ``get_records``
   of 160-byte rows (4096 a batch);
2. the writer journal (a marker per new shard, so that garbage collection removes only what the store wrote):
   ``append`` of 1 and of 256 samples per call, ``append_records`` of 10,000 rows per call.

Run from the repository root::

    python benchmarks/bench_store_safety.py            # prints a markdown table; --out writes it to a file

"Off" replaces ``StoreFS._verify`` / the journal's marker writes with no-ops in this process only.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, ".")
from _common import emit_table  # noqa: E402 - the scripts run from benchmarks/
from lightning_modyn.store import SampleStore  # noqa: E402
from lightning_modyn.store import filesystem, journal  # noqa: E402

CRITEO = np.dtype([("label", "<i4"), ("dense", "<f4", (13,)), ("cat", "<i4", (26,))])


@contextlib.contextmanager
def size_check_off():
    real = filesystem.StoreFS._verify
    filesystem.StoreFS._verify = lambda self, mapped, checked: None
    try:
        yield
    finally:
        filesystem.StoreFS._verify = real


@contextlib.contextmanager
def journal_off():
    real_touch = journal.StoreFS.touch
    real_settle = journal.ShardJournal.settle
    journal.StoreFS.touch = lambda self, rel: None
    journal.ShardJournal.settle = lambda self, rels: None
    try:
        yield
    finally:
        journal.StoreFS.touch = real_touch
        journal.ShardJournal.settle = real_settle


def alternate(on, off, switch, repeats: int) -> tuple[float, float]:
    """Median seconds of ``on()`` and of ``off()`` (run with ``switch`` active), alternating, after a warm-up."""
    times = {"on": [], "off": []}
    for i in range(repeats + 3):
        for name in ("on", "off"):
            ctx = switch() if name == "off" else contextlib.nullcontext()
            with ctx:
                t0 = time.perf_counter()
                (on if name == "on" else off)()
                dt = time.perf_counter() - t0
            if i >= 3:
                times[name].append(dt)
    return statistics.median(times["on"]), statistics.median(times["off"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=40_000, help="3 KiB samples (20 shards)")
    p.add_argument("--rows", type=int, default=2_000_000, help="160-byte record rows")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="lm-bench-safety-")
    rng = np.random.default_rng(0)
    rows_out = []
    try:
        store = SampleStore.create(f"{work}/samples", shard_max_samples=args.samples // 20)
        payload = rng.integers(0, 255, (1000, 3072), dtype=np.uint8)
        keys = np.concatenate([store.append([{"bin": payload[i % 1000].tobytes()} for i in range(a, a + 10_000)])
                               for a in range(0, args.samples, 10_000)])
        batches = [rng.choice(keys, 256, replace=False) for _ in range(64)]
        it = iter(range(10**9))

        def member():
            store.get_member(batches[next(it) % 64], "bin").array()

        on, off = alternate(member, member, size_check_off, args.repeats)
        rows_out.append(("`get_member`, 256 x 3 KiB over 20 shards", "size check of mapped shards", on, off, "ms"))

        rstore = SampleStore.create(f"{work}/records")
        rows = np.zeros(args.rows, CRITEO)
        rkeys = np.concatenate([rstore.append_records(rows[a:a + 500_000]) for a in range(0, args.rows, 500_000)])
        rbatches = [rng.choice(rkeys, 4096, replace=False) for _ in range(64)]

        def records():
            rstore.get_records(rbatches[next(it) % 64])

        on, off = alternate(records, records, size_check_off, args.repeats)
        rows_out.append(("`get_records`, 4096 x 160 B", "size check of mapped shards", on, off, "ms"))

        wstore = SampleStore.create(f"{work}/writes")
        one = [{"bin": payload[0].tobytes()}]
        many = [{"bin": payload[i].tobytes()} for i in range(256)]
        block = np.zeros(10_000, CRITEO)
        for what, call in (("`append`, 1 sample a call", lambda: wstore.append(one)),
                           ("`append`, 256 x 3 KiB a call", lambda: wstore.append(many)),
                           ("`append_records`, 10,000 rows a call", lambda: wstore.append_records(block))):
            on, off = alternate(call, call, journal_off, max(10, args.repeats // 10))
            rows_out.append((what, "writer journal (a marker per shard)", on, off, "ms"))
        for s in (store, rstore, wstore):
            s.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = ["| call | check | with (median) | without | cost |", "|---|---|---|---|---|"]
    for what, check, on, off, _unit in rows_out:
        lines.append(f"| {what} | {check} | {on * 1e3:.3f} ms | {off * 1e3:.3f} ms | {on / off - 1:+.1%} |")
    emit_table(lines, args.out)


if __name__ == "__main__":
    main()
