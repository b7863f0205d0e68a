#!/usr/bin/env python
"""Storage benchmark of ``SampleStore`` (issue 2): read throughput versus a numpy memmap ceiling, bytes on disk,
ingest rate, and the cost of catalog queries on a store of 100 M record keys.

Run from the repository root::

    python benchmarks/bench_store.py                     # full run (writes ~18 GB under benchmarks/_work/)
    python benchmarks/bench_store.py --rows 200000 --samples 20000 --scale-rows 2000000   # smoke run
    python benchmarks/bench_store.py --skip-scale        # without the 100 M-key part

It prints progress, then a markdown table, and writes every number to ``--out`` (JSON). Parts:

1. ``get_records`` of random keys over Criteo-format records (160 B rows) versus ``mm[idx]`` on one contiguous
   ``np.memmap`` of the same rows (the ceiling). Page cache warmed for both, methods alternated, median batch.
2. ``get`` / ``get(meta=False)`` / ``get_member(...).array()`` of 3 KiB samples (one member each) versus ``mm[idx]``
   on an ``(N, 3072)`` uint8 memmap.
3. Bytes on disk per record row and per 3 KiB sample (every file of the store directory counted).
4. ``ingest`` of shards written by ``webdataset.ShardWriter``: samples indexed per second.
5. Scale: ``open`` (fresh subprocess and in-process), ``time_range`` and ``keys_after`` returning ~1 k / 100 k /
   1 M keys on a store of ``--scale-rows`` record keys and on a 10x smaller one: time and peak memory.

``--profile`` adds cProfile listings of the read paths (written next to the JSON).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import io
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from _common import warm_files  # the scripts run from benchmarks/

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORK = os.path.join(REPO, "benchmarks", "_work")

CRITEO = np.dtype([("label", "<i4"), ("dense", "<f4", (13,)), ("cat", "<i4", (26,))])
assert CRITEO.itemsize == 160
SAMPLE_BYTES = 32 * 32 * 3  # 3072
TS0 = 1_600_000_000  # first timestamp; one timestamp per ``ROWS_PER_TS`` record rows
ROWS_PER_TS = 1000

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:8.1f}s] {msg}", flush=True)


# ====================================================================== helpers
def dir_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except FileNotFoundError:
                pass
    return total


def rss_now() -> int:
    """Resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def gen_records(n: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.empty(n, CRITEO)
    rows["label"] = rng.integers(0, 2, n, dtype=np.int32)
    rows["dense"] = rng.standard_normal((n, 13), dtype=np.float32)
    rows["cat"] = rng.integers(0, 1 << 31, (n, 26), dtype=np.int32)
    return rows


def record_timestamps(start: int, n: int) -> np.ndarray:
    return TS0 + np.arange(start, start + n, dtype=np.int64) // ROWS_PER_TS


def stats(times: list[float]) -> dict:
    s = sorted(times)
    return {"median_s": statistics.median(s), "min_s": s[0], "p90_s": s[min(len(s) - 1, int(0.9 * len(s)))],
            "n": len(s)}


def bench_alternating(methods: dict, n_keys: int, batch: int, repeats: int, seed: int, warmup: int = 3) -> dict:
    """Time each method on the same random key batches, rotating which method goes first, median batch time."""
    rng = np.random.default_rng(seed)
    names = list(methods)
    for _ in range(warmup):
        idx = rng.integers(0, n_keys, batch)
        for name in names:
            methods[name](idx)
    times: dict[str, list[float]] = {name: [] for name in names}
    faults = {name: 0 for name in names}
    for r in range(repeats):
        idx = rng.integers(0, n_keys, batch)
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            f0 = page_faults()
            t0 = time.perf_counter()
            methods[name](idx)
            times[name].append(time.perf_counter() - t0)
            faults[name] += page_faults() - f0
    out = {}
    for name in names:
        st = stats(times[name])
        st["rows_per_s"] = batch / st["median_s"]
        st["page_faults_per_batch"] = faults[name] / repeats
        out[name] = st
    return out


def per_shard_maps(read):
    """``read`` with the span of shards turned off (``LIGHTNING_MODYN_SPANMAP=0``): one map and gather per shard,
    as before the span existed, timed side by side with the default."""
    def call(idx):
        os.environ["LIGHTNING_MODYN_SPANMAP"] = "0"
        try:
            return read(idx)
        finally:
            os.environ.pop("LIGHTNING_MODYN_SPANMAP", None)
    return call


def member_bytes_floor(reader, n: int, ext: str):
    """What any per-sample read costs at least: one Python ``bytes`` per key, sliced from the shard's ``mmap``
    (where each member lies is looked up beforehand, outside the timing; nothing is parsed, no dict is built)."""
    keys = np.arange(n)
    snap, pos = reader._reader.locate(keys)
    rel, size = reader._reader._member_layout(snap, ext)
    start = (snap.offset[pos] + rel[pos]).tolist()
    end = (snap.offset[pos] + rel[pos] + size[pos]).tolist()
    maps = {sid: reader.files._maps[path][0] for sid, path in snap.path_of_shard.items()
            if reader.files.array(path) is not None}
    shard_map = [maps[s] for s in snap.shard[pos].tolist()]

    def read(idx):
        return [shard_map[i][start[i] : end[i]] for i in idx.tolist()]
    return read


def page_faults() -> int:
    """Minor + major page faults of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_minflt + ru.ru_majflt


def prefault(read, n: int, chunk: int = 1 << 18) -> None:
    """Read every key once through ``read`` so that its memory maps are populated (not just the page cache)."""
    for start in range(0, n, chunk):
        read(np.arange(start, min(n, start + chunk)))


CEILING = "numpy memmap mm[idx]"
RAW_CEILING = "numpy np.take(memmap as (N, bytes) uint8, idx, axis=0)"


def add_ratios(timing: dict, unit: str) -> None:
    """Ratio of each method to the memmap ceiling ``mm[idx]`` (the target's definition) and to the best numpy."""
    ceiling = timing[CEILING]["rows_per_s"]
    best = max(timing[CEILING]["rows_per_s"], timing[RAW_CEILING]["rows_per_s"])
    for name, st in timing.items():
        st["ratio_to_memmap"] = st["rows_per_s"] / ceiling
        st["ratio_to_best_numpy"] = st["rows_per_s"] / best
        log(f"  {name:55s} median {fmt_s(st['median_s'])}  {fmt_rate(st['rows_per_s'])} {unit}  "
            f"{st['ratio_to_memmap']:.2f}x mm[idx], {st['ratio_to_best_numpy']:.2f}x best numpy, "
            f"{st['page_faults_per_batch']:.0f} page faults/batch")


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k/s"
    return f"{x:.0f} /s"


def fmt_s(x: float) -> str:
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.2f} ms"
    return f"{x:.2f} s"


def fmt_b(x: float) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{x:.0f} B"


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "lightning_modyn"],
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "unknown", None
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_bytes": mem, "python": platform.python_version(),
            "numpy": np.__version__, "kernel": platform.release(), "git_commit": commit,
            "package_dirty": dirty, "date": datetime.datetime.now().isoformat(timespec="seconds")}


def profile_calls(fn, keysets, path: str, title: str) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for idx in keysets:
        fn(idx)
    prof.disable()
    buf = io.StringIO()
    buf.write(f"==== {title}: {len(keysets)} batches\n")
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(18)
    text = buf.getvalue()
    with open(path, "a") as fh:
        fh.write(text + "\n")
    return text


# ====================================================================== part 1 + 3: records
def part_records(args, work: str, res: dict, SampleStore) -> None:
    n = args.rows
    rng = np.random.default_rng(1)
    url_multi = os.path.join(work, "records_store")
    url_single = os.path.join(work, "records_store_1shard")
    raw_path = os.path.join(work, "records.bin")
    log(f"records: building {n:,} Criteo rows (160 B) as a store appended in chunks of {args.append_rows:,} rows, "
        f"and as a raw file for np.memmap")
    store = SampleStore.create(url_multi)
    t_append = 0.0
    with open(raw_path, "wb") as raw:
        for start in range(0, n, args.append_rows):
            m = min(args.append_rows, n - start)
            rows = gen_records(m, rng)
            raw.write(rows.tobytes())
            t0 = time.perf_counter()
            store.append_records(rows, timestamps=record_timestamps(start, m), labels="label")
            t_append += time.perf_counter() - t0
    info = store.info()
    store.close()
    log(f"records: append_records {n / t_append:,.0f} rows/s ({n * 160 / t_append / 2**20:.0f} MiB/s), "
        f"{info['shards']} shards")
    mm = np.memmap(raw_path, dtype=CRITEO, mode="r")
    log("records: building the same rows as a one-shard store (one append_records call)")
    single = SampleStore.create(url_single)
    single.append_records(np.asarray(mm), timestamps=record_timestamps(0, n), labels="label")
    single_shards = single.info()["shards"]
    single.close()

    multi_bytes, single_bytes = dir_bytes(url_multi), dir_bytes(url_single)
    res["records"] = {
        "rows": n, "itemsize": 160, "append_chunk_rows": args.append_rows,
        "append_rows_per_s": n / t_append, "shards": info["shards"], "shards_single": single_shards,
        "store_bytes": multi_bytes, "bytes_per_row": multi_bytes / n,
        "store_bytes_single": single_bytes, "bytes_per_row_single": single_bytes / n,
        "catalog_bytes": sum(os.path.getsize(os.path.join(url_multi, f)) for f in os.listdir(url_multi)
                             if f.startswith("catalog.sqlite")),
    }
    log(f"records: store {fmt_b(multi_bytes)} = {multi_bytes / n:.2f} B/row "
        f"({multi_bytes / n / 160:.4f}x of 160 B); one-shard store {single_bytes / n:.2f} B/row")

    log("records: warming the page cache (store files and memmap file)")
    for p in (url_multi, url_single, raw_path):
        warm_files(p)
    reader = SampleStore.open(url_multi, readonly=True)
    reader1 = SampleStore.open(url_single, readonly=True)
    check = np.random.default_rng(7).integers(0, n, 1000)
    assert reader.get_records(check).tobytes() == mm[check].tobytes(), "store rows differ from the written rows"
    assert reader1.get_records(check).tobytes() == mm[check].tobytes(), "store rows differ from the written rows"
    mm_bytes = np.memmap(raw_path, dtype=np.uint8, mode="r").reshape(n, 160)
    log("records: populating every memory map (each method reads all rows once), so that timed batches measure "
        "steady state rather than first-touch page faults")
    for read in (reader.get_records, reader1.get_records, lambda idx: mm[idx],
                 lambda idx: np.take(mm_bytes, idx, axis=0)):
        prefault(read, n)
    methods = {
        f"store.get_records ({info['shards']} shards)": reader.get_records,
        f"store.get_records ({single_shards} shard)": reader1.get_records,
        f"store.get_records(keys[read_order]) ({info['shards']} shards, batch order free)":
            lambda idx: reader.get_records(idx[reader.read_order(idx)]),
        CEILING: lambda idx: mm[idx],
        RAW_CEILING: lambda idx: np.take(mm_bytes, idx, axis=0).view(CRITEO).reshape(-1),
    }
    log(f"records: timing {args.repeats} batches of {args.batch} random keys per method (alternating)")
    timing = bench_alternating(methods, n, args.batch, args.repeats, seed=11)
    add_ratios(timing, "rows")
    res["records"]["timing"] = timing
    if args.profile:
        keysets = [np.random.default_rng(100 + i).integers(0, n, args.batch) for i in range(50)]
        for label, fn in ((f"get_records, {info['shards']} shards", reader.get_records),
                          ("get_records, 1 shard", reader1.get_records)):
            profile_calls(fn, keysets, args.profile_path, label)
        log(f"records: profiles appended to {args.profile_path}")
    reader.close()
    reader1.close()
    del mm, mm_bytes


# ====================================================================== part 2 + 3: 3 KiB samples
def part_samples(args, work: str, res: dict, SampleStore) -> None:
    n = args.samples
    rng = np.random.default_rng(2)
    url = os.path.join(work, "samples_store")
    raw_path = os.path.join(work, "samples.bin")
    log(f"samples: building {n:,} samples of {SAMPLE_BYTES} B (member 'bin', labels 0..9) appended in chunks of "
        f"{args.sample_append:,}, and an (N, 3072) uint8 raw file")
    store = SampleStore.create(url)
    t_append = 0.0
    with open(raw_path, "wb") as raw:
        for start in range(0, n, args.sample_append):
            m = min(args.sample_append, n - start)
            data = rng.integers(0, 256, (m, SAMPLE_BYTES), dtype=np.uint8)
            raw.write(data.tobytes())
            labels = rng.integers(0, 10, m)
            t0 = time.perf_counter()
            samples = [{"bin": data[i].tobytes()} for i in range(m)]
            store.append(samples, timestamps=TS0 + start // ROWS_PER_TS, labels=labels)
            t_append += time.perf_counter() - t0
    info = store.info()
    store.close()
    nbytes = dir_bytes(url)
    res["samples"] = {
        "samples": n, "sample_bytes": SAMPLE_BYTES, "append_chunk": args.sample_append,
        "append_samples_per_s": n / t_append, "shards": info["shards"],
        "store_bytes": nbytes, "bytes_per_sample": nbytes / n, "overhead": nbytes / n / SAMPLE_BYTES,
    }
    log(f"samples: append {n / t_append:,.0f} samples/s, {info['shards']} shards, {nbytes / n:.0f} B/sample "
        f"({nbytes / n / SAMPLE_BYTES:.3f}x of 3072 B)")
    mm = np.memmap(raw_path, dtype=np.uint8, mode="r").reshape(n, SAMPLE_BYTES)
    url1 = os.path.join(work, "samples_store_1shard")
    log("samples: building the same samples as a one-shard store (shard_max_samples=N, one append call)")
    one = SampleStore.create(url1, shard_max_samples=n, shard_max_bytes=1 << 40)
    one.append([{"bin": mm[i].tobytes()} for i in range(n)], timestamps=TS0, labels=np.zeros(n, np.int64))
    shards1 = one.info()["shards"]
    one.close()
    log("samples: warming the page cache")
    warm_files(url)
    warm_files(url1)
    warm_files(raw_path)
    reader = SampleStore.open(url, readonly=True)
    reader1 = SampleStore.open(url1, readonly=True)
    check = np.random.default_rng(8).integers(0, n, 200)
    got = reader.get(check)
    assert all(g["bin"] == mm[k].tobytes() for g, k in zip(got, check.tolist())), "store bytes differ"
    assert reader.get_member(check, "bin").array().tobytes() == mm[check].tobytes(), "get_member bytes differ"
    assert reader1.get_member(check, "bin").array().tobytes() == mm[check].tobytes(), "get_member bytes differ"
    log("samples: populating every memory map (each store and the memmap read in full once)")
    for read in (lambda idx: reader.get_member(idx, "bin"), per_shard_maps(lambda idx: reader.get_member(idx, "bin")),
                 lambda idx: reader1.get_member(idx, "bin"), lambda idx: reader1.get(idx, meta=False),
                 lambda idx: np.take(mm, idx, axis=0)):
        prefault(read, n, chunk=1 << 14)
    bytes_floor = member_bytes_floor(reader, n, "bin")
    prefault(bytes_floor, n, chunk=1 << 14)
    sh = f"{info['shards']} shards"
    methods = {
        f"store.get(keys) ({sh})": reader.get,
        f"store.get(keys, meta=False) ({sh})": lambda idx: reader.get(idx, meta=False),
        f"store.get_member(keys, 'bin').array() ({sh})": lambda idx: reader.get_member(idx, "bin").array(),
        f"store.get_member(keys, 'bin').array() ({sh}, one map per shard)":
            per_shard_maps(lambda idx: reader.get_member(idx, "bin").array()),
        f"store.get_member(keys[read_order], 'bin').array() ({sh}, batch order free)":
            lambda idx: reader.get_member(idx[reader.read_order(idx)], "bin").array(),
        f"store.get(keys, meta=False) ({shards1} shard)": lambda idx: reader1.get(idx, meta=False),
        f"store.get_member(keys, 'bin').array() ({shards1} shard)": lambda idx: reader1.get_member(idx, "bin").array(),
        f"floor of any get: one bytes per key sliced from the shard maps ({sh})": bytes_floor,
        CEILING: lambda idx: mm[idx],
        RAW_CEILING: lambda idx: np.take(mm, idx, axis=0),
    }
    log(f"samples: timing {args.repeats} batches of {args.batch} random keys per method (alternating)")
    timing = bench_alternating(methods, n, args.batch, args.repeats, seed=12)
    add_ratios(timing, "samples")
    res["samples"]["timing"] = timing
    res["samples"]["shards_single"] = shards1
    res["samples"]["bytes_per_sample_single"] = dir_bytes(url1) / n
    if args.profile:
        keysets = [np.random.default_rng(200 + i).integers(0, n, args.batch) for i in range(10)]
        profile_calls(reader.get, keysets, args.profile_path, "get(keys) of 3 KiB samples")
        profile_calls(lambda k: reader.get(k, meta=False), keysets, args.profile_path,
                      "get(keys, meta=False) of 3 KiB samples")
        profile_calls(lambda k: reader.get_member(k, "bin").array(), keysets, args.profile_path,
                      f"get_member(keys, 'bin') of 3 KiB samples, {sh}")
        profile_calls(lambda k: reader1.get_member(k, "bin").array(), keysets, args.profile_path,
                      "get_member(keys, 'bin') of 3 KiB samples, 1 shard")
        log(f"samples: profiles appended to {args.profile_path}")
    reader.close()
    reader1.close()
    del mm


# ====================================================================== part 4: ingest
def part_ingest(args, work: str, res: dict, SampleStore) -> None:
    import webdataset as wds

    n, nshards = args.ingest_samples, args.ingest_shards
    per = -(-n // nshards)
    folder = os.path.join(work, "wds_shards")
    os.makedirs(folder, exist_ok=True)
    log(f"ingest: writing {n:,} small samples (64 B 'bin' + 'cls') over {nshards} shards with webdataset.ShardWriter")
    payload = np.random.default_rng(3).integers(0, 256, (n, 64), dtype=np.uint8)
    t0 = time.perf_counter()
    with wds.ShardWriter(os.path.join(folder, "shard-%06d.tar"), maxcount=per, verbose=0) as sink:
        for i in range(n):
            sink.write({"__key__": f"sample{i:09d}", "bin": payload[i].tobytes(), "cls": i % 10})
    t_write = time.perf_counter() - t0
    shards = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".tar"))
    warm_files(folder)
    out = {"samples": n, "shards": len(shards), "shardwriter_s": t_write,
           "shard_bytes": sum(os.path.getsize(s) for s in shards)}
    for name, kwargs in (("plain", {}), ("labels='cls'", {"labels": "cls"})):
        times = []
        for rep in range(args.ingest_repeats):  # each into a new store (a store refuses a shard it already has)
            url = os.path.join(work, f"ingest_store_{'plain' if not kwargs else 'labels'}_{rep}")
            store = SampleStore.create(url)
            t0 = time.perf_counter()
            keys = store.ingest(shards, **kwargs)
            times.append(time.perf_counter() - t0)
            assert len(keys) == n
            store.close()
            catalog = dir_bytes(url)
            shutil.rmtree(url)
        dt = statistics.median(times)
        out[name] = {"seconds": dt, "seconds_all": times, "samples_per_s": n / dt, "catalog_bytes": catalog}
        log(f"ingest ({name}): {n:,} samples in {dt:.2f} s (median of {len(times)}: "
            f"{', '.join(f'{t:.2f}' for t in times)}) = {n / dt:,.0f} samples/s, catalog {fmt_b(catalog)}")
    if args.profile:
        url = os.path.join(work, "ingest_store_profile")
        store = SampleStore.create(url)
        profile_calls(lambda _: store.ingest(shards), [None], args.profile_path, "ingest (plain)")
        store.close()
    res["ingest"] = out


# ====================================================================== part 5: scale
def build_scale_store(url: str, n: int, chunk: int, SampleStore) -> dict:
    rng = np.random.default_rng(5)
    rows = gen_records(min(chunk, n), rng)  # one random chunk reused: the content does not matter here
    store = SampleStore.create(url)
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        store.append_records(rows[:m], timestamps=record_timestamps(start, m), labels="label")
        done = start + m
        el = time.perf_counter() - t0
        if (start // chunk) % 5 == 4 or done == n:
            log(f"  scale store {os.path.basename(url)}: {done:,}/{n:,} rows, {done / el:,.0f} rows/s, "
                f"ETA {(n - done) / (done / el):.0f} s")
    dt = time.perf_counter() - t0
    info = store.info()
    entries = store.catalog.conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    store.close()
    nbytes = dir_bytes(url)
    return {"rows": n, "build_s": dt, "rows_per_s": n / dt, "shards": info["shards"], "entries": entries,
            "store_bytes": nbytes, "bytes_per_row": nbytes / n,
            "catalog_bytes": sum(os.path.getsize(os.path.join(url, f)) for f in os.listdir(url)
                                 if f.startswith("catalog.sqlite"))}


def scale_queries(n: int) -> list[tuple[str, str, int, int, int]]:
    """(name, kind, a, b, expected keys): time_range(a, b) or keys_after(a)."""
    mid = TS0 + (n // 2) // ROWS_PER_TS
    qs = [("time_range ~1k", "time_range", mid, mid + 1, 1_000),
          ("time_range ~100k", "time_range", mid, mid + 100, 100_000),
          ("time_range ~1M", "time_range", mid, mid + 1000, 1_000_000),
          ("keys_after ~1k", "keys_after", n - 1_001, 0, 1_000),
          ("keys_after ~100k", "keys_after", n - 100_001, 0, 100_000)]
    return [q for q in qs if q[4] <= n // 4]


def query_worker(spec: dict) -> dict:
    """Runs in a fresh interpreter: import, open, first read, then the queries (time and peak memory)."""
    t0 = time.perf_counter()
    from lightning_modyn.store.store import SampleStore

    t_import = time.perf_counter() - t0
    rss0 = rss_now()
    t0 = time.perf_counter()
    store = SampleStore.open(spec["url"], readonly=True)
    t_open = time.perf_counter() - t0
    rss_open = rss_now()
    t0 = time.perf_counter()
    store.get_records([0])
    t_first = time.perf_counter() - t0
    rss_first = rss_now()
    out = {"import_s": t_import, "open_s": t_open, "first_get_records_s": t_first,
           "rss_growth_open_bytes": rss_open - rss0, "rss_growth_first_read_bytes": rss_first - rss_open,
           "rss_after_first_read_bytes": rss_first, "queries": {}}
    n = spec["rows"]
    for name, kind, a, b, expect in scale_queries(n):
        q = (lambda a=a, b=b: store.time_range(a, b)) if kind == "time_range" else (lambda a=a: store.keys_after(a))
        got = len(q())
        times = []
        for _ in range(spec["query_repeats"]):
            t0 = time.perf_counter()
            q()
            times.append(time.perf_counter() - t0)
        gc.collect()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = q()
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        result_bytes = result.keys.nbytes + result.timestamps.nbytes + result.labels.nbytes
        del result
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["queries"][name] = {"keys": got, "expected": expect, **stats(times),
                                "tracemalloc_peak_bytes": peak, "result_bytes": result_bytes,
                                "maxrss_growth_kib": rss_after - rss_before}
    # random reads over the whole store, freshly mapped in this process (the shards were just written, so they are
    # mostly in the page cache, but not mapped): pass 1 pays first-touch page faults, pass 2 repeats the same keys
    rng = np.random.default_rng(13)
    batches = [rng.integers(0, n, spec["batch"]) for _ in range(spec["read_repeats"])]
    for label in ("fresh_maps", "same_keys_again"):
        times, faults = [], 0
        for idx in batches:
            f0 = page_faults()
            t0 = time.perf_counter()
            store.get_records(idx)
            times.append(time.perf_counter() - t0)
            faults += page_faults() - f0
        st = stats(times)
        st["rows_per_s"] = spec["batch"] / st["median_s"]
        st["page_faults_per_batch"] = faults / len(batches)
        out[f"get_records_random_{label}"] = st
    store.close()
    return out


def run_worker(spec: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--query-worker", json.dumps(spec)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"query worker failed:\n{proc.stdout}\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["subprocess_wall_s"] = wall
    return out


def in_process_open(url: str, SampleStore, repeats: int = 5) -> dict:
    opens, firsts = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        store = SampleStore.open(url, readonly=True)
        opens.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        store.get_records([0])
        firsts.append(time.perf_counter() - t0)
        store.close()
    return {"open_s": statistics.median(opens), "first_get_records_s": statistics.median(firsts)}


def part_scale(args, work: str, res: dict, SampleStore) -> None:
    out = {}
    sizes = [("big", args.scale_rows), ("small", args.scale_rows // 10)]
    for label, n in sizes:
        url = os.path.join(work, f"scale_store_{n}")
        if os.path.exists(url):
            shutil.rmtree(url)
        log(f"scale: building a store of {n:,} record rows ({fmt_b(n * 160)} of rows) in append_records chunks of "
            f"{args.chunk_rows:,}, one timestamp per {ROWS_PER_TS} rows")
        built = build_scale_store(url, n, args.chunk_rows, SampleStore)
        log(f"scale: built in {built['build_s']:.0f} s ({built['rows_per_s']:,.0f} rows/s), {built['shards']} shards, "
            f"{built['entries']:,} catalog entries, catalog {fmt_b(built['catalog_bytes'])}, "
            f"{built['bytes_per_row']:.2f} B/row")
        built["in_process"] = in_process_open(url, SampleStore)
        log(f"scale: in-process open {fmt_s(built['in_process']['open_s'])}, first get_records "
            f"{fmt_s(built['in_process']['first_get_records_s'])}")
        spec = {"url": url, "rows": n, "query_repeats": args.query_repeats, "batch": args.batch,
                "read_repeats": 20}
        built["fresh_process"] = run_worker(spec)
        fp = built["fresh_process"]
        log(f"scale: fresh process: open {fmt_s(fp['open_s'])} (RSS +{fmt_b(fp['rss_growth_open_bytes'])}), first "
            f"get_records {fmt_s(fp['first_get_records_s'])} (RSS +{fmt_b(fp['rss_growth_first_read_bytes'])}), "
            f"import {fmt_s(fp['import_s'])}, whole subprocess {fmt_s(fp['subprocess_wall_s'])}")
        for name, q in fp["queries"].items():
            log(f"  {name:18s} {q['keys']:>9,} keys  median {fmt_s(q['median_s'])}  "
                f"peak {fmt_b(q['tracemalloc_peak_bytes'])} (result {fmt_b(q['result_bytes'])})")
        for phase in ("fresh_maps", "same_keys_again"):
            st = fp[f"get_records_random_{phase}"]
            log(f"  get_records {args.batch} random keys ({phase}): {fmt_rate(st['rows_per_s'])} rows, "
                f"{st['page_faults_per_batch']:.0f} page faults/batch")
        out[label] = built
        if not args.keep:
            shutil.rmtree(url)
            log(f"scale: removed {url}")
    res["scale"] = out


# ====================================================================== report
def markdown(res: dict, args) -> str:
    lines = ["| measure | result | target | met |", "|---|---|---|---|"]

    def timing_rows(what: str, unit: str, timing: dict) -> None:
        for name, st in timing.items():
            target, met = ("", "")
            if name not in (CEILING, RAW_CEILING):
                target, met = "≥ 0.5× `mm[idx]`", "yes" if st["ratio_to_memmap"] >= 0.5 else "**no**"
            lines.append(f"| {what}, {args.batch} random keys: {name} | {fmt_rate(st['rows_per_s'])} {unit} "
                         f"({fmt_s(st['median_s'])}/batch; {st['ratio_to_memmap']:.2f}× `mm[idx]`, "
                         f"{st['ratio_to_best_numpy']:.2f}× best numpy) | {target} | {met} |")

    rec = res.get("records")
    if rec:
        timing_rows("records", "rows", rec["timing"])
        lines.append(f"| records: store bytes per 160 B row ({rec['rows']:,} rows, {rec['shards']} shards) | "
                     f"{rec['bytes_per_row']:.2f} B ({rec['bytes_per_row'] / 160:.4f}×) | ≤ 1.1× (176 B) | "
                     f"{'yes' if rec['bytes_per_row'] <= 176 else '**no**'} |")
        lines.append(f"| records: append_records | {fmt_rate(rec['append_rows_per_s'])} rows | | |")
    smp = res.get("samples")
    if smp:
        timing_rows("3 KiB samples", "samples", smp["timing"])
        lines.append(f"| 3 KiB samples: store bytes per sample ({smp['samples']:,} samples, {smp['shards']} shards) | "
                     f"{smp['bytes_per_sample']:.0f} B ({smp['overhead']:.3f}× of 3072 B) | (reported) | |")
        lines.append(f"| 3 KiB samples: append | {fmt_rate(smp['append_samples_per_s'])} samples | | |")
    ing = res.get("ingest")
    if ing:
        for name in ("plain", "labels='cls'"):
            lines.append(f"| ingest {ing['samples']:,} samples / {ing['shards']} ShardWriter shards ({name}) | "
                         f"{fmt_rate(ing[name]['samples_per_s'])} samples ({ing[name]['seconds']:.2f} s, median of "
                         f"{len(ing[name]['seconds_all'])}) | | |")
    sc = res.get("scale")
    if sc:
        big, small = sc["big"], sc["small"]
        lines += ["", f"Scale: store of {big['rows']:,} record keys ({big['shards']} shards, "
                  f"{big['entries']:,} catalog entries, catalog {fmt_b(big['catalog_bytes'])}, "
                  f"{big['bytes_per_row']:.2f} B/row, built at "
                  f"{fmt_rate(big['rows_per_s'])} rows) versus {small['rows']:,} keys ({small['shards']} shards, "
                  f"{small['entries']:,} entries).", "",
                  f"| measure | {big['rows']:,} keys: time | peak memory | {small['rows']:,} keys: time "
                  "| peak memory |",
                  "|---|---|---|---|---|"]
        bf, sf = big["fresh_process"], small["fresh_process"]
        lines.append(f"| `SampleStore.open(url, readonly=True)`, fresh process | {fmt_s(bf['open_s'])} | "
                     f"RSS +{fmt_b(bf['rss_growth_open_bytes'])} | {fmt_s(sf['open_s'])} | "
                     f"RSS +{fmt_b(sf['rss_growth_open_bytes'])} |")
        lines.append(f"| first `get_records` after open (loads key arrays), fresh process | "
                     f"{fmt_s(bf['first_get_records_s'])} | RSS +{fmt_b(bf['rss_growth_first_read_bytes'])} | "
                     f"{fmt_s(sf['first_get_records_s'])} | RSS +{fmt_b(sf['rss_growth_first_read_bytes'])} |")
        lines.append(f"| whole subprocess (interpreter + import + open + all below) | "
                     f"{fmt_s(bf['subprocess_wall_s'])} | | {fmt_s(sf['subprocess_wall_s'])} | |")
        lines.append(f"| `import lightning_modyn.store` in that subprocess | {fmt_s(bf['import_s'])} | | "
                     f"{fmt_s(sf['import_s'])} | |")
        lines.append(f"| `open`, in-process (median of 5) | {fmt_s(big['in_process']['open_s'])} | | "
                     f"{fmt_s(small['in_process']['open_s'])} | |")
        for name, q in bf["queries"].items():
            qs = sf["queries"].get(name)
            right = (f"{fmt_s(qs['median_s'])} ({qs['keys']:,} keys) | {fmt_b(qs['tracemalloc_peak_bytes'])}"
                     if qs else "n/a | n/a")
            lines.append(f"| `{name}` | {fmt_s(q['median_s'])} ({q['keys']:,} keys) | "
                         f"{fmt_b(q['tracemalloc_peak_bytes'])} | {right} |")
        for label, what in (("fresh_maps", "fresh process, maps not yet populated"),
                            ("same_keys_again", "same batches again")):
            b, sm = bf[f"get_records_random_{label}"], sf[f"get_records_random_{label}"]
            lines.append(f"| `get_records` {args.batch} random keys ({what}) | {fmt_rate(b['rows_per_s'])} rows | "
                         f"{b['page_faults_per_batch']:.0f} page faults/batch | {fmt_rate(sm['rows_per_s'])} rows | "
                         f"{sm['page_faults_per_batch']:.0f} page faults/batch |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=4_000_000, help="Criteo rows for the read benchmark")
    p.add_argument("--append-rows", type=int, default=1_000_000, help="rows per append_records call (part 1)")
    p.add_argument("--samples", type=int, default=200_000, help="3 KiB samples for the read benchmark")
    p.add_argument("--sample-append", type=int, default=10_000, help="samples per append call (part 2)")
    p.add_argument("--batch", type=int, default=4096, help="random keys per read batch")
    p.add_argument("--repeats", type=int, default=50, help="timed batches per method")
    p.add_argument("--ingest-samples", type=int, default=100_000)
    p.add_argument("--ingest-shards", type=int, default=10)
    p.add_argument("--ingest-repeats", type=int, default=3)
    p.add_argument("--scale-rows", type=int, default=100_000_000, help="record keys of the big store (part 5)")
    p.add_argument("--chunk-rows", type=int, default=2_000_000, help="rows per append_records call (part 5)")
    p.add_argument("--query-repeats", type=int, default=5)
    p.add_argument("--skip-scale", action="store_true", help="skip part 5")
    p.add_argument("--only", choices=["records", "samples", "ingest", "scale"], action="append",
                   help="run only these parts (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the stores and data files")
    p.add_argument("--work", default=DEFAULT_WORK, help="work directory for data (default benchmarks/_work)")
    p.add_argument("--out", default=os.path.join(DEFAULT_WORK, "store.json"), help="JSON results path")
    p.add_argument("--profile", action="store_true", help="cProfile the read paths and ingest")
    p.add_argument("--query-worker", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.query_worker:
        print(json.dumps(query_worker(json.loads(args.query_worker))))
        return

    from lightning_modyn.store.store import SampleStore

    work = os.path.join(os.path.abspath(args.work), "store_bench")
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    args.profile_path = os.path.splitext(os.path.abspath(args.out))[0] + "_profile.txt"
    if args.profile and os.path.exists(args.profile_path):
        os.remove(args.profile_path)
    parts = args.only or ["records", "samples", "ingest"] + ([] if args.skip_scale else ["scale"])
    res: dict = {"machine": machine(), "argv": sys.argv[1:], "batch": args.batch, "repeats": args.repeats,
                 "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    m = res["machine"]
    log(f"machine: {m['cpu']}, {m['cores']} cores, {fmt_b(m['mem_bytes'])} RAM, numpy {m['numpy']}, "
        f"package at {m['git_commit']}{' (uncommitted changes)' if m['package_dirty'] else ''}")
    free = shutil.disk_usage(work).free
    if "scale" in parts:
        need = 1.15 * args.scale_rows * 160
        log(f"disk: {fmt_b(free)} free under {work}; the scale part needs ~{fmt_b(need)}")
        if need > free * 0.9:
            sys.exit("not enough free disk for the scale part; lower --scale-rows or use --skip-scale")
    t_start = time.perf_counter()
    try:
        for part in parts:
            t0 = time.perf_counter()
            {"records": part_records, "samples": part_samples, "ingest": part_ingest,
             "scale": part_scale}[part](args, work, res, SampleStore)
            res.setdefault("part_seconds", {})[part] = time.perf_counter() - t0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["total_seconds"] = time.perf_counter() - t_start
    res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
    table = markdown(res, args)
    res["markdown"] = table
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
    print()
    print(table)
    print()
    log(f"results written to {args.out}" + (f"; profiles in {args.profile_path}" if args.profile else ""))


if __name__ == "__main__":
    main()
