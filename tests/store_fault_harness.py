"""Kill a store writer (SIGKILL) at placed points of every write path and check what a crash may leave behind.

A *placed point* is ``(kind, n, phase)``: the ``n``-th low-level step of ``kind`` that the writer takes, killed
``before`` it runs (or ``after`` it, for catalog commits and the writer's last step). Steps are counted by wrapping,
inside the child only, the os-level calls every write path goes through, so that new steps (a writer journal, an
erasure record) are covered without the harness knowing their names:

=========  ==================================================================================================
kind       what is wrapped
=========  ==================================================================================================
open_w     ``open``/``io.open`` in a writing mode and ``os.open`` with a writing or creating flag
write      ``write``/``writelines`` of such files, ``os.write``, ``os.sendfile``, ``os.copy_file_range``
fsync      ``os.fsync``, ``os.fdatasync`` (of a file or a folder)
replace    ``os.replace``
rename     ``os.rename``
unlink     ``os.unlink``, ``os.remove``
rmdir      ``os.rmdir``
rmtree     ``shutil.rmtree`` (its inner unlinks and rmdirs count too)
mkdir      ``os.mkdir`` (and so ``os.makedirs``)
truncate   ``os.truncate``, ``os.ftruncate``, ``truncate`` of a written file
link       ``os.link``, ``os.symlink``
commit     ``SQLiteCatalog._commit``: killed before or after the real ``COMMIT``
=========  ==================================================================================================

Only steps on paths below the case folder (the store and the user's folder beside it) count. The child is forked
from a process that has already imported the package (this one), so a point costs a fork, not an interpreter start
(measured on 2 shared cores: fork + open + operation + kill about 10 ms, a fresh interpreter importing the store
about 240 ms; the checks after a kill about 7 ms). The child gets its own tqdm lock (see :func:`_private_locks`).

Per operation, the campaign first runs the operation once without a kill (the *dry run*: it records every step, so
it is the run "with N = count + 1" that completes without reaching its N-th step), then kills it at every step it
recorded (each kind with N = 1, 2, ..., count), after every commit and after its last step, and at a few random
times. Every run starts from a fresh copy of the operation's template (a store set up in this process beforehand,
with two foreign files in ``shards/`` the store must never touch: ``my-dataset-000.tar`` and one named like a store
shard, ``shard-999999.tar``). After each kill, this process checks
the invariants (see :func:`check_after_kill`): a read-only reader first, then a writable ``SampleStore.open`` (which
collects the crashed writer's garbage), then a ``compact()``.

Operations (see ``OPERATIONS``): ``create``, ``append`` (3 shards), ``append_records`` (4 blocks in 2 shards),
``ingest`` and ``ingest_hand_over`` (2 user shards), ``delete`` (samples in 2 shards, record rows, a user shard's
sample), ``compact`` (appended shards and record runs), ``compact_ingested`` (a user shard, not handed over, with a
deleted sample), ``compact_ingested_in_store`` (the same, the user's shard lying in ``shards/``),
``compact_handed_over``, ``set_attribute``, and the writable open after a writer killed in an append before its
commit (``open_after_append_crash``) or in a compaction after its first switch (``open_after_compact_crash``).

``python tests/store_fault_harness.py --report`` runs the full campaign (every write, more random kills) and prints
a markdown table and the findings.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import select
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from lightning_modyn.store import SampleStore
from lightning_modyn.store.catalog_sqlite import SQLiteCatalog

# ====================================================================== payloads
RECORD_DTYPE = np.dtype([("tag", "S24"), ("k", "<i8")])  # 32 bytes: every block holds whole rows
FOREIGN = ("my-dataset-000.tar", "shard-999999.tar")  # the user's files in <store>/shards/ (one named like a
# store shard): the store must never remove or change them
COUNT_KEYS = ("shards_not_owned", "deleted_kept")  # compact()'s counts of user shards that keep deleted bytes
CATEGORIES = ("lost", "half_visible", "debris", "user_files", "deleted_bytes", "recovery_failed")
CATEGORY_TITLES = {
    "lost": "lost", "half_visible": "half-visible", "debris": "debris", "user_files": "user files changed",
    "deleted_bytes": "deleted bytes forgotten", "recovery_failed": "recovery failed",
}
KNOWN_TOP_LEVEL = {"store.json", "catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm",
                   "catalog.sqlite-journal", "writer.lock", "shards"}


def payload(uid: str) -> bytes:
    """The bytes of sample ``uid``: its identity repeated, so that any copy of them anywhere is found by search."""
    return f"<{uid}>".encode() * 12


def record_row(uid: str, k: int) -> bytes:
    row = np.zeros(1, RECORD_DTYPE)
    row["tag"] = f"<{uid}>".encode().ljust(24, b"=")
    row["k"] = k
    return row.tobytes()


def records(uids: list[str]) -> np.ndarray:
    rows = np.zeros(len(uids), RECORD_DTYPE)
    for i, uid in enumerate(uids):
        rows[i] = np.frombuffer(record_row(uid, int(uid[1:])), RECORD_DTYPE)[0]
    return rows


def foreign_bytes(name: str) -> bytes:
    rng = np.random.default_rng(len(name))
    return f"{name}: a user's file, not a store shard\n".encode() + rng.integers(0, 256, 3000, np.uint8).tobytes()


def place_foreign(world: "World") -> None:
    for path in world.foreign_paths:
        with open(path, "wb") as handle:
            handle.write(foreign_bytes(os.path.basename(path)))
        world.user_files[path] = sha256(path)


def sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


# ====================================================================== the world one operation starts from
@dataclass
class World:
    """What the store held, acknowledged, before the killed operation, and what that operation was to do."""

    op: str
    case: str  # the case folder: <case>/store, <case>/user
    expected: dict[int, str] = field(default_factory=dict)  # acknowledged live key -> uid
    payloads: dict[str, str] = field(default_factory=dict)  # uid -> hex of the bytes get() must return
    deleted: dict[int, str] = field(default_factory=dict)  # acknowledged deleted key -> uid
    user_files: dict[str, str] = field(default_factory=dict)  # path -> sha256: never removed or changed
    user_shard_uids: dict[str, list[str]] = field(default_factory=dict)  # ingested, not handed over -> uids
    handed_over: dict[str, list[str]] = field(default_factory=dict)  # ingested and handed over -> uids
    user_listing: list[str] = field(default_factory=list)  # files in <case>/user before the operation
    foreign: bool = True
    # the operation
    new_uids: list[str] = field(default_factory=list)  # uids it adds (append, append_records, ingest)
    sources: list[str] = field(default_factory=list)  # ingest: the shards it ingests
    hand_over: bool = False
    to_delete: dict[int, str] = field(default_factory=dict)  # delete: key -> uid
    attribute: tuple[str, Any, Any] | None = None  # set_attribute: name, old value (None: unset), new value
    pending: list[str] = field(default_factory=list)  # uids of a writer killed in the set-up (not acknowledged)

    @property
    def url(self) -> str:
        return os.path.join(self.case, "store")

    @property
    def user_dir(self) -> str:
        return os.path.join(self.case, "user")

    @property
    def foreign_paths(self) -> list[str]:
        return [os.path.join(self.url, "shards", name) for name in FOREIGN] if self.foreign else []

    def marker(self, uid: str) -> bytes:
        """The bytes to search for to find a copy of ``uid``'s data (a sample's payload, a record's tag)."""
        if uid.startswith("r"):
            return f"<{uid}>".encode().ljust(24, b"=")
        return payload(uid)


class _Setup:
    """Helpers to build an operation's template store in this process."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.n = 0
        os.makedirs(world.user_dir, exist_ok=True)

    def uids(self, prefix: str, n: int) -> list[str]:
        out = [f"{prefix}{self.n + i:05d}" for i in range(n)]
        self.n += n
        return out

    def create(self) -> SampleStore:
        return SampleStore.create(self.w.url, shard_max_samples=3, block_bytes=128)

    def append(self, store: SampleStore, n: int) -> list[int]:
        uids = self.uids("s", n)
        keys = store.append([{"bin": payload(u)} for u in uids]).tolist()
        for k, u in zip(keys, uids):
            self.w.expected[k] = u
            self.w.payloads[u] = payload(u).hex()
        return keys

    def append_records(self, store: SampleStore, n: int) -> list[int]:
        uids = self.uids("r", n)
        keys = store.append_records(records(uids)).tolist()
        for k, u in zip(keys, uids):
            self.w.expected[k] = u
            self.w.payloads[u] = record_row(u, int(u[1:])).hex()
        return keys

    def user_shard(self, name: str, n: int, folder: str | None = None) -> tuple[str, list[str]]:
        """A WebDataset shard written by the user (Python's tarfile), in the user's folder (or ``folder``)."""
        uids = self.uids("u", n)
        path = os.path.join(folder or self.w.user_dir, name)
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for u in uids:
                data = payload(u)
                info = tarfile.TarInfo(f"{u}.bin")
                info.size, info.mtime = len(data), 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
        for u in uids:
            self.w.payloads[u] = payload(u).hex()
        return path, uids

    def ingest(self, store: SampleStore, paths_uids: list[tuple[str, list[str]]], hand_over: bool = False) -> list[int]:
        paths = [p for p, _ in paths_uids]
        keys = (store.ingest(paths, hand_over=True) if hand_over else store.ingest(paths)).tolist()
        uids = [u for _, us in paths_uids for u in us]
        for k, u in zip(keys, uids):
            self.w.expected[k] = u
        for p, us in paths_uids:
            if hand_over:
                self.w.handed_over[p] = us
            else:
                self.w.user_shard_uids[p] = us
                self.w.user_files[p] = sha256(p)
        return keys

    def delete(self, store: SampleStore, keys: list[int]) -> None:
        store.delete(keys)
        for k in keys:
            self.w.deleted[k] = self.w.expected.pop(k)

    def finish(self) -> None:
        """Place the foreign file (after every writable open of the set-up) and note the user's files."""
        place_foreign(self.w)
        for p in self.w.sources:
            if p not in self.w.user_files:
                self.w.user_files[p] = sha256(p)
        self.w.user_listing = sorted(os.listdir(self.w.user_dir))


# ---------------------------------------------------------------------- set-ups (parent) and operations (child)
def _setup_create(s: _Setup) -> None:
    os.makedirs(s.w.url)
    s.w.foreign = False  # create needs an empty folder; the foreign file is placed after the kill instead


def _op_create(w: World) -> Any:
    SampleStore.create(w.url, shard_max_samples=3, block_bytes=128).close()


def _setup_append(s: _Setup) -> None:
    with s.create() as store:
        keys = s.append(store, 5)
        s.delete(store, [keys[1]])
    s.w.new_uids = s.uids("s", 7)
    for u in s.w.new_uids:
        s.w.payloads[u] = payload(u).hex()


def _op_append(w: World) -> Any:
    with SampleStore.open(w.url) as store:
        return store.append([{"bin": payload(u)} for u in w.new_uids]).tolist()


def _setup_append_records(s: _Setup) -> None:
    with s.create() as store:
        keys = s.append_records(store, 8)
        s.delete(store, [keys[2]])
    s.w.new_uids = s.uids("r", 14)  # 4 rows a block, 2 blocks a shard: 4 blocks in 2 shards
    for u in s.w.new_uids:
        s.w.payloads[u] = record_row(u, int(u[1:])).hex()


def _op_append_records(w: World) -> Any:
    with SampleStore.open(w.url) as store:
        return store.append_records(records(w.new_uids)).tolist()


def _setup_ingest(s: _Setup, hand_over: bool = False) -> None:
    with s.create() as store:
        keys = s.append(store, 4)
        s.delete(store, [keys[0]])
    for name in ("new-000.tar", "new-001.tar"):
        path, uids = s.user_shard(name, 3)
        s.w.sources.append(path)
        s.w.new_uids += uids
    s.w.hand_over = hand_over


def _op_ingest(w: World) -> Any:
    with SampleStore.open(w.url) as store:
        keys = store.ingest(w.sources, hand_over=True) if w.hand_over else store.ingest(w.sources)
        return keys.tolist()


def _setup_delete(s: _Setup) -> None:
    with s.create() as store:
        samples = s.append(store, 6)
        rows = s.append_records(store, 6)
        ingested = s.ingest(store, [s.user_shard("ds-000.tar", 3)])
        s.delete(store, [samples[5]])
    victims = [samples[0], samples[3], rows[1], rows[4], ingested[1]]  # two shards, two record blocks, a user shard
    s.w.to_delete = {k: s.w.expected[k] for k in victims}


def _op_delete(w: World) -> Any:
    with SampleStore.open(w.url) as store:
        return store.delete(sorted(w.to_delete))


def _setup_compact(s: _Setup) -> None:
    with s.create() as store:
        samples = s.append(store, 9)  # shards of 3: one loses a sample, one loses all, one stays
        rows = s.append_records(store, 12)  # blocks of 4 rows, 2 blocks a shard
        s.delete(store, [samples[1], samples[3], samples[4], samples[5], rows[0], rows[5], rows[6], rows[7]])


def _op_compact(w: World) -> Any:
    with SampleStore.open(w.url) as store:
        return store.compact()


def _setup_compact_ingested(s: _Setup) -> None:
    with s.create() as store:
        samples = s.append(store, 3)
        ingested = s.ingest(store, [s.user_shard("ds-000.tar", 3)])
        s.delete(store, [samples[2], ingested[1]])


def _setup_compact_ingested_in_store(s: _Setup) -> None:
    """The user's shard lies in the store's own shards/ folder (put there by hand) and is ingested in place."""
    with s.create() as store:
        samples = s.append(store, 3)
        ingested = s.ingest(store, [s.user_shard("mine-000.tar", 3, folder=os.path.join(s.w.url, "shards"))])
        s.delete(store, [samples[1], ingested[0]])


def _setup_compact_handed_over(s: _Setup) -> None:
    with s.create() as store:
        samples = s.append(store, 3)
        ingested = s.ingest(store, [s.user_shard("ds-000.tar", 3)], hand_over=True)
        s.delete(store, [samples[0], ingested[1]])


def _setup_set_attribute(s: _Setup) -> None:
    with s.create() as store:
        s.append(store, 3)
        store.set_attribute("origin", {"v": 1})
    s.w.attribute = ("origin", {"v": 1}, {"v": 2, "note": "changed"})


def _op_set_attribute(w: World) -> Any:
    name, _old, new = w.attribute
    with SampleStore.open(w.url) as store:
        store.set_attribute(name, new)


def _setup_open_after_append_crash(s: _Setup) -> None:
    """A store whose writer was killed in an append just before its commit: its shards are written, the catalog
    does not name them. The operation is the writable open that cleans up after it."""
    with s.create() as store:
        s.append(store, 4)
    s.w.foreign = False
    s.w.pending = s.uids("s", 7)
    for u in s.w.pending:
        s.w.payloads[u] = payload(u).hex()
    crashed = _fork_and_kill(dataclasses.replace(s.w, new_uids=s.w.pending), _op_append, ("commit", 1, "before"))
    assert crashed.killed is not None, crashed
    s.w.foreign = True


def _setup_open_after_compact_crash(s: _Setup) -> None:
    """A store whose writer was killed in a compaction just after its first shard's switch committed (the old
    file, with a deleted sample's bytes, not yet removed). The operation is the writable open after it."""
    with s.create() as store:
        samples = s.append(store, 6)
        s.delete(store, [samples[0], samples[4]])
    s.w.foreign = False
    crashed = _fork_and_kill(s.w, _op_compact, ("commit", 1, "after"))
    assert crashed.killed is not None, crashed
    s.w.foreign = True


def _op_open(w: World) -> Any:
    SampleStore.open(w.url).close()


@dataclass
class Operation:
    name: str
    setup: Callable[[_Setup], None]
    run: Callable[[World], Any]
    min_points: int  # placed points a full campaign must hit (coverage)
    kinds: tuple[str, ...]  # step kinds it must take


OPERATIONS: dict[str, Operation] = {op.name: op for op in [
    Operation("create", _setup_create, _op_create, 6, ("mkdir", "replace", "commit")),
    Operation("append", _setup_append, _op_append, 12, ("write", "replace", "commit")),
    Operation("append_records", _setup_append_records, _op_append_records, 10, ("write", "replace", "commit")),
    Operation("ingest", _setup_ingest, _op_ingest, 3, ("commit",)),
    Operation("ingest_hand_over", lambda s: _setup_ingest(s, hand_over=True), _op_ingest, 3, ("commit",)),
    Operation("delete", _setup_delete, _op_delete, 3, ("commit",)),
    Operation("compact", _setup_compact, _op_compact, 12, ("write", "replace", "commit", "unlink")),
    Operation("compact_ingested", _setup_compact_ingested, _op_compact, 6, ("commit",)),
    Operation("compact_ingested_in_store", _setup_compact_ingested_in_store, _op_compact, 6, ("commit",)),
    Operation("compact_handed_over", _setup_compact_handed_over, _op_compact, 6, ("commit",)),
    Operation("set_attribute", _setup_set_attribute, _op_set_attribute, 2, ("commit",)),
    Operation("open_after_append_crash", _setup_open_after_append_crash, _op_open, 1, ()),
    Operation("open_after_compact_crash", _setup_open_after_compact_crash, _op_open, 1, ()),
]}


# ====================================================================== the child: counted steps, a placed kill
_real: dict[str, Any] = {}


def _save_originals() -> None:
    names = ["replace", "rename", "unlink", "remove", "rmdir", "mkdir", "fsync", "fdatasync", "open", "write",
             "truncate", "ftruncate", "link", "symlink", "sendfile", "copy_file_range"]
    for name in names:
        if hasattr(os, name):
            _real["os." + name] = getattr(os, name)
    _real["shutil.rmtree"] = shutil.rmtree
    _real["builtins.open"] = builtins.open
    _real["io.open"] = io.open


_save_originals()
_OS_WRITE = os.write
CHILD_TIMEOUT = 60.0  # seconds one child may run (an operation here takes milliseconds)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class _Killer:
    """Counts the child's steps; at the placed point, reports it and sends SIGKILL to the child itself."""

    def __init__(self, target: tuple[str, int, str] | None, roots: list[str], fd: int) -> None:
        self.target = target
        self.roots = [os.path.realpath(r) + os.sep for r in roots]
        self.fd = fd
        self.counts: Counter = Counter()
        self.trace: list[dict] = []
        self.busy = False

    # ------------------------------------------------------------ paths
    def watched(self, path: str | None) -> bool:
        return path is not None and any((path + os.sep).startswith(r) or path.startswith(r) for r in self.roots)

    def rel(self, path: str | None) -> str:
        if path is None:
            return "?"
        for r in self.roots:
            if path.startswith(r):
                return path[len(r):]
        return path

    @staticmethod
    def resolve(path: Any, dir_fd: int | None = None) -> str | None:
        try:
            if isinstance(path, int):
                return os.readlink(f"/proc/self/fd/{path}")
            path = os.fsdecode(os.fspath(path))
            if dir_fd is not None and not os.path.isabs(path):
                path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
            return os.path.realpath(os.path.abspath(path))
        except (OSError, TypeError, ValueError):
            return None

    # ------------------------------------------------------------ steps
    def step(self, kind: str, path: str | None) -> int | None:
        """Count a step on ``path`` (None: not a watched step); kill here if it is the target."""
        if self.busy or not self.watched(path):
            return None
        self.counts[kind] += 1
        n = self.counts[kind]
        where = _where()
        step = {"kind": kind, "n": n, "path": self.rel(path), "where": where}
        self.trace.append(step)
        send(self.fd, {"ev": "step", **step})  # as it happens: a random kill's parent knows the last step
        if self.target == (kind, n, "before"):
            self.die(kind, n, "before", path, where)
        return n

    def after(self, kind: str, n: int | None, path: str | None = None) -> None:
        if n is not None and self.target == (kind, n, "after"):
            self.die(kind, n, "after", path, _where())

    def call(self, kind: str, path: str | None, fn: Callable, *args, **kwargs):
        n = self.step(kind, path)
        result = fn(*args, **kwargs)
        self.after(kind, n, path)
        return result

    def die(self, kind: str, n: int, phase: str, path: str | None, where: str) -> None:
        self.busy = True
        send(self.fd, {"ev": "kill", "kind": kind, "n": n, "phase": phase, "path": self.rel(path), "where": where,
                       "steps": len(self.trace)})
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # never reached


def _where() -> str:
    """Where in the package the step was taken: the innermost package frame and the innermost store.py frame."""
    frame = sys._getframe(2)
    inner = store = None
    while frame is not None:
        name = frame.f_code.co_filename
        if "/lightning_modyn/" in name:
            here = f"{os.path.basename(name)}:{frame.f_lineno} {frame.f_code.co_name}"
            inner = inner or here
            if name.endswith("store.py") and store is None:
                store = here
                break
        frame = frame.f_back
    if inner is None:
        return "?"
    return inner if store in (None, inner) else f"{inner} <- {store}"


class _WatchedFile:
    """A file opened for writing below the case folder: its writes are counted steps."""

    def __init__(self, real, path: str, killer: _Killer) -> None:
        self._real, self._path, self._killer = real, path, killer

    def write(self, data):
        return self._killer.call("write", self._path, self._real.write, data)

    def writelines(self, lines):
        return self._killer.call("write", self._path, self._real.writelines, lines)

    def truncate(self, *args):
        return self._killer.call("truncate", self._path, self._real.truncate, *args)

    def __enter__(self):
        self._real.__enter__()
        return self

    def __exit__(self, *exc):
        return self._real.__exit__(*exc)

    def __iter__(self):
        return iter(self._real)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _install(killer: _Killer) -> None:
    """Wrap the os-level steps (in this child only) so that each is counted and the placed one kills."""
    k = killer

    def path_op(kind, name):
        real = _real[name]

        def wrapper(*args, **kwargs):
            first = args[0] if args else next((kwargs[a] for a in ("path", "src", "fd") if a in kwargs), None)
            path = k.resolve(first, kwargs.get("dir_fd", kwargs.get("src_dir_fd")))
            return k.call(kind, path, real, *args, **kwargs)
        return wrapper

    for kind, name in [("replace", "os.replace"), ("rename", "os.rename"), ("unlink", "os.unlink"),
                       ("unlink", "os.remove"), ("rmdir", "os.rmdir"), ("mkdir", "os.mkdir"),
                       ("fsync", "os.fsync"), ("fsync", "os.fdatasync"), ("truncate", "os.truncate"),
                       ("truncate", "os.ftruncate"), ("link", "os.link"), ("link", "os.symlink")]:
        if name in _real:
            setattr(os, name.split(".", 1)[1], path_op(kind, name))
    for name in ("os.sendfile", "os.copy_file_range"):
        if name in _real:
            real = _real[name]
            setattr(os, name.split(".", 1)[1],
                    lambda out, *a, _real_fn=real, **kw: k.call("write", k.resolve(out), _real_fn, out, *a, **kw))

    real_os_write = _real["os.write"]
    os.write = lambda fd, data: k.call("write", k.resolve(fd), real_os_write, fd, data)

    real_os_open = _real["os.open"]

    def os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & _WRITE_FLAGS:
            return k.call("open_w", k.resolve(path, dir_fd), real_os_open, path, flags, mode, dir_fd=dir_fd)
        return real_os_open(path, flags, mode, dir_fd=dir_fd)
    os.open = os_open

    real_open = _real["builtins.open"]

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, int) or not any(c in mode for c in "wax+"):
            return real_open(file, mode, *args, **kwargs)
        path = k.resolve(file)
        handle = k.call("open_w", path, real_open, file, mode, *args, **kwargs)
        return _WatchedFile(handle, path, k) if k.watched(path) and not k.busy else handle
    builtins.open = open_
    io.open = open_

    real_rmtree = _real["shutil.rmtree"]
    shutil.rmtree = lambda path, *a, **kw: k.call("rmtree", k.resolve(path), real_rmtree, path, *a, **kw)

    real_commit = SQLiteCatalog._commit

    def commit_(self):
        return k.call("commit", os.path.realpath(self.path), real_commit, self)
    SQLiteCatalog._commit = commit_


def _private_locks() -> None:
    """Give the child its own copies of the locks it would otherwise share with this process across the fork:
    tqdm's write lock is a process-shared semaphore (``multiprocessing.RLock``), and a child killed while holding
    it (a progress bar being made or closed, e.g. in ``compact``) would block this process at its next bar."""
    lock = threading.RLock()
    for name in ("tqdm.std", "tqdm.auto", "tqdm.autonotebook", "tqdm.asyncio"):
        module = sys.modules.get(name)
        cls = getattr(module, "tqdm", None) if module is not None else None
        if isinstance(cls, type):
            cls._lock = lock
    std = sys.modules.get("tqdm.std")
    if std is not None and hasattr(std, "TqdmDefaultWriteLock"):
        std.TqdmDefaultWriteLock.mp_lock = threading.RLock()


def send(fd: int, message: dict) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[_OS_WRITE(fd, data):]


def _child(world: World, run: Callable[[World], Any], target, fd: int) -> None:
    """Runs in the forked child: install the counted steps, run the operation, report. Never returns."""
    code = 3
    try:
        _private_locks()
        killer = _Killer(target, [world.case], fd)
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, *a, **kw: send(
            fd, {"ev": "warning", "category": category.__name__, "text": str(message)})
        send(fd, {"ev": "ready"})
        t0 = time.perf_counter()
        _install(killer)
        result = run(world)
        killer.busy = True
        send(fd, {"ev": "done", "result": _jsonable(result), "elapsed": time.perf_counter() - t0})
        code = 0
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        with contextlib.suppress(BaseException):
            send(fd, {"ev": "error", "error": f"{type(err).__name__}: {err}", "tb": traceback.format_exc()})
    finally:
        os._exit(code)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


@dataclass
class RunResult:
    target: tuple[str, int, str] | None
    killed: dict | None = None  # the kill message (the point, where it was)
    steps: list[dict] = field(default_factory=list)  # the steps taken, in order
    done: dict | None = None  # the done message (result, trace) when the operation completed
    error: str | None = None  # the operation raised (not a kill)
    warnings: list[str] = field(default_factory=list)
    status: int = 0
    random_delay: float | None = None


def _fork_and_kill(world: World, run: Callable[[World], Any], target: tuple[str, int, str] | None,
                   random_delay: float | None = None) -> RunResult:
    """Run ``run(world)`` in a forked child killed at ``target`` (or ``random_delay`` seconds after it starts)."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(world, run, target, w)
    os.close(w)
    out = RunResult(target, random_delay=random_delay)
    buf = b""
    deadline = time.monotonic() + CHILD_TIMEOUT

    def read() -> bytes:
        while not select.select([r], [], [], 1.0)[0]:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                raise TimeoutError(f"{world.op}: the child ran for {CHILD_TIMEOUT} s (target {target}); killed it")
        return os.read(r, 65536)

    try:
        if random_delay is not None:
            while b"\n" not in buf:
                chunk = read()
                if not chunk:
                    break
                buf += chunk
            time.sleep(random_delay)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while True:
            chunk = read()
            if not chunk:
                break
            buf += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    out.status = status
    for line in buf.decode().splitlines():
        msg = json.loads(line)
        if msg["ev"] == "step":
            out.steps.append({k: msg[k] for k in ("kind", "n", "path", "where")})
        elif msg["ev"] == "kill":
            out.killed = msg
        elif msg["ev"] == "done":
            out.done = msg
        elif msg["ev"] == "error":
            out.error = msg["error"] + "\n" + msg["tb"]
        elif msg["ev"] == "warning":
            out.warnings.append(f"{msg['category']}: {msg['text']}")
    if random_delay is not None and out.done is None and out.error is None:
        last = out.steps[-1] if out.steps else {"kind": "start", "n": 0, "path": "", "where": "before any step"}
        out.killed = {**last, "phase": "after (random)"}
    return out


# ====================================================================== the parent: invariants after a kill
@dataclass
class Finding:
    category: str
    subject: str  # what it is about (a key, a file): one finding per (category, subject) and kill
    message: str
    stage: str

    def key(self) -> tuple[str, str]:
        return self.category, self.subject


class _Checker:
    """Checks one killed run's store against its world; collects findings."""

    def __init__(self, world: World, run: RunResult) -> None:
        self.w = world
        self.run = run
        self.findings: dict[tuple[str, str], Finding] = {}
        self.stage = ""
        self.acked_checked = 0
        self.outcomes: dict[str, str] = {}  # stage -> "all" / "none" / ... for the killed operation
        self.by_bytes = {bytes.fromhex(h): u for u, h in world.payloads.items()}

    def add(self, category: str, subject: str, message: str) -> None:
        f = Finding(category, subject, _normalise(message), self.stage)
        self.findings.setdefault(f.key(), f)

    # ------------------------------------------------------------ reads
    def read_all(self, store: SampleStore, keys: list[int]) -> dict[int, bytes | Exception]:
        out: dict[int, bytes | Exception] = {}
        try:
            got = store.get(keys, meta=False) if keys else []
            for k, g in zip(keys, got):
                out[k] = g.get("bin", g.get("rows"))
            return out
        except Exception:  # noqa: BLE001 - attribute to single keys
            pass
        for k in keys:
            try:
                g = store.get([k], meta=False)[0]
                out[k] = g.get("bin", g.get("rows"))
            except Exception as err:  # noqa: BLE001
                out[k] = err
        return out

    def check_keys(self, store: SampleStore, final: bool = False) -> None:
        w = self.w
        live = store.all().keys.tolist()
        live_set = set(live)
        if len(store) != len(live):
            self.add("half_visible", "len", f"len(store) = {len(store)} but the catalog lists {len(live)} live keys")
        # every acknowledged key (and everything else listed) reads back, byte-exact
        check = sorted(live_set | set(w.expected))
        got = self.read_all(store, [k for k in check if k in live_set])
        delete_outcome = self.delete_outcome(live_set)
        for k, uid in w.expected.items():
            if k not in live_set:
                if k in w.to_delete and delete_outcome == "all":
                    continue
                if k in w.to_delete and delete_outcome != "none":
                    continue  # counted as a partial delete below
                self.add("lost", f"key {k}", f"acknowledged key {k} ({uid}) is not live any more")
                continue
            value = got[k]
            if isinstance(value, Exception):
                self.add("lost", f"key {k}", f"acknowledged key {k} ({uid}) does not read back: "
                                             f"{type(value).__name__}: {value}")
            elif value != bytes.fromhex(w.payloads[uid]):
                self.add("lost", f"key {k}", f"acknowledged key {k} ({uid}) reads back other bytes: {value[:40]!r}")
        if final:
            self.acked_checked += len(w.expected)
        for k, uid in w.deleted.items():
            if k in live_set:
                self.add("lost", f"key {k}", f"acknowledged delete of key {k} ({uid}) is undone: the key is live")
        # keys the killed operation added: all of them or none, each with its exact bytes
        new_keys = sorted(live_set - set(w.expected))
        seen: dict[str, int] = {}
        for k in new_keys:
            value = got[k]
            if isinstance(value, Exception):
                self.add("half_visible", f"key {k}", f"key {k} is listed but does not read back: "
                                                     f"{type(value).__name__}: {value}")
                continue
            uid = self.by_bytes.get(value)
            if uid is None or (uid not in w.new_uids and uid not in w.pending):
                self.add("half_visible", f"key {k}", f"key {k} is listed with unexpected bytes {value[:40]!r}")
            elif uid in seen:
                self.add("half_visible", f"key {k}", f"{uid} is live twice: keys {seen[uid]} and {k}")
            else:
                seen[uid] = k
        for group, name in ((w.new_uids, "operation"), (w.pending, "killed set-up writer")):
            if not group:
                continue
            there = [u for u in group if u in seen]
            outcome = "all" if len(there) == len(group) else "none" if not there else f"{len(there)}/{len(group)}"
            if outcome not in ("all", "none"):
                self.add("half_visible", f"{name} partial", f"the {name}'s samples are partly visible: "
                                                            f"{outcome} ({', '.join(there[:6])})")
            self.outcome(name, outcome)
        if w.to_delete:
            if delete_outcome not in ("all", "none"):
                self.add("half_visible", "delete partial",
                         f"the delete is partly done: {delete_outcome} of keys {sorted(w.to_delete)}")
            self.outcome("delete", delete_outcome)
        # every shard the catalog names exists with its recorded size
        for shard in store.catalog.shards():
            path = store.files.path(shard["path"])
            if not os.path.exists(path):
                self.add("half_visible", f"shard {shard['path']}", f"the catalog names shard {self.rel(path)} "
                                                                   "but the file is missing")
            elif os.path.getsize(path) != shard["size"]:
                self.add("half_visible", f"shard {shard['path']}", f"shard {self.rel(path)} has "
                                                                   f"{os.path.getsize(path)} bytes, the catalog "
                                                                   f"says {shard['size']}")
        if w.attribute is not None:
            name, old, new = w.attribute
            value = store.attributes.get(name)
            which = "new" if value == new else "old" if value == old else None
            if which is None:
                self.add("half_visible", "attribute", f"attribute {name!r} is {value!r}: neither old nor new")
            else:
                self.outcome("set_attribute", which)

    def delete_outcome(self, live: set[int]) -> str:
        if not self.w.to_delete:
            return "none"
        gone = [k for k in self.w.to_delete if k not in live]
        return "all" if len(gone) == len(self.w.to_delete) else "none" if not gone else \
            f"{len(gone)}/{len(self.w.to_delete)}"

    def outcome(self, what: str, value: str) -> None:
        before = self.outcomes.setdefault(what, value)
        if before != value and {before, value} <= {"all", "none", "old", "new"}:
            self.add("half_visible", f"{what} flip", f"the {what}'s outcome changed from {before!r} to {value!r} "
                                                     f"at '{self.stage}'")

    # ------------------------------------------------------------ files
    def rel(self, path: str) -> str:
        case = os.path.realpath(self.w.case) + os.sep
        path = os.path.realpath(path)
        return path[len(case):] if path.startswith(case) else path

    def check_user_files(self, committed_hand_over: bool | None) -> None:
        w = self.w
        for path, digest in w.user_files.items():
            if w.hand_over and path in w.sources and committed_hand_over:
                continue  # handed over: the store's now
            now = sha256(path)
            if now is None:
                self.add("user_files", f"file {self.rel(path)}", f"the user's file {self.rel(path)} was removed")
            elif now != digest:
                self.add("user_files", f"file {self.rel(path)}", f"the user's file {self.rel(path)} was changed")

    def check_debris(self, store: SampleStore | None) -> None:
        w = self.w
        known = set()
        if store is not None:
            known = {os.path.realpath(store.files.path(s["path"])) for s in store.catalog.shards()}
        root = w.url
        for folder, dirs, files in os.walk(root):
            rel_folder = os.path.relpath(folder, root)
            for name in files + dirs:
                if name.startswith(".tmp-"):
                    self.add("debris", f"file {self.rel(os.path.join(folder, name))}",
                             f"temp file {self.rel(os.path.join(folder, name))} left behind")
            for name in files:
                path = os.path.join(folder, name)
                if name.startswith(".tmp-"):
                    continue
                if rel_folder == ".":
                    if name not in KNOWN_TOP_LEVEL and os.path.getsize(path):
                        self.add("debris", f"file {self.rel(path)}", f"unknown non-empty file {self.rel(path)} "
                                                                     "in the store root after the writable open")
                elif rel_folder == "shards":
                    if os.path.realpath(path) not in known and path not in w.user_files:
                        self.add("debris", f"file {self.rel(path)}", f"{self.rel(path)} is in shards/ but the "
                                                                     "catalog does not name it")
                else:
                    self.add("debris", f"file {self.rel(path)}", f"{self.rel(path)}: journal/pending folder "
                                                                 f"{rel_folder}/ is not empty after the writable open")
        if os.path.isdir(w.user_dir):
            for name in sorted(set(os.listdir(w.user_dir)) - set(w.user_listing)):
                path = os.path.join(w.user_dir, name)
                if os.path.realpath(path) not in known:
                    self.add("debris", f"file {self.rel(path)}", f"{self.rel(path)} appeared in the user's folder")

    def check_deleted_bytes(self, store: SampleStore, told: list[str], stats: dict) -> None:
        """After compact(): no file the store owns holds a deleted sample's bytes; a user's shard still may, and
        then the user was told (a warning of the killed or the recovering compact, or compact()'s result)."""
        w = self.w
        live = set(store.all().keys.tolist())
        dead = dict(w.deleted)
        if w.to_delete and self.delete_outcome(live) == "all":
            dead.update(w.to_delete)
        markers = {uid: w.marker(uid) for uid in dead.values()}
        handed = set(w.handed_over)
        if w.hand_over and self.outcomes.get("operation") == "all":
            handed |= set(w.sources)
        owned = set()
        for folder, _dirs, files in os.walk(w.url):
            owned |= {os.path.join(folder, f) for f in files}
        owned -= set(w.foreign_paths) | set(w.user_shard_uids)
        owned |= {p for p in handed if os.path.exists(p)}
        for s in store.catalog.shards():
            if s["owned"]:
                owned.add(store.files.path(s["path"]))
        for path in sorted(owned):
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            for uid, marker in markers.items():
                if marker in data:
                    self.add("deleted_bytes", f"file {self.rel(path)} {uid}",
                             f"{self.rel(path)} (the store's) still holds deleted {uid}'s bytes after compact()")
        kept_files = kept_samples = 0
        for path, uids in w.user_shard_uids.items():
            gone = [u for u in uids if u in dead.values()]
            if not gone or sha256(path) is None:
                continue
            kept_files += 1
            kept_samples += len(gone)
            name = os.path.basename(path)
            if not any(name in text for text in told):
                self.add("deleted_bytes", f"untold {self.rel(path)}",
                         f"the user's shard {self.rel(path)} still holds deleted {', '.join(gone)} but no "
                         "compact() warning or result names it")
        if kept_files:
            counts = {k: stats.get(k) for k in COUNT_KEYS}
            if not (isinstance(counts[COUNT_KEYS[0]], int) and counts[COUNT_KEYS[0]] >= kept_files
                    and isinstance(counts[COUNT_KEYS[1]], int) and counts[COUNT_KEYS[1]] >= kept_samples):
                self.add("deleted_bytes", "uncounted",
                         f"{kept_files} user shard(s) still hold {kept_samples} deleted samples' bytes but compact() "
                         f"returned {counts} (expected {COUNT_KEYS[0]} >= {kept_files}, "
                         f"{COUNT_KEYS[1]} >= {kept_samples})")


def _normalise(text: str) -> str:
    text = re.sub(r"\.tmp-[0-9a-f]{32}-", ".tmp-<uuid>-", text)
    return re.sub(r"/tmp/[^ ]*?/case/", "<case>/", text)


def _mentions(value: Any) -> list[str]:
    """Texts in compact()'s result that may name a file."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in [str(k)] + _mentions(v)]
    if isinstance(value, (list, tuple, set)):
        return [t for v in value for t in _mentions(v)]
    return []


def check_after_kill(world: World, run: RunResult) -> tuple[list[Finding], int, dict]:
    """The invariants after ``run`` (killed or not), on the store as the kill left it:

    1. nothing acknowledged lost (every key live before reads back byte-exact; acknowledged deletes stay) and the
       killed operation is all or nothing (its new keys, its deletes, its attribute), the same at every stage;
    2. nothing half-visible (every key the catalog lists reads back; ``len`` agrees; every shard it names exists);
    3. no debris (no ``.tmp-*`` anywhere; every file in shards/ is a catalog shard or the foreign file; any other
       folder under the root is empty; nothing new in the user's folder);
    4. the user's files (foreign file, ingested shards not handed over) are there with identical bytes;
    5. after ``compact()`` no file the store owns holds a deleted sample's bytes, and a user's shard that does
       is named by a warning or by compact()'s result.

    Stages: a read-only reader before recovery, the writable open, then compact(). Returns the findings, how many
    acknowledged samples were checked, and compact()'s result.
    """
    c = _Checker(world, run)
    stats: dict = {}
    w = world
    told = list(run.warnings)
    if run.done is not None:
        told += _mentions(run.done.get("result"))
    marker = os.path.exists(os.path.join(w.url, "store.json"))
    # ---- create: a killed create either made a store or can be retried
    if w.op == "create":
        c.stage = "retry create"
        if not marker:
            try:
                SampleStore.create(w.url, shard_max_samples=3, block_bytes=128).close()
            except Exception as err:  # noqa: BLE001
                c.add("recovery_failed", "create", f"create cannot be retried after the kill: "
                                                   f"{type(err).__name__}: {err}")
                return list(c.findings.values()), 0, stats
        w = dataclasses.replace(w, foreign=True, user_files={})
        place_foreign(w)
        c.w = w
    # ---- a reader opens the store as the kill left it
    c.stage = "reader after the kill"
    try:
        with SampleStore.open(w.url, readonly=True) as reader:
            c.check_keys(reader)
    except Exception as err:  # noqa: BLE001
        c.add("half_visible", "reader", f"a read-only open after the kill fails: {type(err).__name__}: {err}")
    committed = c.outcomes.get("operation") == "all" if w.hand_over else None
    c.check_user_files(committed)
    # ---- the writable open collects the crashed writer's garbage
    c.stage = "writable open"
    try:
        store = SampleStore.open(w.url)
    except Exception as err:  # noqa: BLE001
        c.add("recovery_failed", "open", f"the writable open after the kill fails: {type(err).__name__}: {err}")
        return list(c.findings.values()), c.acked_checked, stats
    try:
        c.check_keys(store)
        committed = c.outcomes.get("operation") == "all" if w.hand_over else None
        c.check_user_files(committed)
        c.check_debris(store)
        c.stage = "compact"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                stats = store.compact()
            except Exception as err:  # noqa: BLE001
                c.add("recovery_failed", "compact", f"compact() after the writable open fails: "
                                                    f"{type(err).__name__}: {err}")
                return list(c.findings.values()), c.acked_checked, stats
        told += [str(x.message) for x in caught] + _mentions(stats)
        c.stage = "after compact"
        c.check_keys(store, final=True)
        c.check_user_files(committed)
        c.check_debris(store)
        c.check_deleted_bytes(store, told, stats)
    finally:
        store.close()
    return list(c.findings.values()), c.acked_checked, stats


# ====================================================================== the campaign
def point_name(point: tuple[str, int, str] | dict) -> str:
    if isinstance(point, dict):
        return f"{point['kind']}#{point['n']} {point['phase']}"
    return f"{point[0]}#{point[1]} {point[2]}"


@dataclass
class Kill:
    point: str  # e.g. "replace#2 before" or "random#0 12.3 ms"
    where: str  # the step's place in the package and its path
    findings: list[Finding]
    acked: int
    completed: bool  # the operation ran to its end (the step was not reached, or a random kill came late)


@dataclass
class Campaign:
    op: str
    dry_trace: list[dict] = field(default_factory=list)
    dry_seconds: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    points_hit: int = 0
    kinds_hit: Counter = field(default_factory=Counter)
    random_kills: int = 0
    not_reached: list[str] = field(default_factory=list)
    dry_findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, category: str) -> int:
        return sum(1 for k in self.kills for f in k.findings if f.category == category)

    @property
    def acked(self) -> int:
        return sum(k.acked for k in self.kills)

    @property
    def findings(self) -> list[tuple[Kill, Finding]]:
        return [(k, f) for k in self.kills for f in k.findings]


def build_template(op: str, workdir: str) -> tuple[World, str]:
    """Set the operation's store up at ``<workdir>/case`` and move it to ``<workdir>/template`` (each run copies
    it back to ``case``, so that the absolute paths of ingested shards stay right)."""
    case = os.path.join(workdir, "case")
    template = os.path.join(workdir, "template")
    for path in (case, template):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(case)
    world = World(op, case)
    setup = _Setup(world)
    OPERATIONS[op].setup(setup)
    setup.finish()
    os.rename(case, template)
    return world, template


def _fresh_case(world: World, template: str) -> None:
    shutil.rmtree(world.case, ignore_errors=True)
    shutil.copytree(template, world.case, symlinks=True)


def select_points(trace: list[dict], thin_writes: bool) -> list[tuple[str, int, str]]:
    """Every step of the dry run, killed before it; every commit and the last step killed after. With
    ``thin_writes``, of the writes to one file only the first, the middle and the last (the states between them
    differ only in how much of the file is there)."""
    points = []
    writes: dict[str, list[int]] = defaultdict(list)
    for s in trace:
        if s["kind"] == "write":
            writes[s["path"]].append(s["n"])
    keep = set()
    for ns in writes.values():
        keep |= {ns[0], ns[len(ns) // 2], ns[-1]} if thin_writes else set(ns)
    for s in trace:
        if s["kind"] == "write" and s["n"] not in keep:
            continue
        points.append((s["kind"], s["n"], "before"))
        if s["kind"] == "commit":
            points.append(("commit", s["n"], "after"))
    if trace and trace[-1]["kind"] != "commit":
        points.append((trace[-1]["kind"], trace[-1]["n"], "after"))
    return points


def run_campaign(op: str, workdir: str, random_kills: int = 3, seed: int = 0, thin_writes: bool = True,
                 log: Callable[[str], None] | None = None) -> Campaign:
    """Kill ``op`` at every placed point (and ``random_kills`` random times) and check the invariants each time."""
    t0 = time.perf_counter()
    camp = Campaign(op)
    world, template = build_template(op, workdir)
    operation = OPERATIONS[op]
    # the dry run: the operation without a kill records its steps (and must itself pass every check)
    _fresh_case(world, template)
    dry = _fork_and_kill(world, operation.run, None)
    if dry.done is None:
        raise RuntimeError(f"{op}: the operation fails without a kill: {dry.error or dry.status}")
    camp.dry_trace, camp.dry_seconds = dry.steps, dry.done["elapsed"]
    camp.dry_findings = check_after_kill(world, dry)[0]
    rng = np.random.default_rng(seed)
    runs: list[tuple[tuple[str, int, str] | None, float | None]] = [
        (p, None) for p in select_points(camp.dry_trace, thin_writes)]
    runs += [(None, float(rng.uniform(0, 1.2 * max(camp.dry_seconds, 1e-3)))) for _ in range(random_kills)]
    for target, delay in runs:
        _fresh_case(world, template)
        res = _fork_and_kill(world, operation.run, target, random_delay=delay)
        if res.error is not None:
            raise RuntimeError(f"{op}: the operation raised instead of being killed at {target}: {res.error}")
        completed = res.done is not None
        if target is not None and completed:
            camp.not_reached.append(point_name(target))
        if target is not None and not completed:
            camp.points_hit += 1
            camp.kinds_hit[target[0]] += 1
        if delay is not None:
            camp.random_kills += 1
        killed = res.killed or {"kind": "none", "n": 0, "phase": "completed", "path": "", "where": ""}
        findings, acked, _stats = check_after_kill(world, res)
        if delay is None:
            name = point_name(killed)
        else:
            name = f"random {delay * 1000:.1f} ms: " + ("completed first" if completed else point_name(killed))
        kill = Kill(name, f"{killed.get('where', '')} [{killed.get('path', '')}]", findings, acked, completed)
        camp.kills.append(kill)
        if log is not None and findings:
            log(f"  {op} {kill.point} at {kill.where}: " + "; ".join(f"{f.category}: {f.message}" for f in findings))
    shutil.rmtree(world.case, ignore_errors=True)
    shutil.rmtree(template, ignore_errors=True)
    camp.seconds = time.perf_counter() - t0
    return camp


# ====================================================================== reporting
def format_findings(camp: Campaign, limit: int = 40) -> str:
    """Findings grouped by what was found, each with the points (and places in the code) where it was found."""
    groups: dict[tuple[str, str], list[Kill]] = defaultdict(list)
    for kill, f in camp.findings:
        groups[(f.category, f"[{f.stage}] {f.message}")].append(kill)
    lines = [f"{camp.op}: {len(camp.findings)} findings in {sum(1 for k in camp.kills if k.findings)} of "
             f"{len(camp.kills)} kills"]
    for f in camp.dry_findings:
        lines.append(f"  WITHOUT A KILL: {f.category}: [{f.stage}] {f.message}")
    for (category, message), kills in sorted(groups.items())[:limit]:
        where = "; ".join(f"{k.point} @ {k.where}" for k in kills[:4])
        more = f" (+{len(kills) - 4} more points)" if len(kills) > 4 else ""
        lines.append(f"  {CATEGORY_TITLES[category]}: {message}\n      at {len(kills)} kill(s): {where}{more}")
    if len(groups) > limit:
        lines.append(f"  ... and {len(groups) - limit} more kinds of finding")
    return "\n".join(lines)


def markdown_table(camps: list[Campaign]) -> str:
    head = ["operation", "placed points", "kills", "acknowledged samples checked", "lost", "half-visible", "debris",
            "user files changed", "deleted bytes forgotten", "recovery failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in camps:
        cells = [f"`{c.op}`", str(c.points_hit), str(len(c.kills)), str(c.acked)]
        cells += [str(c.count(cat)) for cat in CATEGORIES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="run the full campaign and print a markdown table")
    parser.add_argument("--ops", default=",".join(OPERATIONS), help="operations, comma-separated")
    parser.add_argument("--random", type=int, default=20, help="random kills per operation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thin-writes", action="store_true", help="kill at 3 writes per file, not every write")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    if not args.report:
        parser.print_help()
        return 2
    camps = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="store-faults-") as tmp:
        for i, op in enumerate(args.ops.split(",")):
            camp = run_campaign(op, os.path.join(args.workdir or tmp, op), random_kills=args.random,
                                seed=args.seed + i, thin_writes=args.thin_writes)
            camps.append(camp)
            print(f"{op}: {camp.points_hit} points, {len(camp.kills)} kills, {camp.seconds:.1f} s",
                  file=sys.stderr, flush=True)
    print(markdown_table(camps))
    print()
    print("Counts are findings: one per acknowledged sample lost, per key or operation half-visible, per file of "
          "debris, per user file changed, per (file, deleted sample) whose bytes stay forgotten.")
    print(f"\nRun in {time.perf_counter() - t0:.0f} s. Kinds of point hit per operation:\n")
    for c in camps:
        print(f"- `{c.op}`: " + ", ".join(f"{k} {n}" for k, n in sorted(c.kinds_hit.items()))
              + f"; {c.random_kills} random" + (f"; not reached: {c.not_reached}" if c.not_reached else ""))
    bad = [c for c in camps if c.findings or c.dry_findings]
    if bad:
        print("\n## Findings\n")
        for c in bad:
            print("```")
            print(format_findings(c, limit=100))
            print("```")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
