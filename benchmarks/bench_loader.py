#!/usr/bin/env python
"""Loader throughput benchmark (Modyn's throughput experiment): samples/s delivered as torch tensors.

Run from the repository root::

    python benchmarks/bench_loader.py                 # full run: 2 M Criteo rows, 100 k 3 KiB images
    python benchmarks/bench_loader.py --quick         # tiny smoke configuration (well under a minute)
    python benchmarks/bench_loader.py --workers 0 2 --rows 500000 --images 20000 --max-seconds-b 10

Workloads:

* ``rows``: Criteo-format rows (160 B, ``CRITEO_DTYPE``), stored with ``store.append_records(rows, labels="label")``;
  batches of 4096 rows; output ``({"dense": float32 (B, 13), "cat": int32 (B, 26)}, label int64 (B,))``.
* ``images``: 3 KiB images (32x32x3 uint8), one sample per key, stored with
  ``store.append([{"raw": img.tobytes(), "cls": label}], labels="cls")``; batches of 256;
  output ``(uint8 (B, 32, 32, 3), label int64 (B,))``.

Loaders, each run for every ``--workers`` value (DataLoader ``num_workers``):

* ``a``: contiguous big chunks of a local binary file (``np.memmap``) through the same DataLoader path — Modyn's
  baseline "loading big chunks locally without sample-level selection". A map-style Dataset whose item ``i`` is
  batch ``i`` (a contiguous slice, converted to the same tensors as the DataModule delivers);
  ``DataLoader(batch_size=None, sampler=RandomSampler(batch indices))``.
* ``akw`` (diagnostic, ``--no-diagnostics`` skips it): ``a`` returning a ``KeyedBatch`` that also carries keys and
  weights tensors — the DataModule's output structure without the store. With ``num_workers > 0`` every tensor of a
  batch crosses from the worker through its own shared-memory segment, so this separates that transfer cost from
  the cost of the store's gather: ``c100/a = (akw/a) * (c100/akw)``.
* ``g`` (the ceiling of any sample-level loader here): ``a`` where batch ``i`` is instead a random gather
  (``np.take``) of slice ``i`` of a fixed random permutation of all samples, with keys and weights, handed over
  from workers as one block as (c) is — a shuffled epoch with no store, no key index and no bookkeeping. ``g/a``
  bounds what ``c100/a`` can reach on this machine; ``c100/g`` is how close the DataModule comes to it.
* ``b``: plain ``webdataset.WebDataset`` streaming of the same data stored one sample per key (shards written with
  ``webdataset.ShardWriter``; rows as a raw 160 B ``row`` member + ``cls``, images as ``raw`` + ``cls``), shard
  shuffle only, batched with ``.batched(B)`` and a vectorized collation (favourable to webdataset). Capped at
  ``--max-seconds-b`` seconds per run; its rate is over what ran, excluding the first batch (worker start-up).
  For rows only the first ``--wds-rows`` rows are written as shards: writing is slow and a capped run reads a
  fraction of them anyway.
* ``c100`` / ``c50`` / ``c10``: ``ModynDataModule`` trained on 100 % (shuffled), a random 50 % and a random 10 %
  of the keys (``dm.set_training_set(keys)``; iterate ``dm.train_dataloader()``); rows with the default decode
  (``RecordsToTensors``), images with ``decode=ArrayMember("raw", [32, 32, 3])``.
* ``n100`` / ``n100p`` (issue 17): the same batches as ``c100`` (same order, keys and tensors) through
  ``torchdata.nodes``: ``Loader(lightning_modyn.data.train_node(dm, num_workers=w, method=...))``, i.e.
  ``KeyBatchNode`` (the DataModule's order) -> ``ParallelMapper(read batch, in_order=True)`` -> ``Prefetcher(2)``
  when ``w > 0``. ``n100``: ``method="thread"`` (``w = 0``: read in the consuming thread, no prefetcher);
  ``n100p``: ``method="process"`` (``w > 0`` only). Workers are started afresh every epoch (``ParallelMapper`` has no
  persistent workers) and return each tensor through torch's own shared-memory pickling (no slot ring).
  ``n100pr`` (diagnostic, ``--no-diagnostics`` skips it): ``n100p`` whose process workers hand each batch over in
  the DataModule's slot ring (``transfer.WorkerRing``; copied out by a ``Mapper`` in the training process), to
  separate the hand-over from the rest (workers restarted every epoch, the mapper's threads).
  Each (n) and (s) loader is timed with its own seed (``--seed`` + 1, 2, ...): loaders of the same order in one
  process would take each other's epoch computed ahead (``lightning_modyn.data.ahead`` keeps one per order); the
  check against (c100) uses ``--seed``.
* ``s100`` (issue 17): ``torchdata.stateful_dataloader.StatefulDataLoader`` over the DataModule's own dataset and
  order (``dm.train_parts()``), persistent workers, the workers' batches unpacked as ``ModynDataLoader`` does: what
  changes if ``StatefulDataLoader`` replaces ``ModynDataLoader``. Its sampler is the ``SelectionSampler`` behind a
  plain ``Sampler`` (``SelectionSampler.state_dict`` takes the batch count, which ``StatefulDataLoader`` does not
  pass; without one it counts the requests itself).
* ``d_*`` (only with ``--compare``): the random-access paths of other libraries on the same data, each delivering
  the same tensors for a random permutation of 100 % of the samples (``DataLoader(view, batch_size=B,
  sampler=RandomSampler, collate_fn=<the vectorized collation of (b)>)``, persistent workers), where ``view[i]`` is
  the library's own documented random access:

  - ``d_wids``: ``wids.ShardListDataset(shards, cache_dir=<shard dir>, lru_size=<#shards>, transformations=[])``
    over the webdataset shards of (b) (all rows are written as shards in a ``--compare`` run); ``view[i] = ds[i]``.
  - ``d_mds``: mosaicml-streaming ``MDSWriter(columns={"row"|"raw": "bytes", "cls": "int"})`` (default 64 MB
    shards), read with ``streaming.LocalDataset(dir)[i]`` (the map-style Dataset over local MDS shards).
  - ``d_lit64``: litdata ``optimize(fn, inputs, chunk_bytes="64MB")`` (its default chunk size), read with
    ``litdata.StreamingDataset(dir, batch_decode=0)[i]`` (per-item decode; its default ``"auto"`` decodes a
    256-item window per random access, ~0.5 k rows/s here) and ``LITDATA_POSIX_PAGE_BYTES=0`` (an environment knob
    of its POSIX fast path, read from its source: the default 256 KiB "page" is re-scanned per random access).
  - ``d_lit1``: the same with the whole data set in **one** chunk (``chunk_bytes`` > data size) and
    ``batch_decode="all"``: each process decodes the chunk once, then serves items from memory — litdata's fastest
    random access that we found.

  Each is capped at ``--max-seconds-d`` seconds per epoch (its rate excludes the first batch, favourable to
  (d)); see ``benchmarks/requirements-compare.txt`` for the environment (the project does not depend on these).

Method: ``a`` and ``c*`` use persistent workers; each gets one warm-up epoch (page cache, worker start-up), then
``--epochs`` timed epochs, the loaders taking turns epoch by epoch so that noise from other processes spreads
evenly; the table shows the median epoch rate. Each batch's tensors are only referenced (no compute).
``--max-batches`` caps every epoch. Before timing, one batch of every loader is checked against the source data.

Comparison with other libraries (issue 3 (d)), in a separate environment (``benchmarks/requirements-compare.txt``)::

    nice -n 5 /work/bench-venv/bin/python benchmarks/bench_loader.py --compare --loaders a c100 \
        --rows 500000 --images 50000 --out benchmarks/_work/loader_compare.json

  (~3 min to generate the data the first time, ~7 min to measure on the 2-core VM). ``--compare`` writes every row
  as webdataset shards (for wids), so ``--wds-rows`` is raised to ``--rows``. ``--max-seconds-d 0`` times full
  (d) epochs instead (slow for the slower libraries: use fewer ``--workloads`` / ``--workers``).

Cost: the full default run was estimated (from ``--quick`` rates on a busy 2-core VM) at about 6 minutes: ~1.5 min to
generate the data (mostly ``ShardWriter``, ~6 k samples/s) and ~4.5 min to measure, 2 x 6 x 20 s of it in ``b``;
about 2.3 GB of generated data. A second run reuses the data.

Prints progress, then markdown tables, and writes every number to ``--out`` (JSON). Generated data goes to
``benchmarks/_work/loader_data`` and is reused by later runs with the same sizes (``--regen`` rebuilds it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler
from torchdata.nodes import Loader, Mapper, ParallelMapper, Prefetcher
from torchdata.stateful_dataloader import StatefulDataLoader

from _common import warm_files  # the scripts run from benchmarks/

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lightning_modyn.data import ArrayMember, KeyBatchNode, KeyedBatch, ModynDataModule, train_node  # noqa: E402
from lightning_modyn.data.dataset import passthrough  # noqa: E402
from lightning_modyn.data.transfer import WorkerRing, hand_over, release_rings, unpack  # noqa: E402
from lightning_modyn.datasets import CRITEO_DTYPE, synthetic_criteo_rows  # noqa: E402
from lightning_modyn.store import SampleStore  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, "benchmarks", "_work", "loader.json")
DEFAULT_DATA = os.path.join(REPO, "benchmarks", "_work", "loader_data")
IMG_SHAPE = (32, 32, 3)
IMG_BYTES = int(np.prod(IMG_SHAPE))  # 3072
DATA_VERSION = 1
WDS_MTIME = 1_700_000_000  # integer mtime: webdataset's TarWriter adds a PAX header per member for a float one
LOADERS = ("a", "akw", "apk", "g", "b", "c100", "c50", "c10", "n100", "n100p", "n100pr", "s100")
LOADER_NAMES = {
    "a": "(a) contiguous chunks, local memmap",
    "akw": "(a+kw) diagnostic: (a) + keys & weights tensors (KeyedBatch)",
    "apk": "(a+kw, packed) diagnostic: (a+kw) handed over from workers as (c) is (one block in a reused slot)",
    "g": "(g) ceiling: numpy random gather of a shuffled permutation from the memmap, keyed & packed as (c)",
    "b": "(b) webdataset.WebDataset streaming",
    "c100": "(c) ModynDataModule, 100 % shuffled",
    "c50": "(c) ModynDataModule, 50 % random subset",
    "c10": "(c) ModynDataModule, 10 % random subset",
    "n100": "(n) torchdata.nodes train_node, ParallelMapper threads (0: same thread), 100 %",
    "n100p": "(n, process) torchdata.nodes train_node, ParallelMapper processes, 100 %",
    "n100pr": "(n, process, ring) diagnostic: (n, process) handing batches over in the slot ring as (c) does",
    "s100": "(s) torchdata StatefulDataLoader over the DataModule's dataset and order, 100 %",
}
TORCHDATA_LOADERS = ("n100", "n100p", "n100pr", "s100")
FRACTIONS = {"c100": 1.0, "c50": 0.5, "c10": 0.1}
D_LOADERS = ("d_wids", "d_mds", "d_lit64", "d_lit1")
LOADER_NAMES.update({
    "d_wids": "(d) wids.ShardListDataset[i] (webdataset shards)",
    "d_mds": "(d) mosaicml-streaming LocalDataset[i] (MDS)",
    "d_lit64": "(d) litdata StreamingDataset[i], 64 MB chunks, batch_decode=0",
    "d_lit1": "(d) litdata StreamingDataset[i], one chunk, batch_decode=\"all\"",
})
D_FORMAT_VERSION = 1

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


# ====================================================================== data
def _load_meta(root: str, want: dict) -> dict | None:
    try:
        with open(os.path.join(root, "meta.json")) as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return None
    return meta if all(meta.get(k) == v for k, v in want.items()) else None


def _write_wds(pattern: str, maxcount: int, samples) -> list[str]:
    import webdataset as wds

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with wds.ShardWriter(pattern, maxcount=maxcount, verbose=0, encoder=False, mtime=WDS_MTIME) as writer:
            for sample in samples:
                writer.write(sample)
    root = os.path.dirname(pattern)
    return sorted(os.path.join(root, f) for f in os.listdir(root) if f.endswith(".tar"))


def prepare_rows(args) -> dict:
    root = os.path.join(args.data_dir, f"rows-{args.rows}-seed{args.seed}")
    want = {"version": DATA_VERSION, "n": args.rows, "seed": args.seed, "wds_n": args.wds_rows,
            "shard_max_bytes": args.shard_max_bytes}
    meta = None if args.regen else _load_meta(root, want)
    if meta is not None:
        log(f"rows: reusing {root}")
        return meta
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "wds"))
    t = time.perf_counter()
    rows = synthetic_criteo_rows(args.rows, seed=args.seed)
    assert rows.dtype == CRITEO_DTYPE and rows.dtype.itemsize == 160
    log(f"rows: generated {len(rows):,} rows in {time.perf_counter() - t:.1f}s")
    bin_path = os.path.join(root, "rows.bin")
    rows.tofile(bin_path)
    t = time.perf_counter()
    create = {} if args.shard_max_bytes is None else {"shard_max_bytes": args.shard_max_bytes}
    store = SampleStore.create(os.path.join(root, "store"), **create)
    keys = store.append_records(rows, labels="label")
    shards = len(store.catalog.shards())
    store.close()
    assert np.array_equal(keys, np.arange(keys[0], keys[0] + len(rows))), "append_records keys are not contiguous"
    log(f"rows: store.append_records {len(rows):,} rows in {time.perf_counter() - t:.1f}s ({shards} shard(s))")
    t = time.perf_counter()
    raw = rows.view(np.dtype((np.void, rows.dtype.itemsize)))
    wds_n = min(args.wds_rows, len(rows))
    labels = rows["label"]
    urls = _write_wds(os.path.join(root, "wds", "rows-%06d.tar"), args.wds_rows_per_shard,
                      ({"__key__": f"{int(keys[i]):012d}", "row": raw[i].tobytes(), "cls": b"%d" % labels[i]}
                       for i in range(wds_n)))
    log(f"rows: webdataset.ShardWriter wrote {wds_n:,} samples to {len(urls)} shard(s) in "
        f"{time.perf_counter() - t:.1f}s")
    meta = dict(want, first_key=int(keys[0]), bin=bin_path, store=os.path.join(root, "store"), wds=urls,
                wds_rows=wds_n, wds_per_shard=args.wds_rows_per_shard, store_shards=shards)
    with open(os.path.join(root, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    return meta


def prepare_images(args) -> dict:
    root = os.path.join(args.data_dir, f"images-{args.images}-seed{args.seed}")
    want = {"version": DATA_VERSION, "n": args.images, "seed": args.seed}
    meta = None if args.regen else _load_meta(root, want)
    if meta is not None:
        log(f"images: reusing {root}")
        return meta
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "wds"))
    rng = np.random.default_rng(args.seed)
    n = args.images
    images = rng.integers(0, 256, size=(n,) + IMG_SHAPE, dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    images.tofile(os.path.join(root, "images.bin"))
    np.save(os.path.join(root, "labels.npy"), labels)
    t = time.perf_counter()
    store = SampleStore.create(os.path.join(root, "store"))
    chunk = 100_000  # the store's default shard_max_samples: one shard per append
    keys = []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        keys.append(store.append([{"raw": images[i].tobytes(), "cls": int(labels[i])} for i in range(s, e)],
                                 labels="cls"))
        log(f"images: store.append {e:,}/{n:,}")
    keys = np.concatenate(keys)
    shards = len(store.catalog.shards())
    store.close()
    assert np.array_equal(keys, np.arange(keys[0], keys[0] + n)), "append keys are not contiguous"
    log(f"images: store.append {n:,} samples in {time.perf_counter() - t:.1f}s ({shards} shard(s))")
    t = time.perf_counter()
    urls = _write_wds(os.path.join(root, "wds", "images-%06d.tar"), args.wds_images_per_shard,
                      ({"__key__": f"{int(keys[i]):012d}", "raw": images[i].tobytes(), "cls": b"%d" % labels[i]}
                       for i in range(n)))
    log(f"images: webdataset.ShardWriter wrote {n:,} samples to {len(urls)} shard(s) in "
        f"{time.perf_counter() - t:.1f}s")
    meta = dict(want, first_key=int(keys[0]), bin=os.path.join(root, "images.bin"),
                labels=os.path.join(root, "labels.npy"), store=os.path.join(root, "store"), wds=urls,
                wds_rows=n, wds_per_shard=args.wds_images_per_shard, store_shards=shards)
    with open(os.path.join(root, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    return meta


# ====================================================================== (a) contiguous chunks
def rows_to_tensors(rows: np.ndarray) -> tuple:
    """The structure RecordsToTensors delivers: ({"dense", "cat"}, label as int64)."""
    x = {"dense": torch.from_numpy(np.ascontiguousarray(rows["dense"])),
         "cat": torch.from_numpy(np.ascontiguousarray(rows["cat"]))}
    return x, torch.from_numpy(np.ascontiguousarray(rows["label"])).long()


class ChunkDataset(Dataset):
    """Item ``i`` is batch ``i``: a contiguous slice of a memory-mapped file, as tensors (opened per process)."""

    def __init__(self, kind: str, meta: dict, batch_size: int, keyed: bool = False, packed: bool = False,
                 gather_seed: int | None = None) -> None:
        self.kind, self.meta, self.batch_size, self.n = kind, meta, batch_size, meta["n"]
        # with gather_seed, batch i is a random gather of slice i of a fixed permutation of all samples (g):
        # what any sample-level loader must at least do, with no store, no index and no bookkeeping
        self.gather_seed = gather_seed
        self._perm = None
        self.keyed = keyed  # also carry keys and weights, as the DataModule's KeyedBatch does (diagnostic)
        self.packed = packed  # workers return one block, as the DataModule's workers do (diagnostic)
        self._mm = self._labels = None

    def __getstate__(self):
        return {**self.__dict__, "_mm": None, "_labels": None, "_perm": None}

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def _open(self):
        if self.kind == "rows":
            self._mm = np.memmap(self.meta["bin"], dtype=CRITEO_DTYPE, mode="r", shape=(self.n,))
        else:
            self._mm = np.memmap(self.meta["bin"], dtype=np.uint8, mode="r", shape=(self.n,) + IMG_SHAPE)
            self._labels = np.load(self.meta["labels"], mmap_mode="r")

    def __getitem__(self, i: int) -> tuple:
        if self._mm is None:
            self._open()
        s = i * self.batch_size
        e = min(self.n, s + self.batch_size)
        idx = None
        if self.gather_seed is not None:
            if self._perm is None:
                self._perm = np.random.default_rng(self.gather_seed).permutation(self.n)
            idx = self._perm[s:e]
            if self.kind == "rows":
                out = rows_to_tensors(np.take(self._mm, idx, axis=0))
            else:
                out = (torch.from_numpy(np.take(self._mm, idx, axis=0)),
                       torch.from_numpy(np.take(self._labels, idx, axis=0)))
        elif self.kind == "rows":
            out = rows_to_tensors(self._mm[s:e])
        else:
            out = torch.from_numpy(np.array(self._mm[s:e])), torch.from_numpy(np.array(self._labels[s:e]))
        if not self.keyed:
            return out
        first = self.meta["first_key"]
        keys = torch.arange(first + s, first + e) if idx is None else torch.from_numpy(first + idx)
        out = KeyedBatch(out, keys=keys, weights=torch.ones(e - s))
        return hand_over(out) if self.packed else out


class UnpackingLoader(DataLoader):
    """Unpacks what the workers packed, as ModynDataLoader does."""

    def __iter__(self):
        self.rings = getattr(self, "rings", set())  # persistent workers: released in shutdown()
        for batch in super().__iter__():
            yield unpack(batch, self.rings)


def loader_a(kind: str, meta: dict, batch_size: int, workers: int, seed: int, keyed: bool = False,
             packed: bool = False, gather: bool = False) -> DataLoader:
    ds = ChunkDataset(kind, meta, batch_size, keyed or packed, packed, gather_seed=seed if gather else None)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return (UnpackingLoader if packed else DataLoader)(
        ds, batch_size=None, sampler=RandomSampler(ds, generator=gen), num_workers=workers,
        persistent_workers=workers > 0)


# ====================================================================== (b) webdataset
def collate_rows(samples: list) -> tuple:
    rows = np.frombuffer(b"".join(s[0] for s in samples), dtype=CRITEO_DTYPE)
    x, _ = rows_to_tensors(rows)
    return x, torch.tensor([int(s[1]) for s in samples], dtype=torch.long)


def collate_images(samples: list) -> tuple:
    x = np.frombuffer(b"".join(s[0] for s in samples), dtype=np.uint8).reshape((len(samples),) + IMG_SHAPE)
    return torch.from_numpy(x.copy()), torch.tensor([int(s[1]) for s in samples], dtype=torch.long)


def wds_dataset(kind: str, meta: dict, batch_size: int | None, shuffle: int, seed: int, with_key: bool = False):
    import webdataset as wds

    member = "row" if kind == "rows" else "raw"
    with warnings_off():
        ds = wds.WebDataset(meta["wds"], shardshuffle=100, seed=seed, empty_check=False)
    if shuffle:
        ds = ds.shuffle(shuffle)
    ds = ds.to_tuple(member, "cls", "__key__") if with_key else ds.to_tuple(member, "cls")
    if batch_size:
        ds = ds.batched(batch_size, collation_fn=collate_rows if kind == "rows" else collate_images, partial=True)
    return ds


def loader_b(kind: str, meta: dict, batch_size: int, workers: int, shuffle: int, seed: int) -> DataLoader:
    return DataLoader(wds_dataset(kind, meta, batch_size, shuffle, seed), batch_size=None, num_workers=workers)


@contextlib.contextmanager
def warnings_off():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ====================================================================== (c) ModynDataModule
def modyn_loaders(kind: str, meta: dict, batch_size: int, workers: int, seed: int) -> tuple[dict, ModynDataModule]:
    decode = None if kind == "rows" else ArrayMember("raw", list(IMG_SHAPE))
    dm = ModynDataModule(meta["store"], decode=decode, batch_size=batch_size, num_workers=workers, seed=seed,
                         persistent_workers=workers > 0)
    keys = np.arange(meta["first_key"], meta["first_key"] + meta["n"], dtype=np.int64)
    rng = np.random.default_rng(seed + 1)
    loaders = {}
    for name, frac in FRACTIONS.items():
        subset = keys if frac == 1.0 else np.sort(rng.choice(keys, int(round(frac * len(keys))), replace=False))
        dm.set_training_set(subset)
        loaders[name] = dm.train_dataloader()
    return loaders, dm


# ====================================================================== (n), (s) torchdata (issue 17)
class PlainOrder(Sampler):
    """A SelectionSampler without its state methods: StatefulDataLoader then counts the requests it took itself."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return iter(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


class UnpackingStatefulLoader(StatefulDataLoader):
    """Unpacks what the workers handed over (one block in a reused slot), as ModynDataLoader does."""

    def __iter__(self):
        self.rings = getattr(self, "rings", set())  # persistent workers: released in shutdown()
        for batch in super().__iter__():
            yield unpack(batch, self.rings)


class RingRead:
    """(n, process, ring): read a batch in a ParallelMapper process and hand it over in that process's slot ring."""

    def __init__(self, read) -> None:
        self.read, self.ring = read, None

    def __call__(self, request):
        if self.ring is None or self.ring.pid != os.getpid():
            self.ring = WorkerRing()
        return self.ring.send(self.read(request))


class RingTake:
    """(n, process, ring), in the training process: copy the batch out of its slot, as ModynDataLoader does."""

    def __init__(self) -> None:
        self.rings: set = set()

    def __call__(self, batch):
        return unpack(batch, self.rings)


def torchdata_loaders(kind: str, meta: dict, batch_size: int, workers: int, seed: int, names,
                      own_seeds: bool = False) -> tuple[dict, ModynDataModule]:
    """The (n) and (s) loaders of ``names`` over 100 % of the keys: the order of (c100), or with ``own_seeds`` one
    seed each (``seed`` + 1, 2, ...) so that none takes another's epoch computed ahead."""
    decode = None if kind == "rows" else ArrayMember("raw", list(IMG_SHAPE))
    dm = ModynDataModule(meta["store"], decode=decode, batch_size=batch_size, seed=seed)
    dm.set_training_set(np.arange(meta["first_key"], meta["first_key"] + meta["n"], dtype=np.int64))
    loaders = {}
    for i, name in enumerate(n for n in TORCHDATA_LOADERS if n in names):
        dm.seed = seed + i + 1 if own_seeds else seed
        if name == "n100":
            loaders[name] = Loader(train_node(dm, num_workers=workers, method="thread"))
        elif name == "n100p" and workers > 0:
            loaders[name] = Loader(train_node(dm, num_workers=workers, method="process"))
        elif name == "n100pr" and workers > 0:
            dataset, sampler = dm.train_parts()
            take = RingTake()
            mapper = ParallelMapper(KeyBatchNode(sampler), RingRead(dataset.read), workers, method="process")
            loaders[name] = Loader(Prefetcher(Mapper(mapper, take), 2))
            loaders[name].rings = take.rings  # released in shutdown()
        elif name == "s100":
            loaders[name] = stateful_loader(dm, workers)
    return loaders, dm


def stateful_loader(dm: ModynDataModule, workers: int) -> StatefulDataLoader:
    """(s): StatefulDataLoader over the DataModule's dataset and order."""
    dataset, sampler = dm.train_parts()
    return UnpackingStatefulLoader(dataset, sampler=PlainOrder(sampler), batch_size=None, collate_fn=passthrough,
                                   num_workers=workers, persistent_workers=workers > 0)


# ====================================================================== (d) other libraries (--compare)
_STREAMING_TV_SHIM = ("torchvision", "torchvision.datasets", "torchvision.transforms",
                      "torchvision.transforms.functional")


def import_compare_libs() -> tuple[dict, dict]:
    """Import wids, mosaicml-streaming and litdata; ``({lib: version}, {lib: reason it was skipped})``."""
    import importlib
    import importlib.metadata as md

    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # else StreamingDataset() asks PyPI for a newer one
    os.environ.setdefault("LITDATA_POSIX_PAGE_BYTES", "0")  # see the module docstring (d_lit64)
    versions, skipped = {}, {}
    for lib, dist in (("wids", "wids"), ("litdata", "litdata"), ("streaming", "mosaicml-streaming")):
        try:
            if lib == "streaming":
                _import_streaming()
            else:
                importlib.import_module(lib)
            versions[dist] = md.version(dist)
        except Exception as exc:  # noqa: BLE001 - any failure to import means: skip it, say why
            skipped[dist] = f"{type(exc).__name__}: {exc}"
    return versions, skipped


def _import_streaming() -> None:
    """``import streaming`` (mosaicml-streaming).

    Its package ``__init__`` imports ``streaming.vision``, which needs ``torchvision.datasets.VisionDataset`` at import
    time (for dataset classes this benchmark does not use). The PyPI torchvision wheel is built against the CUDA torch
    and would drag it in (and a CUDA-linked torchvision fails to import beside the CPU torch), so the comparison
    environment has none: when ``import streaming`` fails on torchvision, empty stand-in modules are put in
    ``sys.modules`` for the duration of the import and removed again afterwards.
    """
    import types

    try:
        import streaming  # noqa: F401
        return
    except Exception as exc:  # ImportError without one; RuntimeError from a CUDA-linked one
        if not ((isinstance(exc, ImportError) and (exc.name or "").startswith("torchvision"))
                or "torchvision" in str(exc)):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    for name in [m for m in sys.modules if m == "streaming" or m.startswith("streaming.")]:
        del sys.modules[name]
    import transformers.feature_extraction_utils  # noqa: F401 - streaming imports it; before the stand-ins exist

    mods = {name: types.ModuleType(name) for name in _STREAMING_TV_SHIM}

    class VisionDataset(Dataset):  # only ever subclassed by streaming.vision's dataset classes
        pass

    def to_tensor(x):
        raise NotImplementedError("torchvision stand-in: install a CPU torchvision to use streaming.vision")

    mods["torchvision.datasets"].VisionDataset = VisionDataset
    mods["torchvision.transforms.functional"].to_tensor = to_tensor
    for name, mod in mods.items():  # attributes for the submodules: torchvision.datasets, ...
        if "." in name:
            parent, _, child = name.rpartition(".")
            setattr(mods[parent], child, mod)
    sys.modules.update(mods)
    try:
        import streaming  # noqa: F401,F811
    finally:
        for name in _STREAMING_TV_SHIM:
            sys.modules.pop(name, None)


def _source_arrays(kind: str, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """(payload as n x record-size bytes, int64 labels) of the generated data, memory-mapped."""
    n = meta["n"]
    if kind == "rows":
        rows = np.memmap(meta["bin"], dtype=CRITEO_DTYPE, mode="r", shape=(n,))
        return rows.view(np.dtype((np.void, CRITEO_DTYPE.itemsize))), np.asarray(rows["label"], dtype=np.int64)
    images = np.memmap(meta["bin"], dtype=np.uint8, mode="r", shape=(n, IMG_BYTES))
    return images.view(np.dtype((np.void, IMG_BYTES))).reshape(n), np.load(meta["labels"])


def _member(kind: str) -> str:
    return "row" if kind == "rows" else "raw"


def _litdata_samples(kind: str, meta: dict, span: tuple[int, int]):
    """litdata ``optimize`` fn: one input is a span of sample indices; yields one sample per index, in order."""
    payload, labels = _source_arrays(kind, meta)
    member = _member(kind)
    for i in range(*span):
        yield {member: payload[i].tobytes(), "cls": int(labels[i])}


def prepare_compare(kind: str, meta: dict, args, versions: dict) -> dict:
    """Write the workload in litdata's and MDS's formats (wids reads the webdataset shards); reused when present."""
    import functools
    import multiprocessing

    root = os.path.dirname(meta["bin"])
    marker = os.path.join(root, "compare.json")
    want = {"version": D_FORMAT_VERSION, "n": meta["n"], "litdata": versions.get("litdata"),
            "mosaicml-streaming": versions.get("mosaicml-streaming")}
    info = None if args.regen else _read_json(marker)
    if (info and all(info.get(k) == v for k, v in want.items())
            and all(os.path.isdir(f["path"]) for f in info["formats"].values())):
        log(f"{kind}: reusing the (d) formats in {root}")
        return info
    info = dict(want, formats={})
    n, member = meta["n"], _member(kind)
    nbytes = n * (CRITEO_DTYPE.itemsize if kind == "rows" else IMG_BYTES)
    if "litdata" in versions:
        import litdata

        start_method = multiprocessing.get_start_method()  # optimize() sets it globally (to spawn by default)
        spans = [(s, min(n, s + 50_000)) for s in range(0, n, 50_000)]
        for name, chunk_bytes in (("d_lit64", "64MB"), ("d_lit1", int(nbytes * 1.5) + (64 << 20))):
            out_dir = os.path.join(root, f"litdata-{name[2:]}")
            shutil.rmtree(out_dir, ignore_errors=True)
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                litdata.optimize(fn=functools.partial(_litdata_samples, kind, meta), inputs=spans, output_dir=out_dir,
                                 chunk_bytes=chunk_bytes, num_workers=1, mode="overwrite", start_method="fork")
            multiprocessing.set_start_method(start_method, force=True)
            chunks = sorted(f for f in os.listdir(out_dir) if f.endswith(".bin"))
            info["formats"][name] = {"path": out_dir, "chunks": len(chunks), "write_s": time.perf_counter() - t}
            log(f"{kind}: litdata.optimize(chunk_bytes={chunk_bytes}) wrote {n:,} samples in {len(chunks)} chunk(s) "
                f"in {time.perf_counter() - t:.1f}s")
    if "mosaicml-streaming" in versions:
        from streaming import MDSWriter

        out_dir = os.path.join(root, "mds")
        shutil.rmtree(out_dir, ignore_errors=True)
        t = time.perf_counter()
        payload, labels = _source_arrays(kind, meta)
        with MDSWriter(out=out_dir, columns={member: "bytes", "cls": "int"}, progress_bar=False) as writer:
            for i in range(n):
                writer.write({member: payload[i].tobytes(), "cls": int(labels[i])})
        shards = sorted(f for f in os.listdir(out_dir) if f.endswith(".mds"))
        info["formats"]["d_mds"] = {"path": out_dir, "shards": len(shards), "write_s": time.perf_counter() - t}
        log(f"{kind}: MDSWriter wrote {n:,} samples in {len(shards)} shard(s) in {time.perf_counter() - t:.1f}s")
    with open(marker, "w") as fh:
        json.dump(info, fh, indent=1)
    return info


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


class RandomAccessView(Dataset):
    """``view[i] = (payload bytes-like, label)`` through one library's random access; opened lazily per process."""

    def __init__(self, name: str, kind: str, meta: dict, fmt: dict | None, wds_per_shard: int) -> None:
        self.name, self.kind, self.meta, self.fmt, self.n = name, kind, meta, fmt, meta["n"]
        self.wds_per_shard = wds_per_shard
        self.member = _member(kind)
        self._ds = self._pid = None

    def __len__(self) -> int:
        return self.n

    def _open(self):
        if self.name == "d_wids":
            import wids

            urls, n, per = self.meta["wds"], self.meta["wds_rows"], self.wds_per_shard
            shards = [{"url": u, "nsamples": min(per, n - j * per)} for j, u in enumerate(urls)]
            if sum(s["nsamples"] for s in shards) != self.n or shards[-1]["nsamples"] <= 0:
                raise ValueError(f"wids needs every sample as a webdataset shard: {n} of {self.n} written, "
                                 f"{len(urls)} shards of {per}")
            with contextlib.redirect_stderr(io.StringIO()):  # it prints a summary line
                return wids.ShardListDataset(shards, cache_dir=os.path.dirname(urls[0]), lru_size=len(urls),
                                             transformations=[])
        if self.name == "d_mds":
            from streaming import LocalDataset

            return LocalDataset(self.fmt["path"])
        import litdata

        return litdata.StreamingDataset(self.fmt["path"], batch_decode="all" if self.name == "d_lit1" else 0)

    def __getitem__(self, i: int):
        if self._pid != os.getpid():  # each DataLoader worker opens its own reader
            self._ds, self._pid = self._open(), os.getpid()
        s = self._ds[i]
        if self.name == "d_wids":
            return s["." + self.member].getvalue(), int(s[".cls"].getvalue())
        return s[self.member], s["cls"]


def loader_d(name: str, kind: str, meta: dict, cmp: dict, batch_size: int, workers: int, seed: int,
             wds_per_shard: int) -> DataLoader:
    view = RandomAccessView(name, kind, meta, cmp["formats"].get(name), wds_per_shard)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(view, batch_size=batch_size, sampler=RandomSampler(view, generator=gen), num_workers=workers,
                      persistent_workers=workers > 0, collate_fn=collate_rows if kind == "rows" else collate_images)


# ====================================================================== timing
def batch_size_of(batch) -> int:
    return len(batch[1])


def time_epoch(loader, epoch: int, max_batches: int | None, max_seconds: float | None = None,
               min_batches: int = 1) -> dict:
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)  # as Lightning does every epoch: a new permutation
    n = nb = 0
    first_t = first_n = None
    keep = None
    t0 = time.perf_counter()
    it = iter(loader)
    try:
        for batch in it:
            keep = batch  # only hold a reference: measure loading, not compute  # noqa: F841
            n += batch_size_of(batch)
            nb += 1
            if nb == 1:
                first_t, first_n = time.perf_counter(), n
            if max_batches and nb >= max_batches:
                break
            if max_seconds and nb >= min_batches and time.perf_counter() - t0 >= max_seconds:
                break
        t1 = time.perf_counter()
    finally:
        if hasattr(it, "close"):
            it.close()
        elif hasattr(it, "_shutdown_workers") and not getattr(loader, "persistent_workers", False):
            it._shutdown_workers()
        del it, keep
    out = {"samples": n, "batches": nb, "seconds": t1 - t0, "rate": n / (t1 - t0) if t1 > t0 else 0.0,
           "first_batch_s": None if first_t is None else first_t - t0}
    if nb > 1:
        out["steady_rate"] = (n - first_n) / (t1 - first_t)
    return out


def shutdown(loader) -> None:
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    with contextlib.suppress(Exception):
        loader._iterator = None
    release_rings(getattr(loader, "rings", ()))


# ====================================================================== verification
def verify(kind: str, meta: dict, batch_size: int, seed: int, d_names: list | tuple = (), cmp: dict | None = None,
           wds_per_shard: int | None = None) -> dict:
    """One batch of every loader (num_workers=0) against the source data; raises on a mismatch."""
    first, n = meta["first_key"], meta["n"]
    if kind == "rows":
        src = np.memmap(meta["bin"], dtype=CRITEO_DTYPE, mode="r", shape=(n,))
    else:
        src = np.memmap(meta["bin"], dtype=np.uint8, mode="r", shape=(n,) + IMG_SHAPE)
        src_labels = np.load(meta["labels"])

    def check(x, y, idx, what):
        if kind == "rows":
            rows = src[idx]
            ok = (torch.equal(x["dense"], torch.from_numpy(np.ascontiguousarray(rows["dense"])))
                  and torch.equal(x["cat"], torch.from_numpy(np.ascontiguousarray(rows["cat"])))
                  and torch.equal(y, torch.from_numpy(rows["label"].astype(np.int64)))
                  and x["dense"].dtype == torch.float32 and x["cat"].dtype == torch.int32 and y.dtype == torch.int64)
        else:
            ok = (torch.equal(x, torch.from_numpy(np.array(src[idx]))) and x.dtype == torch.uint8
                  and tuple(x.shape[1:]) == IMG_SHAPE and torch.equal(y, torch.from_numpy(src_labels[idx])))
        if not ok:
            raise AssertionError(f"{kind} {what}: batch does not match the source data")

    # (c): keys of the first batch -> same rows/images (and, for rows, get_records agrees)
    loaders, dm = modyn_loaders(kind, meta, batch_size, 0, seed)
    checked = {}
    firsts = {}
    for name, loader in loaders.items():
        batch = firsts[name] = next(iter(loader))
        (x, y), keys = tuple(batch), batch.keys.numpy()
        if len(keys) != min(batch_size, len(loader.sampler.keys)) or not np.isin(keys, loader.sampler.keys).all():
            raise AssertionError(f"{kind} {name}: batch keys are not from the training set")
        check(x, y, keys - first, name)
        if kind == "rows":
            got = dm.store.get_records(keys)
            if not np.array_equal(got, src[keys - first]):
                raise AssertionError(f"{kind} {name}: store.get_records differs from the source rows")
        if not torch.equal(batch.weights, torch.ones(len(keys))):
            raise AssertionError(f"{kind} {name}: weights are not all 1")
        checked[name] = len(keys)
    dm.store.close()
    # (n), (s): the first batch is (c100)'s, same keys and tensors (the process ones through one worker)
    loaders, dm = torchdata_loaders(kind, meta, batch_size, 0, seed, TORCHDATA_LOADERS)
    loaders.update(torchdata_loaders(kind, meta, batch_size, 1, seed, ("n100p", "n100pr"))[0])
    for name, loader in loaders.items():
        batch, want = next(iter(loader)), firsts["c100"]
        (x, y), (wx, wy) = tuple(batch), tuple(want)
        same_x = all(torch.equal(x[k], wx[k]) for k in wx) if kind == "rows" else torch.equal(x, wx)
        if not (same_x and torch.equal(y, wy) and torch.equal(batch.keys, want.keys)
                and torch.equal(batch.weights, want.weights)):
            raise AssertionError(f"{kind} {name}: the first batch differs from (c100)'s")
        checked[name] = len(y)
    dm.store.close()
    # (a): batch 1 is rows [B, 2B)
    for name, keyed in (("a", False), ("akw", True)):
        ds = ChunkDataset(kind, meta, batch_size, keyed)
        i = min(1, len(ds) - 1)
        batch = ds[i]
        x, y = batch
        idx = np.arange(i * batch_size, min(n, (i + 1) * batch_size))
        check(x, y, idx, name)
        if keyed and not np.array_equal(batch.keys.numpy(), idx + first):
            raise AssertionError(f"{kind} {name}: wrong keys")
        checked[name] = len(y)
    # (g): batch 0 is the first slice of the seeded permutation, and its keys say so
    ds = ChunkDataset(kind, meta, batch_size, True, gather_seed=seed)
    batch = ds[0]
    idx = np.random.default_rng(seed).permutation(n)[:batch_size]
    check(*batch, idx, "g")
    if not np.array_equal(batch.keys.numpy(), idx + first):
        raise AssertionError(f"{kind} g: wrong keys")
    checked["g"] = len(idx)
    # (b): the first batch, with the samples' __key__ to know which rows it holds
    ds = wds_dataset(kind, meta, None, 0, seed, with_key=True)
    samples = []
    for s in ds:
        samples.append(s)
        if len(samples) == batch_size:
            break
    idx = np.array([int(s[2]) for s in samples]) - first
    x, y = (collate_rows if kind == "rows" else collate_images)([s[:2] for s in samples])
    check(x, y, idx, "b")
    checked["b"] = len(y)
    # (d): sample i of every format is sample i of the source (written in order); a random batch of indices
    idx = np.random.default_rng(seed + 2).permutation(n)[:batch_size]
    for name in d_names:
        view = RandomAccessView(name, kind, meta, cmp["formats"].get(name), wds_per_shard)
        x, y = (collate_rows if kind == "rows" else collate_images)([view[int(i)] for i in idx])
        check(x, y, idx, name)
        checked[name] = len(y)
        del view
    return checked


# ====================================================================== one workload
def run_workload(kind: str, meta: dict, batch_size: int, args, cmp: dict | None = None) -> dict:
    results: dict = {}
    selected = set(args.loaders)
    d_names = [name for name in D_LOADERS if cmp and name in cmp["available"]]
    wds_per_shard = meta.get("wds_per_shard", args.wds_rows_per_shard if kind == "rows" else args.wds_images_per_shard)
    log(f"{kind}: verifying one batch of every loader against the source data")
    verification = verify(kind, meta, batch_size, args.seed, d_names, cmp, wds_per_shard)
    log(f"{kind}: verified {verification}")
    for w in args.workers:
        res = results[f"w{w}"] = {}
        loaders, dm = modyn_loaders(kind, meta, batch_size, w, args.seed)
        timed = {}
        if "a" in selected:
            timed["a"] = loader_a(kind, meta, batch_size, w, args.seed)
        if "akw" in selected and args.diagnostics:
            timed["akw"] = loader_a(kind, meta, batch_size, w, args.seed, keyed=True)
        if "apk" in selected and args.diagnostics and w > 0:
            timed["apk"] = loader_a(kind, meta, batch_size, w, args.seed, packed=True)
        if "g" in selected:
            timed["g"] = loader_a(kind, meta, batch_size, w, args.seed, packed=True, gather=True)
        timed.update({name: loader for name, loader in loaders.items() if name in selected})
        td_names = selected if args.diagnostics else selected - {"n100pr"}
        td_loaders, td_dm = torchdata_loaders(kind, meta, batch_size, w, args.seed, td_names, own_seeds=True)
        timed.update(td_loaders)
        for name in d_names:
            timed[name] = loader_d(name, kind, meta, cmp, batch_size, w, args.seed, wds_per_shard)
        # (d) epochs are capped at --max-seconds-d; at least one batch per worker and one more is waited for
        caps = {name: (args.max_seconds_d, 2 * (w + 1)) if name in D_LOADERS else (None, 1) for name in timed}
        log(f"{kind} w={w}: warm-up epoch of each of {', '.join(timed)}")
        for name, loader in timed.items():
            r = time_epoch(loader, 0, args.max_batches, *caps[name])
            log(f"{kind} w={w}: warm-up {name}: {r['samples']:,} samples in {r['seconds']:.2f}s "
                f"({r['rate']:,.0f}/s)")
        runs = {name: [] for name in timed}
        for e in range(1, args.epochs + 1):
            for name, loader in timed.items():
                r = time_epoch(loader, e, args.max_batches, *caps[name])
                runs[name].append(r)
                log(f"{kind} w={w}: epoch {e} {name}: {r['samples']:,} samples in {r['seconds']:.2f}s "
                    f"({r['rate']:,.0f}/s" + (f", steady {r['steady_rate']:,.0f}/s)" if name in D_LOADERS else ")"))
        for name, loader in timed.items():
            shutdown(loader)
        dm.store.close()
        td_dm.store.close()
        del timed, loaders, dm, td_loaders, td_dm
        gc.collect()
        for name, rs in runs.items():
            expected = None
            if not args.max_batches:
                expected = int(round(FRACTIONS.get(name, 1.0) * meta["n"]))
            capped = caps[name][0] is not None
            if expected is not None and any(r["samples"] > expected if capped else r["samples"] != expected
                                            for r in rs):
                raise AssertionError(f"{kind} {name} w={w}: epochs delivered {[r['samples'] for r in rs]} samples, "
                                     f"expected {expected}")
            # capped (d) runs: the rate after the first batch (worker start-up excluded, as for (b))
            rates = [r.get("steady_rate", r["rate"]) if capped else r["rate"] for r in rs]
            res[name] = {"rate": statistics.median(rates), "rates": rates, "epochs": rs}
        if "b" not in selected:
            continue
        # (b): warm its shards into the page cache, then one capped run
        t = time.perf_counter()
        nbytes = sum(warm_files(u) for u in meta["wds"])
        log(f"{kind} w={w}: warmed {nbytes / 2**20:,.0f} MiB of webdataset shards in {time.perf_counter() - t:.1f}s; "
            f"(b) for up to {args.max_seconds_b:g}s")
        loader = loader_b(kind, meta, batch_size, w, args.wds_shuffle, args.seed)
        r = time_epoch(loader, 0, args.max_batches, args.max_seconds_b)
        del loader
        gc.collect()
        rate = r.get("steady_rate", r["rate"])
        res["b"] = {"rate": rate, "rates": [rate], "epochs": [r],
                    "full_epoch": r["samples"] >= meta["wds_rows"]}
        log(f"{kind} w={w}: (b) {r['samples']:,} samples in {r['seconds']:.2f}s "
            f"(first batch after {r['first_batch_s'] or 0:.2f}s; steady {rate:,.0f}/s)")
    return {"results": results, "verification": verification}


# ====================================================================== report
def fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} k" if x >= 1e3 else f"{x:.0f}"


def ratios(results: dict) -> dict:
    out = {}
    for wkey, res in results.items():
        def rate(name):
            return res.get(name, {}).get("rate")

        def div(x, y):
            return x / y if x and y else None

        a, c = rate("a"), rate("c100")
        paired = None
        if a and c:
            paired = statistics.median([ci["rate"] / ai["rate"]
                                        for ai, ci in zip(res["a"]["epochs"], res["c100"]["epochs"])])
        out[wkey] = {"c100_over_a": div(c, a), "c100_over_a_paired_median": paired, "c100_over_b": div(c, rate("b")),
                     "c100_over_akw": div(c, rate("akw")), "akw_over_a": div(rate("akw"), a),
                     "g_over_a": div(rate("g"), a), "c100_over_g": div(c, rate("g")),
                     "c100_over_apk": div(c, rate("apk")), "apk_over_a": div(rate("apk"), a),
                     "c50_over_a": div(rate("c50"), a), "c10_over_a": div(rate("c10"), a)}
        out[wkey].update({f"{name}_over_c100": div(rate(name), c) for name in TORCHDATA_LOADERS})
        out[wkey].update({f"c100_over_{name}": div(c, rate(name)) for name in D_LOADERS})
    return out


def report(out: dict, args) -> str:
    lines = []
    cmp = out.get("compare")
    for kind, bs in (("rows", args.row_batch), ("images", args.image_batch)):
        if kind not in out["workloads"]:
            continue
        results = out["workloads"][kind]["results"]
        wkeys = list(results)
        present = [name for name in LOADERS + D_LOADERS if any(name in results[k] for k in wkeys)]
        title = ("Criteo rows (160 B)" if kind == "rows" else "3 KiB images (32x32x3 uint8)")
        how = [f"median of {args.epochs} epochs"]
        if "b" in present:
            how.append(f"(b): one run of ≤ {args.max_seconds_b:g} s")
        if any(name in D_LOADERS for name in present):
            how.append(f"(d): epochs capped at {args.max_seconds_d:g} s, rate after the first batch" if args.max_seconds_d
                       else "(d): full epochs, rate after the first batch")
        lines.append(f"\n### {title}, batch {bs}, {out['workloads'][kind]['n']:,} samples — samples/s "
                     f"({'; '.join(how)})\n")
        lines.append("| loader | " + " | ".join(f"num_workers={k[1:]}" for k in wkeys) + " |")
        lines.append("|---|" + "---:|" * len(wkeys))
        for name in present:
            cells = (fmt_rate(results[k].get(name, {}).get("rate")) for k in wkeys)
            lines.append(f"| {LOADER_NAMES[name]} | " + " | ".join(cells) + " |")
        if cmp is None:
            lines.append("| (d) other libraries | " + " | ".join("not measured" for _ in wkeys) + " |")
        rat = out["workloads"][kind]["ratios"]
        lines.append("")
        lines.append("| ratio | " + " | ".join(f"num_workers={k[1:]}" for k in wkeys) + " | target |")
        lines.append("|---|" + "---:|" * len(wkeys) + "---|")

        def row(label, key, fmt, target, ok):
            values = [rat[k].get(key) for k in wkeys]
            if all(v is None for v in values):
                return
            cells = ["—" if v is None else fmt(v) + ("" if ok is None else (" ✓" if ok(v) else " ✗"))
                     for v in values]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

        is_rows = kind == "rows"
        row("(c, 100 %) / (a)", "c100_over_a", lambda v: f"{v:.2f}", "≥ 0.8" if is_rows else "—",
            (lambda v: v >= 0.8) if is_rows else None)
        row("(c, 100 %) / (a), paired by epoch (median)", "c100_over_a_paired_median", lambda v: f"{v:.2f}", "—", None)
        row("(c, 100 %) / (b)", "c100_over_b", lambda v: f"{v:,.0f}×", "≥ 100×" if is_rows else "—",
            (lambda v: v >= 100) if is_rows else None)
        row("(a+kw) / (a): cost of carrying keys & weights", "akw_over_a", lambda v: f"{v:.2f}", "—", None)
        row("(c, 100 %) / (a+kw): cost of the store gather", "c100_over_akw", lambda v: f"{v:.2f}", "—", None)
        row("(a+kw, packed) / (a): what one block per batch gains (a) too", "apk_over_a", lambda v: f"{v:.2f}", "—",
            None)
        row("(c, 100 %) / (a+kw, packed): (c) against (a) with the same hand-over", "c100_over_apk",
            lambda v: f"{v:.2f}", "—", None)
        row("(g) / (a): the ceiling of (c) / (a) — a bare random gather against contiguous chunks", "g_over_a",
            lambda v: f"{v:.2f}", "—", None)
        row("(c, 100 %) / (g): (c) against the bare random gather", "c100_over_g", lambda v: f"{v:.2f}", "—", None)
        row("(c, 50 %) / (a)", "c50_over_a", lambda v: f"{v:.2f}", "—", None)
        row("(c, 10 %) / (a)", "c10_over_a", lambda v: f"{v:.2f}", "—", None)
        for name, label in (("n100", "(n) threads"), ("n100p", "(n) processes"),
                            ("n100pr", "(n) processes + slot ring (diagnostic)"), ("s100", "(s)")):
            row(f"{label} / (c, 100 %): torchdata against the DataModule's loader", f"{name}_over_c100",
                lambda v: f"{v:.2f}", "—", None)
        for name in D_LOADERS:
            row(f"(c, 100 %) / {LOADER_NAMES[name]}", f"c100_over_{name}",
                lambda v: f"{v:.2f}×" if v < 10 else f"{v:,.0f}×", "> 1", lambda v: v > 1)
    if cmp is None:
        lines.append("\n(d) other libraries: not measured (run with --compare).")
    elif cmp["skipped"]:
        lines.append("\n(d) skipped: " + "; ".join(f"{lib}: {why}" for lib, why in cmp["skipped"].items()))
    return "\n".join(lines)


def environment() -> dict:
    import webdataset

    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "numpy": np.__version__, "webdataset": webdataset.__version__,
            "commit": commit, "sharing_strategy": torch.multiprocessing.get_sharing_strategy(),
            "start_method": __import__("multiprocessing").get_start_method(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "loadavg_start": os.getloadavg()}


# ====================================================================== main
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000, help="Criteo rows (default 2M)")
    p.add_argument("--images", type=int, default=100_000, help="3 KiB images (default 100k)")
    p.add_argument("--row-batch", type=int, default=4096)
    p.add_argument("--image-batch", type=int, default=256)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="num_workers values (default 0 1 2)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per loader after the warm-up (default 3)")
    p.add_argument("--max-batches", type=int, default=None, help="cap every epoch at this many batches")
    p.add_argument("--max-seconds-b", type=float, default=20.0, help="cap of each webdataset run (default 20 s)")
    p.add_argument("--wds-rows", type=int, default=200_000,
                   help="rows written as webdataset shards for (b) (default 200k; at most --rows)")
    p.add_argument("--wds-rows-per-shard", type=int, default=25_000)
    p.add_argument("--wds-images-per-shard", type=int, default=10_000)
    p.add_argument("--wds-shuffle", type=int, default=0, help="(b) sample shuffle buffer (default 0: shards only)")
    p.add_argument("--shard-max-bytes", type=int, default=None,
                   help="SampleStore.create(shard_max_bytes=...) for the rows store (default: the store's, 1 GiB)")
    p.add_argument("--no-diagnostics", dest="diagnostics", action="store_false",
                   help="skip the (a+kw) diagnostic loader: (a) plus keys & weights tensors like a KeyedBatch")
    p.add_argument("--sharing-strategy", choices=["file_descriptor", "file_system"], default=None,
                   help="torch.multiprocessing sharing strategy (default: torch's, file_descriptor on Linux)")
    p.add_argument("--workloads", nargs="+", choices=["rows", "images"], default=["rows", "images"])
    p.add_argument("--loaders", nargs="+", choices=LOADERS, default=list(LOADERS),
                   help="which of the standard loaders to run (default all; the (d) ones come with --compare)")
    p.add_argument("--compare", action="store_true",
                   help="also measure (d): the random access of wids, mosaicml-streaming and litdata on the same\n"
                        "data (each skipped, with the reason, if it does not import; see\n"
                        "benchmarks/requirements-compare.txt); writes every row as webdataset shards")
    p.add_argument("--max-seconds-d", type=float, default=3.0,
                   help="cap of each (d) epoch (default 3 s; 0: full epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=DEFAULT_DATA)
    p.add_argument("--regen", action="store_true", help="rebuild the generated data even if it exists")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON results (default benchmarks/_work/loader.json)")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke configuration: 100k rows, 5k images, 2 epochs, (b) capped at 2 s")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.images, args.epochs = min(args.rows, 100_000), min(args.images, 5_000), min(args.epochs, 2)
        args.max_seconds_b = min(args.max_seconds_b, 2.0)
        args.max_seconds_d = min(args.max_seconds_d, 2.0)
        args.wds_rows = min(args.wds_rows, 20_000)
        args.wds_rows_per_shard, args.wds_images_per_shard = 5_000, 1_000
    if args.compare and args.wds_rows < args.rows:
        args.wds_rows = args.rows  # wids reads the webdataset shards: all samples must be there
    args.wds_rows = min(args.wds_rows, args.rows)
    if min(args.workers) < 0 or args.epochs < 1:
        p.error("--workers must be >= 0 and --epochs >= 1")
    if args.sharing_strategy:
        torch.multiprocessing.set_sharing_strategy(args.sharing_strategy)
    os.makedirs(args.data_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    log(f"config: {vars(args)}")

    out = {"benchmark": "loader throughput (Modyn throughput experiment)", "config": vars(args),
           "environment": environment(), "workloads": {},
           "notes": {
               "a": "contiguous batch-sized slices of an np.memmap, RandomSampler over batch indices, same tensors",
               "b": "webdataset.WebDataset(shardshuffle=100), one sample per key (row/raw + cls members), "
                    ".batched(B) with a vectorized collation; one run capped at --max-seconds-b; rate excludes the "
                    "first batch (worker start-up); rows: only --wds-rows rows written as shards",
               "c": "ModynDataModule.set_training_set(subset); train_dataloader(); persistent workers; "
                    "set_epoch(e) before each epoch",
               "n": "issue 17: Loader(train_node(dm, num_workers=w, method=thread|process)): the DataModule's order "
                    "and batch read through torchdata.nodes (ParallelMapper in order, Prefetcher(2) with workers); "
                    "workers restart every epoch; no slot ring",
               "s": "issue 17: StatefulDataLoader over dm.train_parts() (dataset, order), persistent workers, "
                    "workers' batches unpacked as ModynDataLoader does",
               "akw": "diagnostic: (a) returning a KeyedBatch with keys and weights tensors, i.e. the DataModule's "
                      "output structure without the store: separates the DataLoader transfer cost of the two extra "
                      "tensors from the cost of the store's gather",
               "d": "with --compare: wids / mosaicml-streaming / litdata random access (see the module docstring), "
                    "DataLoader(view, batch_size=B, sampler=RandomSampler, vectorized collate), persistent workers; "
                    "epochs capped at --max-seconds-d, rate after the first batch; otherwise not measured",
               "method": "one warm-up epoch per loader, then --epochs timed epochs with loaders taking turns; "
                         "median epoch rate reported; tensors only referenced, no compute",
           }}
    versions = {}
    if args.compare:
        versions, skipped = import_compare_libs()
        available = [name for name, dist in (("d_wids", "wids"), ("d_mds", "mosaicml-streaming"),
                                             ("d_lit64", "litdata"), ("d_lit1", "litdata")) if dist in versions]
        out["compare"] = {"versions": versions, "skipped": skipped, "available": available,
                          "env": {k: os.environ.get(k) for k in ("LITDATA_POSIX_PAGE_BYTES",
                                                                 "LITDATA_DISABLE_VERSION_CHECK")}}
        out["environment"].update(versions)
        log(f"compare: {versions}" + "".join(f"; skipping {lib}: {why}" for lib, why in skipped.items()))
    t_all = time.perf_counter()
    for kind in args.workloads:
        t = time.perf_counter()
        meta = prepare_rows(args) if kind == "rows" else prepare_images(args)
        cmp = None
        if args.compare:
            cmp = dict(out["compare"], **prepare_compare(kind, meta, args, versions))
        prep_s = time.perf_counter() - t
        bs = args.row_batch if kind == "rows" else args.image_batch
        t = time.perf_counter()
        w = run_workload(kind, meta, bs, args, cmp)
        if cmp is not None:
            w["compare_formats"] = cmp["formats"]
        w.update(n=meta["n"], batch_size=bs, wds_samples=meta["wds_rows"], wds_shards=len(meta["wds"]),
                 store_shards=meta["store_shards"], prepare_s=prep_s, run_s=time.perf_counter() - t)
        w["ratios"] = ratios(w["results"])
        out["workloads"][kind] = w
        log(f"{kind}: prepared in {prep_s:.1f}s, measured in {w['run_s']:.1f}s")
        with open(args.out, "w") as fh:  # partial results survive a later failure
            json.dump(out, fh, indent=1)
    out["total_s"] = time.perf_counter() - t_all
    out["environment"]["loadavg_end"] = os.getloadavg()
    table = report(out, args)
    out["table"] = table
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(table)
    log(f"total {out['total_s']:.1f}s; results in {args.out}")
    return out


if __name__ == "__main__":
    main()
