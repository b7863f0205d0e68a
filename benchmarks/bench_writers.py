#!/usr/bin/env python
"""Write throughput of several writer processes on one store with a PostgreSQL catalog, against the one writer an
SQLite catalog allows — the same data, in one run (issue 14).

Each configuration writes the same total: ``--batches`` appends of ``--per-batch`` samples of ``--sample-bytes``
(an ``append`` of WebDataset samples), and as many ``append_records`` calls of ``--rows`` 160-byte Criteo rows,
split evenly over its writer processes, which start together. Reported: wall time from the start signal to the
last writer's end, samples (and rows) per second, and the CPU seconds of writers and of the PostgreSQL server.

Run from the repository root (it starts its own PostgreSQL on loopback, as the tests do)::

    python benchmarks/bench_writers.py                 # prints a markdown table; --out writes it to a file
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, ".")
sys.path.insert(0, "tests")
from lightning_modyn.store import SampleStore  # noqa: E402
from services import PostgresServer  # noqa: E402

CRITEO = np.dtype([("label", "<i4"), ("dense", "<f4", (13,)), ("cat", "<i4", (26,))])


def _server_cpu(server: PostgresServer) -> float:
    """CPU seconds of every PostgreSQL process of this server (its postmaster and backends)."""
    pid_file = os.path.join(server.data, "postmaster.pid")
    root = int(open(pid_file).readline())
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in [root] + [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if pid == root or int(stat[1]) == root:
            total += (int(stat[11]) + int(stat[12]) + int(stat[13]) + int(stat[14])) / tick
    return total


def _writer(url: str, writer: int, batches: int, per_batch: int, sample_bytes: int, rows: int, go, out) -> None:
    store = SampleStore.open(url)
    rng = np.random.default_rng(writer)
    payload = [rng.integers(0, 256, sample_bytes, dtype=np.uint8).tobytes() for _ in range(per_batch)]
    block = np.zeros(rows, CRITEO)
    go.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for b in range(batches):
        store.append([{"bin": p, "cls": j % 10} for j, p in enumerate(payload)], labels="cls")
        store.append_records(block, labels="label")
    out.put((time.perf_counter() - t0, time.process_time() - c0, time.perf_counter()))
    store.close()


def run(url: str, writers: int, args, server: PostgresServer | None) -> dict:
    ctx = mp.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    share = args.batches // writers
    procs = [ctx.Process(target=_writer, args=(url, w, share, args.per_batch, args.sample_bytes, args.rows, go, out))
             for w in range(writers)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # every writer open and waiting
    pg0 = _server_cpu(server) if server else 0.0
    start = time.perf_counter()
    go.set()
    results = [out.get(timeout=1200) for _ in procs]
    for p in procs:
        p.join(60)
    wall = max(end for _, _, end in results) - start
    samples = share * writers * args.per_batch
    return {"writers": writers, "wall_s": wall, "samples_per_s": samples / wall,
            "rows_per_s": share * writers * args.rows / wall, "writer_cpu_s": sum(c for _, c, _ in results),
            "server_cpu_s": (_server_cpu(server) - pg0) if server else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=240, help="appends in all (of samples, and of records)")
    parser.add_argument("--per-batch", type=int, default=64)
    parser.add_argument("--sample-bytes", type=int, default=3072)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-writers-")
    lines = ["| catalog | writers | wall s | samples/s | rows/s | writer CPU s | PostgreSQL CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    try:
        with PostgresServer() as server:
            configs = [("sqlite", 1)] + [("postgresql", w) for w in args.writers]
            for i, (backend, writers) in enumerate(configs):
                url = os.path.join(root, f"s{i}")
                SampleStore.create(url, catalog=server.url if backend == "postgresql" else None).close()
                r = run(url, writers, args, server if backend == "postgresql" else None)
                lines.append(f"| {backend} | {writers} | {r['wall_s']:.2f} | {r['samples_per_s']:,.0f} | "
                             f"{r['rows_per_s']:,.0f} | {r['writer_cpu_s']:.2f} | "
                             f"{r['server_cpu_s']:.2f} |" if backend == "postgresql" else
                             f"| {backend} | {writers} | {r['wall_s']:.2f} | {r['samples_per_s']:,.0f} | "
                             f"{r['rows_per_s']:,.0f} | {r['writer_cpu_s']:.2f} | – |")
                print(lines[-1], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = "\n".join(lines)
    print(f"\n{os.cpu_count()} cores; {args.batches} appends of {args.per_batch} x {args.sample_bytes} B samples and "
          f"{args.batches} of {args.rows} x {CRITEO.itemsize} B rows per configuration\n\n{table}")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
