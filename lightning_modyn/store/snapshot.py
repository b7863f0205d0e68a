"""A reader's snapshot of the catalog: where the bytes of the keys it reads are, as numpy arrays for the hot path.

A snapshot holds what a reader needs, not the whole store: every entry of record shards (a few per million rows)
and the entries of the samples this reader has located so far (a training set: one query when the DataModule is
given its keys). Its memory is proportional to what is read, not to the store. Extended when others append, rebuilt
(with the same samples) when keys move or vanish; a batch of keys is located with two array lookups per key
(``keyindex``), and the last batch's lookup is remembered for the reads that follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable

import numpy as np

from lightning_modyn.store.catalog import KIND_RECORDS
from lightning_modyn.store.keyindex import KeyDirectory

COLUMNS = ("first", "count", "shard", "offset", "length", "timestamp", "label")
"""The per-entry arrays of a snapshot, in the column order of ``Catalog.location_arrays``."""
MAX_REMEMBERED = 1 << 16  # keys of the last lookup a snapshot keeps (batches, not whole training sets)


def group_runs(ids: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of equal values in ``ids`` (grouped values: one run per group)."""
    cuts = np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1, [len(ids)]]).tolist()
    return list(zip(cuts[:-1], cuts[1:]))


@dataclass
class Snapshot:
    """Reader-side arrays for the hot path: where every key's bytes are. Rebuilt when the catalog changes."""

    version: int
    layout: int
    next_key: int  # keys below it existed when the snapshot was taken
    first: np.ndarray
    count: np.ndarray
    shard: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    timestamp: np.ndarray
    label: np.ndarray
    deleted: np.ndarray
    kind_of_shard: np.ndarray
    path_of_shard: dict[int, str]
    itemsize: int = 0
    only_records: bool = False  # every live key of the store is a record row
    layouts: dict = field(default_factory=dict)
    blobs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory = KeyDirectory(self.first, self.count)
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.kind = self.kind_of_shard[self.shard] if len(self.shard) else np.zeros(0, np.int64)
        if self.itemsize:
            # record runs: rows start at offset ≡ residue (mod itemsize); a key's row in the shard seen as rows
            # starting at ``residue`` is ``row0 + key``; ``group`` tells which (shard, residue) view to gather from
            self.residue = self.offset % self.itemsize
            self.row0 = (self.offset - self.residue) // self.itemsize - self.first
            self.group = np.where(self.kind == KIND_RECORDS, self.shard * self.itemsize + self.residue, -1)
        # all record rows in one (shard, alignment): every batch is one gather
        self.single_group = self.only_records and self.itemsize and self.group.min() == self.group.max()

    @cached_property
    def read_group(self) -> np.ndarray:
        """Per entry, a dense id of where its bytes lie (a shard, or a record shard and row alignment), as a small
        integer so that read_order's stable argsort is a radix sort. Built on the first read_order only."""
        where = np.where(self.group >= 0, self.group, self.shard * self.itemsize) if self.itemsize else self.shard
        ids, dense = np.unique(where, return_inverse=True)
        return dense.astype(np.uint16 if len(ids) < 2**16 else np.int64)

    @cached_property
    def one_place(self) -> bool:
        """Every key's bytes lie in one shard and alignment: any order is already the read order."""
        return not len(self.first) or int(self.read_group.max()) == 0

    def columns(self) -> list[np.ndarray]:
        """The per-entry arrays, in the order of :data:`COLUMNS` (that of the catalog's location rows)."""
        return [getattr(self, name) for name in COLUMNS]

    def with_entries(self, rows: np.ndarray, member_rows: Callable[[str, np.ndarray], np.ndarray],
                     **fields) -> "Snapshot":
        """This snapshot with the location ``rows`` added (kept sorted by key), its member layouts extended with
        ``member_rows(ext, first keys of rows)`` and its record blobs shared; ``fields`` replace other fields (a
        newer version, the shards of now)."""
        cols, order = merged(self.columns(), rows)
        new = replace(self, **dict(zip(COLUMNS, cols)), layouts={}, **fields)
        for ext, (rel, size) in self.layouts.items():
            more_rel, more_size = layout_of(rows[:, 0], member_rows(ext, rows[:, 0]))
            rel, size = np.concatenate([rel, more_rel]), np.concatenate([size, more_size])
            new.layouts[ext] = (rel, size) if order is None else (rel[order], size[order])
        return new

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        last = self._last
        if last is not None and len(last[0]) == len(keys) and np.array_equal(last[0], keys):
            return last[1], last[2]  # a batch's reads (read order, bytes, labels) locate the same keys
        pos, found = self.directory.locate(keys)
        if len(self.deleted):
            hit = np.searchsorted(self.deleted, keys)
            found &= self.deleted[np.minimum(hit, len(self.deleted) - 1)] != keys
        self.remember(keys, pos, found)
        return pos, found

    def remember(self, keys: np.ndarray, pos: np.ndarray, found: np.ndarray) -> None:
        """Keep the last lookup of a batch: the next one of the same keys is a comparison instead of a search.

        The arrays handed out are made read-only, so that no caller can change what the next lookup returns.
        """
        if len(keys) > MAX_REMEMBERED:  # a whole training set's check, not a batch: not worth keeping
            self._last = None
            return
        pos.flags.writeable = found.flags.writeable = False
        self._last = (keys.copy(), pos, found)


def layout_of(first: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Member layout rows (key, relative offset, size) spread over entries starting at ``first`` (-1: none)."""
    rel = np.full(len(first), -1, np.int64)
    size = np.full(len(first), -1, np.int64)
    if len(rows) and len(first):
        idx = np.minimum(np.searchsorted(first, rows[:, 0]), len(first) - 1)
        known = first[idx] == rows[:, 0]  # keys appended after the snapshot are skipped
        rel[idx[known]] = rows[known, 1]
        size[idx[known]] = rows[known, 2]
    return rel, size


def merged(cols: list[np.ndarray], rows: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Per-entry arrays with the location ``rows`` added, sorted by key; and the permutation that sorted them
    (None where the rows all came after)."""
    if not len(rows):
        return [np.ascontiguousarray(c) for c in cols], None
    out = [np.concatenate([c, rows[:, j]]) for j, c in enumerate(cols)]
    if not len(cols[0]) or rows[0, 0] > cols[0][-1]:
        return out, None
    order = np.argsort(out[0], kind="stable")  # two sorted runs: a linear merge
    return [c[order] for c in out], order
