"""New shards: samples, blocks of records and a compaction's survivors, written through ``tarformat.ShardWriter`` into
files that the writer journal publishes, together with the catalog rows that will describe them.

The sample and record writers take shard ids from the catalog and return :class:`NewShards`: the catalog rows
that describe the files, for the caller to register in its commit once every file is complete. With one writer the
whole call is one transaction; with many (PostgreSQL), the files are written outside any transaction and only the
registration is serialised with other writers' commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lightning_modyn.store import tarformat
from lightning_modyn.store.catalog import KIND_RECORDS, KIND_SAMPLES, Catalog, Entry, pack_array, unpack_array
from lightning_modyn.store.journal import Publication

SHARDS = "shards"
RECORD_EXT = "rows"


def shard_name(shard_id: int) -> str:
    """Where the store writes shard ``shard_id`` (names are never reused)."""
    return f"{SHARDS}/shard-{shard_id:06d}.tar"


@dataclass
class NewShards:
    """Shard files written by one call and the catalog rows that describe them."""

    shards: list[tuple[int, str, int, int]] = field(default_factory=list)  # id, path, kind, samples
    sizes: list[int] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    members: list[tuple[str, int, int, int]] = field(default_factory=list)

    def register(self, catalog: Catalog, appended: int) -> None:
        """Add the rows inside the caller's open transaction (the store owns these files)."""
        for (shard_id, rel, kind, total), size in zip(self.shards, self.sizes):
            catalog.add_shard(shard_id, rel, True, kind, size, total)
        catalog.add_members(self.members)
        catalog.add_entries(self.entries, appended)


def write_sample_shards(catalog: Catalog, pub: Publication, keys: np.ndarray, wds_keys: list[str],
                        encoded: list[list[tuple[str, bytes]]], ts: np.ndarray, labels: np.ndarray | None,
                        mtime: int) -> NewShards:
    """Samples (each a list of (extension, bytes)) as members ``<__key__>.<ext>``, a new shard whenever one reaches
    the store's ``shard_max_bytes`` or ``shard_max_samples``; every member's place goes into the catalog's member
    table, so a read of one member needs no header."""
    max_bytes, max_samples = catalog.number("shard_max_bytes"), catalog.number("shard_max_samples")
    new = NewShards()
    entries, members = new.entries, new.members
    i, n = 0, len(keys)
    while i < n:
        shard_id = catalog.allocate("next_shard", 1)
        rel = shard_name(shard_id)
        start_i = i
        with pub.shard(rel) as out:
            shard = tarformat.ShardWriter(out, mtime)
            while i < n and i - start_i < max_samples and (shard.pos < max_bytes or i == start_i):
                start, key = shard.pos, int(keys[i])
                for ext, data in encoded[i]:
                    members.append((ext, key, shard.member(f"{wds_keys[i]}.{ext}", data) - start, len(data)))
                entries.append(Entry(key, 1, shard_id, start, shard.pos - start, int(ts[i]), int(ts[i]),
                                     None if labels is None else int(labels[i]), wds_keys[i]))
                i += 1
            new.sizes.append(shard.close())
        new.shards.append((shard_id, rel, KIND_SAMPLES, i - start_i))
    return new


def write_record_shards(catalog: Catalog, pub: Publication, keys: np.ndarray, rows: np.ndarray, ts: np.ndarray,
                        labels: np.ndarray | None, mtime: int) -> list[Entry]:
    """Fixed-size records packed many rows to a member (``<first key>.rows``, ~``block_bytes`` each, sized by
    :func:`aligned_block_rows`), a new shard whenever one reaches ``shard_max_bytes`` or ``shard_max_samples``
    blocks; one entry per block."""
    itemsize = rows.dtype.itemsize
    block_rows = aligned_block_rows(catalog.number("block_bytes"), itemsize)
    max_bytes, max_blocks = catalog.number("shard_max_bytes"), catalog.number("shard_max_samples")
    raw = rows.view(np.uint8).reshape(-1)
    new = NewShards()
    entries = new.entries
    i, n = 0, len(keys)
    while i < n:
        shard_id = catalog.allocate("next_shard", 1)
        rel = shard_name(shard_id)
        start_i = i
        blocks = 0
        with pub.shard(rel) as out:
            shard = tarformat.ShardWriter(out, mtime)
            while i < n and blocks < max_blocks and (shard.pos < max_bytes or blocks == 0):
                j = min(n, i + block_rows)
                data_offset = shard.member(f"{int(keys[i]):012d}.{RECORD_EXT}", raw[i * itemsize : j * itemsize].data)
                entries.append(record_entry(int(keys[i]), j - i, shard_id, data_offset, itemsize, ts[i:j],
                                            None if labels is None else labels[i:j]))
                blocks += 1
                i = j
            new.sizes.append(shard.close())
        new.shards.append((shard_id, rel, KIND_RECORDS, i - start_i))
    return new


READ_BATCH_BYTES = 64 << 20
"""A compaction reads an old shard's survivors in batches of about this many bytes (coalesced range requests on a
remote store: a few per batch, not one per sample)."""


def copy_survivors(writer: tarformat.ShardWriter, kind: int, rows: list[tuple], new_id: int,
                   read_ranges: Callable[[np.ndarray, np.ndarray], list], deleted: np.ndarray) -> list[Entry]:
    """Copy the live samples among the catalog ``rows`` of an old shard (whole, headers included), or the live runs
    of its record rows (one member per run), into ``writer`` (the new shard ``new_id``); return their entries.

    ``read_ranges(starts, ends)`` reads ranges of the old shard; ``deleted`` lists the deleted keys inside its
    record runs.
    """
    entries: list[Entry] = []
    if kind == KIND_SAMPLES:
        for batch in _batches(rows, [r[4] for r in rows]):
            starts = np.array([r[3] for r in batch], np.int64)
            blobs = read_ranges(starts, starts + np.array([r[4] for r in batch], np.int64))
            for (first, _c, _s, _o, length, min_ts, max_ts, label, wds_key, _tb, _lb), data in zip(batch, blobs):
                entries.append(Entry(first, 1, new_id, writer.copy(data), length, min_ts, max_ts, label, wds_key))
        return entries
    for batch in _batches(rows, [r[1] * r[4] for r in rows]):
        starts = np.array([r[3] for r in batch], np.int64)
        blocks = read_ranges(starts, starts + np.array([r[1] * r[4] for r in batch], np.int64))
        for (first, count, _s, _o, length, min_ts, _mx, _lab, _wk, ts_blob, label_blob), block in zip(batch, blocks):
            run_keys = np.arange(first, first + count, dtype=np.int64)
            live = run_keys[~np.isin(run_keys, deleted)] if len(deleted) else run_keys
            if not len(live):
                continue
            ts_all = unpack_array(ts_blob) if ts_blob is not None else None
            lab_all = unpack_array(label_blob) if label_blob is not None else None
            for run in np.split(live, np.flatnonzero(np.diff(live) != 1) + 1):
                a, b = int(run[0] - first), int(run[-1] - first + 1)
                data_offset = writer.member(f"{int(run[0]):012d}.{RECORD_EXT}", block[a * length : b * length])
                run_ts = ts_all[a:b] + min_ts if ts_all is not None else np.full(b - a, min_ts)
                entries.append(record_entry(int(run[0]), b - a, new_id, data_offset, length, run_ts,
                                            None if lab_all is None else lab_all[a:b]))
    return entries


def _batches(rows: list, sizes: list[int]):
    """``rows`` in consecutive batches of about :data:`READ_BATCH_BYTES` (at least one row each)."""
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > READ_BATCH_BYTES:
            yield rows[start:i]
            start, total = i, 0
        total += size
    if start < len(rows):
        yield rows[start:]


def aligned_block_rows(block_bytes: int, itemsize: int) -> int:
    """Rows per record block, near ``block_bytes``, such that a block with its header spans a whole number of rows.

    Then every block of a shard starts its rows at the same offset modulo the row size, and a batch of rows from
    one shard is a single numpy gather on the shard viewed as a 2-D array of rows.
    """
    target = max(1, block_bytes // itemsize)
    for rows in range(target, max(0, target - 4096), -1):
        if (tarformat.BLOCK + tarformat.padded(rows * itemsize)) % itemsize == 0:
            return rows
    return target


def record_entry(first_key: int, count: int, shard: int, offset: int, itemsize: int, ts: np.ndarray,
                 labels: np.ndarray | None) -> Entry:
    """The catalog entry of a run of ``count`` record rows from ``offset``: per-row timestamps and labels packed."""
    lo, hi = int(ts.min()), int(ts.max())
    return Entry(first_key, count, shard, offset, itemsize, lo, hi, None, None,
                 None if lo == hi else pack_array(ts - lo),
                 None if labels is None else pack_array(labels))
