"""What a batch read returns without a Python object per sample: one member of many samples (``MemberBatch``), and
the per-sample dicts of ``get`` built in bulk from parsed headers."""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_modyn.store import tarformat

class MemberBatch:
    """Bytes of one member of many samples, in request order, without a Python object per sample.

    Fixed-size members (the common case: images, tensors) come as an ``(n, size)`` uint8 array (``array()``,
    possibly a strided view of the gathered rows); others as one buffer ``data`` with ``offsets`` so that
    ``data[offsets[i]:offsets[i + 1]]`` is sample ``i``'s member.
    """

    def __init__(self, data: np.ndarray | None = None, offsets: np.ndarray | None = None,
                 fixed: np.ndarray | None = None) -> None:
        self._fixed = fixed
        self._data = data
        self._offsets = offsets

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self._data = np.ascontiguousarray(self._fixed).reshape(-1)
        return self._data

    @property
    def offsets(self) -> np.ndarray:
        if self._offsets is None:
            n, size = self._fixed.shape
            self._offsets = np.arange(n + 1, dtype=np.int64) * size
        return self._offsets

    def __len__(self) -> int:
        return len(self._fixed) if self._fixed is not None else len(self._offsets) - 1

    def __getitem__(self, i: int) -> bytes:
        if self._fixed is not None:
            return self._fixed[i].tobytes()
        return self._data[self._offsets[i] : self._offsets[i + 1]].tobytes()

    @property
    def fixed_size(self) -> int | None:
        """The common size of all members, or None when sizes differ."""
        if self._fixed is not None:
            return self._fixed.shape[1]
        sizes = np.diff(self._offsets)
        if not len(sizes):
            return 0
        return int(sizes[0]) if (sizes == sizes[0]).all() else None

    def array(self) -> np.ndarray:
        """An ``(n, size)`` uint8 array when every member has the same size."""
        if self._fixed is not None:
            return self._fixed
        size = self.fixed_size
        if size is None:
            raise ValueError("members differ in size; index the batch or use data/offsets")
        return self._data.reshape(len(self), size)

    def tolist(self) -> list[bytes]:
        return [self[i] for i in range(len(self))]


def member_dicts(parsed: tarformat.ParsedSamples, values: list[bytes], n: int) -> list[dict[str, Any]]:
    """One dict of extension -> bytes per sample (members in tar order), built per group of samples that have the
    same extensions in the same order — usually one group, so the dicts come from one comprehension."""
    if not n:
        return []
    counts = np.bincount(parsed.sample, minlength=n)
    first = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    width = int(counts.max())
    if not width:
        return [{} for _ in range(n)]
    table = np.full((n, width), -1, np.int64)  # each sample's extension ids in order, -1 past its last member
    table[parsed.sample, np.arange(len(parsed.sample)) - first[parsed.sample]] = parsed.ext
    if (table == table[0]).all():  # the usual case: every sample has the same members
        signatures, group = table[:1], np.zeros(n, np.int64)
        if width == 1:
            return [{parsed.exts[int(table[0, 0])]: v} for v in values]
    else:
        signatures, group = np.unique(table, axis=0, return_inverse=True)
    held = np.empty(len(values), object)
    held[:] = values
    out: list[dict[str, Any]] = [None] * n  # type: ignore[list-item]
    for g, signature in enumerate(signatures.tolist()):
        members = [parsed.exts[x] for x in signature if x >= 0]
        rows = np.flatnonzero(group.reshape(-1) == g) if len(signatures) > 1 else np.arange(n)
        columns = [held[first[rows] + j].tolist() for j in range(len(members))]
        if not members:  # samples without a member with an extension
            dicts = [{} for _ in rows]
        elif len(members) == 1:
            dicts = [{members[0]: v} for v in columns[0]]
        else:
            dicts = [dict(zip(members, vs)) for vs in zip(*columns)]
        for i, d in zip(rows.tolist(), dicts):
            out[i] = d
    return out
