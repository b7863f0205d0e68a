"""Mapping a batch of keys to catalog entries in a few vectorized steps.

Entries are sorted runs ``[first, first + count)`` of keys (one key for a sample, thousands for a block of
records). A binary search over them costs ~40 ns a key on this hardware — more than gathering the row itself —
so :class:`KeyDirectory` adds a bucket table: keys are cut into buckets of ``2**shift`` keys, no wider than the
shortest run, so at most one run starts inside a bucket and a key's run is found with two array lookups.
When runs are too short for a table of reasonable size, it falls back to ``searchsorted``.
"""

from __future__ import annotations

import numpy as np

_MAX_TABLE = 1 << 24  # buckets; 64 MiB of int32 at most


class KeyDirectory:
    """Locate keys in sorted, non-overlapping runs ``[first[i], first[i] + count[i])``."""

    def __init__(self, first: np.ndarray, count: np.ndarray) -> None:
        self.first = first
        self.count = count
        self.end = first + count
        self.table: np.ndarray | None = None
        self.shift = 0
        n = len(first)
        if n == 0:
            return
        shift = max(0, int(np.floor(np.log2(max(1, int(count.min()))))))
        buckets = (int(self.end[-1]) >> shift) + 1
        if buckets > _MAX_TABLE or buckets > 8 * n + 4096:
            return
        starts = np.arange(buckets, dtype=np.int64) << shift
        # index of the last run starting at or before each bucket's first key (-1: none)
        self.table = np.searchsorted(first, starts, side="right") - 1
        self.shift = shift
        # first[] with a sentinel so that table[b] + 1 is always a valid index
        self._first_ext = np.concatenate([first, [np.iinfo(np.int64).max]])

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(entry index, found) for each key; ``found`` is False where no run holds the key."""
        n = len(self.first)
        if n == 0 or len(keys) == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        if self.table is not None and keys.min() >= self.first[0] and keys.max() < self.end[-1]:
            # every key lies within the table and at or after the first run: no index can go negative
            pos = self.table[keys >> self.shift]
            pos += self._first_ext[pos + 1] <= keys
            return pos, keys < self.end[pos]
        pos = np.searchsorted(self.first, keys, side="right") - 1
        found = pos >= 0
        pos[~found] = 0
        found &= keys < self.end[pos]
        return pos, found
