"""Which mapped files changed since the last read, for the price of one system call (Linux inotify).

A shard cut while a reader has it mapped reads as zeros (the rest of the last page) or kills the reader with SIGBUS
(pages past the new end). To turn that into ``TruncatedShardError``, every read must know that none of the files it
touches shrank. A ``stat`` per shard per read is exact but costs ~2.5 µs each on a VM, a quarter of a 256-sample read
over 20 shards. Instead each mapped file gets an inotify watch, made on the open file itself (so on the very inode
that is mapped) before its size is taken; a read then asks the kernel once whether any watched file was modified
and ``stat``s only those. Where inotify is not available (another OS, the per-user limit of watches or instances
reached), :meth:`CutWatch.watch` returns False and the caller ``stat``s that file on every read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys
import threading

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, name length (the name follows)

_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        _libc_handle = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc_handle


class CutWatch:
    """inotify watches on mapped files, keyed by absolute path; one per process, shared by every store in it.

    Each event bumps the file's *generation*; a queue overflow (events lost) bumps an epoch that counts as a change
    of every file. A reader remembers the (epoch, generation) at which it last checked a file by ``stat``, and checks
    again only when :meth:`stamp` differs — so readers sharing the watch never consume each other's news.
    """

    def __init__(self) -> None:
        self.fd = -1
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._paths: dict[int, str] = {}  # watch descriptor -> path
        self._wds: dict[str, int] = {}
        self._gen: dict[str, int] = {}
        self._epoch = 0
        self._events = 0  # every event and every loss of events: unchanged means nothing watched changed
        if sys.platform.startswith("linux"):
            try:
                self.fd = _libc().inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            except (OSError, AttributeError):
                self.fd = -1
        if self.fd >= 0:
            self._ready = select.poll()  # asking "anything to read?" is cheaper than a read that finds nothing
            self._ready.register(self.fd, select.POLLIN)

    def watch(self, path: str, fd: int) -> bool:
        """Watch the file open as ``fd`` (its inode, whatever ``path`` names later) under ``path``; False when that
        is not possible here, so that the caller checks it by ``stat``."""
        if self.fd < 0:
            return False
        with self._lock:
            wd = _libc().inotify_add_watch(self.fd, f"/proc/self/fd/{fd}".encode(), _IN_MODIFY | _IN_ATTRIB)
            if wd < 0:
                return False
            old = self._paths.get(wd)
            if old is not None and old != path:  # the same inode under another path: it is that path's now
                self._wds.pop(old, None)
            if self._wds.get(path, wd) != wd:  # the path now names another inode: its old watch tells us nothing
                self._paths.pop(self._wds[path], None)
            self._paths[wd] = path
            self._wds[path] = wd
            self._gen[path] = self._gen.get(path, 0) + 1  # a new watch: whatever came before is unknown
            return True

    def stamp(self, path: str) -> tuple[int, int] | None:
        """The file's change stamp after reading the kernel's news, or None when the file is not watched."""
        return self.stamps((path,))[0]

    def events(self) -> int:
        """How many changes were seen so far, after reading the kernel's news: when it has not moved since a moment,
        no watched file changed since then (the cheap question a read asks first)."""
        with self._lock:
            self._drain()
            return self._events

    def stamps(self, paths) -> list[tuple[int, int] | None]:
        """:meth:`stamp` of many files, reading the kernel's news once."""
        with self._lock:
            self._drain()
            return [(self._epoch, self._gen[p]) if p in self._wds else None for p in paths]

    def _drain(self) -> None:
        if self.fd < 0 or not self._ready.poll(0):
            return
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size + length
                self._events += 1
                if mask & _IN_Q_OVERFLOW:
                    self._epoch += 1
                    continue
                path = self._paths.get(wd)
                if path is None:
                    continue
                if mask & _IN_IGNORED:  # the file is gone (or the watch removed): nothing more will come
                    del self._paths[wd]
                    if self._wds.get(path) == wd:
                        del self._wds[path]
                else:
                    self._gen[path] += 1


_shared: CutWatch | None = None
_shared_lock = threading.Lock()


def shared() -> CutWatch:
    """This process's watch. A forked child makes its own: reading the parent's would steal the parent's events."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.pid != os.getpid():
            if _shared is not None and _shared.fd >= 0:
                os.close(_shared.fd)  # the child's copy of the parent's descriptor; the parent keeps its own
            _shared = CutWatch()
        return _shared
