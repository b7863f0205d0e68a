"""Indexing existing WebDataset shards in place: scanning a tar for its samples and their members, reading label or
timestamp members, and the catalog rows that describe an ingested shard. The files are never changed here.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator

import numpy as np

from lightning_modyn.store import tarformat
from lightning_modyn.store.catalog import KIND_SAMPLES, NO_LABEL, Catalog, Entry
from lightning_modyn.store.errors import CompressedShardError, DuplicateKeyError
from lightning_modyn.store.filesystem import StoreFS
from lightning_modyn.store.values import INT64, as_int_array

Scanned = tuple[str, list[tarformat.SampleSpan], int]
"""A scanned shard: (its name in the catalog, its samples, its size in bytes)."""


def shard_ref(files: StoreFS, shard: str) -> str:
    """How the catalog names a shard: relative to the root when inside it, else an absolute path or URL."""
    if "://" in shard and not shard.startswith("file://"):
        return shard
    path = os.path.abspath(shard.removeprefix("file://"))
    if files.local:
        root = os.path.abspath(files.root)
        if path.startswith(root + os.sep):
            return os.path.relpath(path, root)
    return path


@contextlib.contextmanager
def member_reader(files: StoreFS, ref: str) -> Iterator[Callable[[int, int], bytes]]:
    """``read_at(offset, n)`` over a shard being ingested: slices of one map of a local file, else seeks."""
    if files.local and "://" not in ref and files.size(ref):
        data = files.array(ref)
        try:
            yield lambda offset, n: data[offset : offset + n].tobytes()
        finally:
            files.forget(ref)
        return
    with files.open_read(ref) as handle:
        def read_at(offset: int, n: int) -> bytes:
            handle.seek(offset)
            return handle.read(n)
        yield read_at


def scan_shard(files: StoreFS, ref: str) -> Scanned:
    """Every sample of an uncompressed tar shard, its headers validated (``tarformat.iter_members``)."""
    size = files.size(ref)
    with member_reader(files, ref) as read_at:
        kind = tarformat.detect_compression(read_at(0, 6))
        if kind is not None:
            raise CompressedShardError(
                f"{ref}: the shard is {kind}-compressed; random access needs byte offsets into an uncompressed "
                f"tar, which a {kind} stream does not have — decompress it first and ingest the plain .tar"
            )
        spans = list(tarformat.iter_samples(tarformat.iter_members(read_at, size, ref), ref))
    seen: dict[str, int] = {}
    for span in spans:
        if span.key in seen:
            raise DuplicateKeyError(f"{ref}: duplicate __key__ {span.key!r} at offsets {seen[span.key]} and {span.start}")
        seen[span.key] = span.start
    return ref, spans, size


def values_from_members(files: StoreFS, scanned: list[Scanned], spec: Any, n: int, what: str,
                        default: Any) -> np.ndarray | None:
    """One int64 per sample for ``what`` (timestamps or labels): ``default`` when ``spec`` is None, the values
    ``spec`` when given, or the integer text of each sample's member with extension ``spec``."""
    if spec is None:
        return None if default is None else np.full(n, default, np.int64)
    reserved = NO_LABEL if what == "labels" else None
    if not isinstance(spec, str):
        return as_int_array(spec, n, what, reserved=reserved)
    out = []
    for ref, spans, _ in scanned:
        with member_reader(files, ref) as read_at:
            for span in spans:
                member = next((m for m in span.members if m.ext == spec), None)
                if member is None:
                    raise ValueError(f"{ref}: sample {span.key!r} has no {spec!r} member to take its {what} from")
                text = read_at(member.data_offset, member.size)
                try:
                    value = int(text)
                except ValueError:
                    raise ValueError(
                        f"{ref}: sample {span.key!r} member {spec!r} = {text[:40]!r} is not an integer ({what})"
                    ) from None
                if not INT64.min <= value <= INT64.max or value == reserved:
                    raise ValueError(f"{ref}: sample {span.key!r} member {spec!r} = {value} does not fit in "
                                     f"int64 or is reserved ({what})")
                out.append(value)
    return np.array(out, np.int64)


def register_shards(catalog: Catalog, scanned: list[Scanned], keys: np.ndarray, ts: np.ndarray,
                    labels: np.ndarray | None, hand_over: bool) -> list[Entry]:
    """Inside the caller's transaction: a catalog shard per scanned file (owned by the store only if handed over),
    the place of every member, and the entries of its samples (returned, for the caller to add)."""
    entries, i = [], 0
    for ref, spans, size in scanned:
        shard_id = catalog.allocate("next_shard", 1)
        catalog.add_shard(shard_id, ref, bool(hand_over), KIND_SAMPLES, size, len(spans))
        member_rows = []
        for span in spans:
            key = int(keys[i])
            entries.append(Entry(key, 1, shard_id, span.start, span.end - span.start, int(ts[i]), int(ts[i]),
                                 None if labels is None else int(labels[i]), span.key))
            member_rows.extend((m.ext, key, m.data_offset - span.start, m.size) for m in span.members)
            i += 1
        catalog.add_members(member_rows)
    return entries
