"""Where a store's files live: a local directory (mmap, atomic rename) or any fsspec URL (range reads).

This is the only module that touches files. Shards are immutable once written and their names are never reused,
so a reader that still holds an old shard open (or mapped) keeps reading the right bytes after a compaction.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import threading
from collections import OrderedDict
from typing import IO, Iterator, Sequence

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from lightning_modyn._io import atomic_write, fsync_dir
from lightning_modyn.store import cutwatch, spanmap
from lightning_modyn.store.errors import ShardMissingError, TruncatedShardError

_MAX_OPEN_MAPS = 256


class StoreFS:
    """Files of one store root, addressed by paths relative to the root (or absolute paths/URLs for ingested shards)."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = url
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.fs = fs
        self.root = root.rstrip("/") if root != "/" else root
        self.local = isinstance(fs, LocalFileSystem)
        self._maps: OrderedDict[str, tuple[mmap.mmap, np.ndarray, tuple[int, int]]] = OrderedDict()
        self._lock = threading.Lock()
        self._span: spanmap.SpanMap | None = None
        self._spanned: dict[str, tuple[int, int]] = {}  # file -> (start in the span, size)
        self._span_ids: dict[str, tuple[int, int]] = {}  # file -> (device, inode) when it was mapped
        self._span_refused = False  # spanning failed once here: read per shard from then on
        # file -> its change stamp (see cutwatch) when last checked by stat, for its own map and for the span
        self._map_checked: dict[str, tuple[int, int] | None] = {}
        self._span_checked: dict[str, tuple[int, int] | None] = {}
        self._unwatched: set[str] = set()  # mapped files no watch covers: stat'ed on every read
        self._quiet_since = -1  # the watch's event count when every watched mapped file was last known intact

    # ------------------------------------------------------------------ paths
    def path(self, rel: str) -> str:
        """Absolute path (local) or bucket path (remote) of a path relative to the root; absolute inputs pass through."""
        if "://" in rel:
            return self.fs_for(rel)._strip_protocol(rel)
        if rel.startswith("/"):
            return rel
        return f"{self.root}/{rel}"

    def fs_for(self, rel: str):
        """The filesystem of a path: the store's own (with its storage options) unless it is a URL of another kind."""
        if "://" not in rel:
            return self.fs
        protocol = rel.split("://", 1)[0]
        own = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        return self.fs if protocol in own else fsspec.core.url_to_fs(rel)[0]

    def exists(self, rel: str) -> bool:
        return self.fs_for(rel).exists(self.path(rel))

    def size(self, rel: str) -> int:
        try:
            return int(self.fs_for(rel).size(self.path(rel)))
        except FileNotFoundError:
            raise ShardMissingError(f"shard file {self.path(rel)!r} is missing") from None

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) in a folder below the root; empty when it does not exist."""
        path = self.path(rel)
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
        except FileNotFoundError:
            return []

    def isdir(self, rel: str) -> bool:
        return self.fs_for(rel).isdir(self.path(rel))

    def makedirs(self, rel: str) -> None:
        self.fs.makedirs(self.path(rel), exist_ok=True)

    def rmdir(self, rel: str) -> None:
        """Remove an empty folder (object stores have none: nothing to do)."""
        if self.local:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(self.path(rel))

    def remove(self, rel: str) -> None:
        self.forget(rel)
        with contextlib.suppress(FileNotFoundError):
            self.fs_for(rel).rm_file(self.path(rel))

    # ------------------------------------------------------------------ writes
    @contextlib.contextmanager
    def atomic_writer(self, rel: str) -> Iterator[IO[bytes]]:
        """A file that appears at ``rel`` complete or not at all (temp file + fsync + rename; remote: one PUT)."""
        final = self.path(rel)
        if self.local:
            with atomic_write(final) as handle:
                yield handle
        else:
            with self.fs.open(final, "wb") as handle:
                yield handle

    def touch(self, rel: str) -> None:
        """Create an empty file at ``rel``, durably (locally: its folder is synced; an empty file needs no temp
        name, it cannot be torn)."""
        if not self.local:
            self.write_bytes(rel, b"")
            return
        path = self.path(rel)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        fsync_dir(os.path.dirname(path))

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.atomic_writer(rel) as handle:
            handle.write(data)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs_for(rel).open(self.path(rel), "rb") as handle:
            return handle.read()

    def get_file(self, rel: str, local_path: str) -> None:
        self.fs.get_file(self.path(rel), local_path)

    def put_file(self, local_path: str, rel: str) -> None:
        self.fs.put_file(local_path, self.path(rel))

    # ------------------------------------------------------------------ reads
    def array(self, rel: str) -> np.ndarray:
        """A read-only uint8 view of a whole local shard (memory-mapped, cached)."""
        with self._lock:
            hit = self._maps.get(rel)
            if hit is not None:
                if not self._quiet((rel,)):
                    self._verify([(rel, len(hit[1]), hit[2])], self._map_checked)
                self._maps.move_to_end(rel)
                return hit[1]
            path = self.path(rel)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise ShardMissingError(f"shard file {path!r} is missing") from None
            try:
                self._watch(self._map_checked, rel, fd)
                stat = os.fstat(fd)
                mapped = mmap.mmap(fd, stat.st_size, access=mmap.ACCESS_READ) if stat.st_size else None
            finally:
                os.close(fd)
            arr = np.frombuffer(mapped, dtype=np.uint8) if mapped is not None else np.zeros(0, np.uint8)
            self._maps[rel] = (mapped, arr, (stat.st_dev, stat.st_ino))
            while len(self._maps) > _MAX_OPEN_MAPS:
                self._maps.popitem(last=False)
            return arr

    def read_ranges(self, rel: str, starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        """Bytes of each ``[start, end)`` of one file, in one batched request (local: slices of the map)."""
        if self.local and "://" not in rel:
            arr = self.array(rel)
            return [arr[s:e].tobytes() for s, e in zip(starts, ends)]
        fs = self.fs_for(rel)
        path = self.path(rel)
        try:
            return fs.cat_ranges([path] * len(starts), list(map(int, starts)), list(map(int, ends)), on_error="raise")
        except FileNotFoundError:
            raise ShardMissingError(f"shard file {path!r} is missing") from None

    def span(self, rels: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """Local files side by side in one read-only array (see :mod:`~lightning_modyn.store.spanmap`), so that one
        gather reads from all of them: (the array, an ``(len(rels), 2)`` array of each file's start in it and size),
        taken together under the lock so that they always agree. Files stay in the span until one of them is
        forgotten or the span is full; then a new span is started. None where spanning is not possible here (see
        ``spanmap.supported``) or a file is remote.
        """
        if not self.local or self._span_refused or any("://" in rel for rel in rels) or not spanmap.supported():
            return None
        with self._lock:
            missing = [rel for rel in dict.fromkeys(rels) if rel not in self._spanned]
            if missing or self._span is None:
                found = {rel: self._identity(rel) for rel in missing}
                need = sum(spanmap.page_rounded(size) for size, _ in found.values())
                if self._span is None or self._span.end + need > self._span.reserve:
                    # room for this and 3x as much again: the span grows with the store without remapping
                    used = self._span.end if self._span is not None else 0
                    try:
                        self._span = spanmap.SpanMap(max(spanmap.RESERVE_BYTES, 4 * (used + need)))
                    except OSError:  # no address space to reserve: read shard by shard from now on
                        self._span, self._spanned, self._span_refused = None, {}, True
                        return None
                    self._spanned, self._span_ids = {}, {}
                    missing = list(dict.fromkeys(rels))
                    found.update((rel, self._identity(rel)) for rel in missing if rel not in found)
                try:
                    for rel in missing:
                        self._spanned[rel] = self._span.add(self.path(rel), functools.partial(self._watch, self._span_checked, rel))
                        self._span_ids[rel] = found[rel][1]
                except ShardMissingError:
                    raise
                except (OSError, spanmap.SpanFullError):  # e.g. out of file handles, a file grew: this call reads
                    self._span, self._spanned = None, {}  # shard by shard; the next one starts a new span
                    return None
            where = np.array([self._spanned[rel] for rel in rels], dtype=np.int64).reshape(-1, 2)
            if not self._quiet(rels):  # those mapped before: still as long as then? (new ones were just measured)
                fresh = set(missing)
                self._verify([(rel, size, self._span_ids[rel]) for rel, size in zip(rels, where[:, 1].tolist())
                              if rel not in fresh], self._span_checked)
            return self._span.array(), where

    def check_mapped(self, rel: str) -> None:
        """Raise ``TruncatedShardError`` when the mapped local file ``rel`` was cut since it was mapped (reading the
        lost pages would give zeros or SIGBUS). For callers that keep views of :meth:`array` themselves."""
        with self._lock:
            hit = self._maps.get(rel)
            if hit is not None and not self._quiet((rel,)):
                self._verify([(rel, len(hit[1]), hit[2])], self._map_checked)

    def _watch(self, checked: dict, rel: str, fd: int) -> None:
        """Watch a file being mapped (open as ``fd``, before its size is taken) for changes (see ``cutwatch``); its
        stamp now goes into ``checked``, the record of the mapping (its own map, or the span) being made."""
        watch = cutwatch.shared()
        path = self.path(rel)
        checked[rel] = stamp = watch.stamp(path) if watch.watch(path, fd) else None
        if stamp is None:
            self._unwatched.add(rel)

    def _quiet(self, rels) -> bool:
        """The usual answer, for one question to the kernel: no watched file changed since every mapped one was last
        known intact, and every one of ``rels`` is watched."""
        return cutwatch.shared().events() == self._quiet_since and (
            not self._unwatched or self._unwatched.isdisjoint(rels))

    def _verify(self, mapped: list[tuple[str, int, tuple[int, int]]], checked: dict) -> None:
        """Check that mapped files ``(rel, size when mapped, identity)`` were not cut since (where :meth:`_quiet`
        could not say so): ``stat`` those whose watch reported a change since their mapping's last check, and those
        that no watch covers."""
        if not mapped:
            return
        watch = cutwatch.shared()
        events = watch.events()
        stamps = watch.stamps([self.path(rel) for rel, _, _ in mapped])
        for (rel, size, ident), stamp in zip(mapped, stamps):
            if stamp is None or checked.get(rel) != stamp:
                self._check_size(rel, size, ident)
                checked[rel] = stamp
        if events != self._quiet_since:
            self._sweep(events)

    def _sweep(self, events: int) -> None:
        """After a change somewhere: check every other mapped file that reported one (a failure is left for the
        read that touches that file), and note the event count if all are intact."""
        intact = True
        for checked, sizes in ((self._map_checked, {r: (len(m[1]), m[2]) for r, m in self._maps.items()}),
                               (self._span_checked, {r: (w[1], self._span_ids[r]) for r, w in self._spanned.items()})):
            rels = [r for r in sizes if r in checked]
            for rel, stamp in zip(rels, cutwatch.shared().stamps([self.path(r) for r in rels])):
                if stamp is not None and checked[rel] != stamp:
                    try:
                        self._check_size(rel, *sizes[rel])
                    except TruncatedShardError:
                        intact = False
                        continue
                    checked[rel] = stamp
        if intact:
            self._quiet_since = events

    def _check_size(self, rel: str, size: int, ident: tuple[int, int]) -> None:
        """A file cut in place (same inode, fewer bytes) is an error; one removed or replaced by another file is
        not (the mapping still holds the old file's bytes)."""
        try:
            stat = os.stat(self.path(rel))
        except FileNotFoundError:
            return
        if stat.st_size < size and (stat.st_dev, stat.st_ino) == ident:
            raise TruncatedShardError(
                f"shard file {self.path(rel)!r} was cut from {size} to {stat.st_size} bytes while mapped; it was truncated "
                "behind the store's back"
            )

    def _identity(self, rel: str) -> tuple[int, tuple[int, int]]:
        """A local file's size and (device, inode)."""
        try:
            stat = os.stat(self.path(rel))
        except FileNotFoundError:
            raise ShardMissingError(f"shard file {self.path(rel)!r} is missing") from None
        return stat.st_size, (stat.st_dev, stat.st_ino)

    def _replaced(self, rel: str, ident: tuple[int, int]) -> bool:
        try:
            stat = os.stat(self.path(rel))
        except FileNotFoundError:
            return True
        return (stat.st_dev, stat.st_ino) != ident

    def open_read(self, rel: str) -> IO[bytes]:
        try:
            return self.fs_for(rel).open(self.path(rel), "rb")
        except FileNotFoundError:
            raise ShardMissingError(f"shard file {self.path(rel)!r} is missing") from None

    def forget(self, rel: str) -> None:
        with self._lock:
            self._maps.pop(rel, None)
            if rel in self._spanned:  # the span holds it mapped (and its disk space): drop the span
                self._span, self._spanned = None, {}

    def retain(self, rels: set[str]) -> None:
        """Unmap every file not in ``rels`` (shards a compaction replaced) or no longer the file it was (a path
        used again for another file), so that their disk space is freed once no array in use refers to them."""
        with self._lock:
            for rel in [rel for rel, m in self._maps.items() if rel not in rels or self._replaced(rel, m[2])]:
                del self._maps[rel]
            if any(rel not in rels or self._replaced(rel, self._span_ids[rel]) for rel in self._spanned):
                self._span, self._spanned = None, {}

    def close(self) -> None:
        with self._lock:
            self._maps.clear()
            self._span, self._spanned = None, {}


