#!/usr/bin/env python
"""What a reader costs on a store of 10⁸ sample keys, on both catalogs, against the reader before issue 14 (which
held one row per sample of the whole store): open, a new-data query of 1 k keys, and locating a training set of 1 M
random keys — time and peak memory of a fresh reader process each. Also, for a remote (S3) store after 1,000 small
commits, the bytes a new reader downloads to open it.

The big stores are built fast: 100,000 real samples are appended (10 shards of 10,000, an 8-byte member each, 1 KiB
in the tar), then the catalog gets ``--keys`` − 100,000 more sample entries in bulk SQL, entry ``k`` pointing at the
bytes of real sample ``k mod 100,000`` (timestamp ``k``, label ``k mod 10``, one member row each). Every key is
a sample with its own catalog entry and member row, as if appended one by one; only the shard bytes are shared.

Run from the repository root (starts its own PostgreSQL and S3 endpoint on loopback)::

    python benchmarks/bench_catalog_scale.py --keys 100000000            # ~40 GB of catalogs under --work
    python benchmarks/bench_catalog_scale.py --keys 2000000 --commits 50 # smoke run

``--baseline-rev`` names the git revision whose reader is "before" (run from a temporary worktree of it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, ".")
sys.path.insert(0, "tests")

REAL = 100_000
SHARD_SAMPLES = 10_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------- building
def build(url: str, keys: int, catalog_url: str | None) -> None:
    from lightning_modyn.store import SampleStore

    store = SampleStore.create(url, catalog=catalog_url, shard_max_samples=SHARD_SAMPLES)
    store.append([{"bin": (i % 2**63).to_bytes(8, "little")} for i in range(REAL)], timestamps=np.arange(REAL),
                 labels=np.arange(REAL) % 10)
    cat = store.catalog
    postgres = catalog_url is not None
    chunk = 5_000_000
    with cat.transaction():
        version = int(cat.get_meta("version")) if postgres else 0
        for lo in range(REAL, keys, chunk):
            hi = min(keys, lo + chunk)
            if postgres:
                cat.conn.execute(
                    'INSERT INTO entries (first_key, count, shard, "offset", length, min_ts, max_ts, label, appended, '
                    "commit_version) SELECT g, 1, r.shard, r.\"offset\", r.length, g, g, g %% 10, r.appended, %s "
                    "FROM generate_series(%s::bigint, %s::bigint) g JOIN entries r ON r.first_key = g %% %s",
                    (version, lo, hi - 1, REAL))
                cat.conn.execute(
                    "INSERT INTO members SELECT 'bin', g, 512, 8 FROM generate_series(%s::bigint, %s::bigint) g",
                    (lo, hi - 1))
            else:
                cte = "WITH RECURSIVE g(k) AS (SELECT ? UNION ALL SELECT k + 1 FROM g WHERE k + 1 < ?) "
                cat.conn.execute(
                    cte + 'INSERT INTO entries (first_key, count, shard, "offset", length, min_ts, max_ts, label, '
                    "appended, wds_key, ts_blob, label_blob) SELECT k, 1, r.shard, r.\"offset\", r.length, k, k, "
                    "k % 10, r.appended, NULL, NULL, NULL FROM g JOIN entries r ON r.first_key = k % ?",
                    (lo, hi, REAL))
                cat.conn.execute(cte + "INSERT INTO members SELECT 'bin', k, 512, 8 FROM g", (lo, hi))
            log(f"  {hi:,} keys")
        extra = keys - REAL
        cat.set_meta("next_key", keys)
        cat._execute("UPDATE shards SET total = total + ?, live = live + ?", (extra // 10, extra // 10))
        cat._execute("UPDATE label_counts SET count = count + ?", (extra // 10,))
        cat.bump()
    if postgres:
        cat.conn.execute("ANALYZE")
    store.close()


# ---------------------------------------------------------------------------------------------- measuring
def _rss() -> tuple[int, int]:
    """(current, peak) resident set of this process, bytes."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def measure(url: str, keys: int, seed: int) -> dict:
    """In a fresh process: open, a new-data query, locating 1 M random keys, then one batch read of them."""
    from lightning_modyn.store import SampleStore

    base = _rss()[0]
    t = time.perf_counter()
    store = SampleStore.open(url, readonly=True)
    out = {"open_s": time.perf_counter() - t, "open_peak_mb": (_rss()[1] - base) / 2**20}
    t = time.perf_counter()
    new = store.keys_after(keys - 1001)
    out["new_data_1k_s"] = time.perf_counter() - t
    assert len(new) == 1000, len(new)
    wanted = np.random.default_rng(seed).choice(keys, 1_000_000, replace=False)
    t = time.perf_counter()
    live = store.contains(wanted)
    out["locate_1m_s"] = time.perf_counter() - t
    out["locate_peak_mb"] = (_rss()[1] - base) / 2**20
    assert live.all()
    batch = wanted[:4096]
    store.get_member(batch, "bin")
    t = time.perf_counter()
    got = store.get_member(batch, "bin").array()
    out["batch_4096_ms"] = (time.perf_counter() - t) * 1000
    assert (got.view("<i8").reshape(-1) == batch % REAL).all()
    return out


def measure_in_subprocess(url: str, keys: int, code_root: str, timeout: int = 3600) -> dict:
    env = {**os.environ, "PYTHONPATH": code_root}
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", url, "--keys", str(keys)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=code_root, timeout=timeout)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' '.join(tail)[:300]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- remote open
def remote_open_bytes(commits: int, catalog_url: str | None, endpoint: str) -> dict:
    import s3fs
    import uuid

    from lightning_modyn.store import SampleStore

    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"}}
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    url = f"s3://{bucket}/store"
    store = SampleStore.create(url, catalog=catalog_url, storage_options=options)
    for i in range(commits):
        store.append([{"bin": i.to_bytes(8, "little")}])
    store.close()
    code = ("import json, sys; sys.path.insert(0, '.')\n"
            "from lightning_modyn.store import SampleStore, filesystem\n"
            "seen = {'bytes': 0, 'requests': 0}\n"
            "real_get, real_read = filesystem.StoreFS.get_file, filesystem.StoreFS.read_bytes\n"
            "def get_file(self, rel, local):\n"
            "    real_get(self, rel, local); seen['requests'] += 1\n"
            "    import os; seen['bytes'] += os.path.getsize(local)\n"
            "def read_bytes(self, rel):\n"
            "    data = real_read(self, rel); seen['requests'] += 1; seen['bytes'] += len(data); return data\n"
            "filesystem.StoreFS.get_file, filesystem.StoreFS.read_bytes = get_file, read_bytes\n"
            f"s = SampleStore.open({url!r}, readonly=True, storage_options={options!r})\n"
            "n = len(s); s.close(); print(json.dumps({**seen, 'samples': n}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000_000)
    parser.add_argument("--commits", type=int, default=1000, help="small commits before the remote open")
    parser.add_argument("--work", default=os.path.join("benchmarks", "_work", "catalog_scale"))
    parser.add_argument("--baseline-rev", default="07819d7", help="the reader that held every row")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-remote", action="store_true")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.keys, 0)))
        return

    from services import PostgresServer, start_s3

    root = os.path.abspath(os.getcwd())
    os.makedirs(args.work, exist_ok=True)
    lines = ["| catalog | keys | reader | open s | open peak MB | new-data query (1 k keys) s | locate 1 M random keys s "
             "| peak MB after locating | read of 4,096 of them ms |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]

    def row(backend: str, keys: int, reader: str, r: dict) -> None:
        if "error" in r:
            lines.append(f"| {backend} | {keys:,} | {reader} | {r['error']} ||||||")
        else:
            lines.append(f"| {backend} | {keys:,} | {reader} | {r['open_s']:.3f} | {r['open_peak_mb']:.0f} | "
                         f"{r['new_data_1k_s']:.4f} | {r['locate_1m_s']:.2f} | {r['locate_peak_mb']:.0f} | "
                         f"{r['batch_4096_ms']:.1f} |")
        log(lines[-1])

    baseline_tree = None
    if not args.skip_baseline:
        baseline_tree = tempfile.mkdtemp(prefix="bench-baseline-")
        subprocess.run(["git", "worktree", "add", "-f", "--detach", baseline_tree, args.baseline_rev], check=True,
                       capture_output=True)
    try:
        with PostgresServer() as pg:
            for backend in args.backends:
                url = os.path.join(os.path.abspath(args.work), f"{backend}-{args.keys}")
                shutil.rmtree(url, ignore_errors=True)
                t = time.perf_counter()
                log(f"building a {backend} store of {args.keys:,} keys")
                build(url, args.keys, pg.url if backend == "postgresql" else None)
                log(f"built in {time.perf_counter() - t:.0f} s")
                row(backend, args.keys, "this version", measure_in_subprocess(url, args.keys, root))
                if baseline_tree and backend == "sqlite":
                    row(backend, args.keys, f"before ({args.baseline_rev})",
                        measure_in_subprocess(url, args.keys, baseline_tree))
                shutil.rmtree(url, ignore_errors=True)
            remote = ["| catalog | commits | bytes downloaded to open | requests |", "|---|---:|---:|---:|"]
            if not args.skip_remote:
                endpoint, moto = start_s3()
                try:
                    for backend in args.backends:
                        r = remote_open_bytes(args.commits, pg.url if backend == "postgresql" else None, endpoint)
                        remote.append(f"| {backend} | {args.commits:,} | {r.get('bytes', r.get('error'))} | "
                                      f"{r.get('requests', '')} |")
                        log(remote[-1])
                finally:
                    moto.terminate()
    finally:
        if baseline_tree:
            subprocess.run(["git", "worktree", "remove", "--force", baseline_tree], capture_output=True)
    text = "\n".join(lines) + "\n\n" + "\n".join(remote) + "\n"
    print("\n" + text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
