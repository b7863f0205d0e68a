"""Many read-only files mapped back to back into one reserved address range, seen as one numpy array.

A batch of random keys touches many shards. Gathering it from one map per shard means one gather per shard and a
scatter into request order: every byte copied twice. With the shards side by side in one address range, the batch
is a single fancy-index copy straight into request order, as fast as a batch from one shard.

The range is reserved up front (address space only: ``PROT_NONE``, no memory, no swap) so that files added later
(new shards after an append) are mapped after the others without moving them, and pages already touched stay
mapped. A store reserves four times what it maps (at least 16 GiB) and starts a new span when that is full.
Linux and macOS only (``mmap`` with ``MAP_FIXED`` through ``ctypes``); elsewhere :func:`supported` is False and
readers keep one map per shard. Set ``LIGHTNING_MODYN_SPANMAP=0`` to turn it off.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import resource
import sys
import threading
import weakref
from typing import Any, Callable

import numpy as np

from lightning_modyn.store.errors import ShardMissingError

RESERVE_BYTES = 16 << 30
"""Default address space reserved per span (it costs no memory)."""

_PAGE = mmap.PAGESIZE
_MAP_FIXED = 0x10  # the same value on Linux and macOS; Python's mmap module does not export it
_FAILED = ctypes.c_void_p(-1).value


def page_rounded(size: int) -> int:
    """Bytes a file of ``size`` bytes takes in a span: whole pages, since each file is mapped from a page boundary."""
    return -(-int(size) // _PAGE) * _PAGE


class SpanFullError(Exception):
    """The span's reserved address range has no room for another file."""


def supported() -> bool:
    """Whether spanning is possible and wanted here: 64-bit Linux or macOS, no limit on the process's address space
    (a reservation counts against ``ulimit -v`` and would starve other allocations), and not turned off with
    ``LIGHTNING_MODYN_SPANMAP=0``."""
    if os.environ.get("LIGHTNING_MODYN_SPANMAP", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if sys.maxsize <= 2**32 or not (sys.platform.startswith("linux") or sys.platform == "darwin"):
        return False
    if resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        return False
    return _libc() is not None


_LIBC: list = []


def _libc():
    if not _LIBC:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_int64]
            libc.munmap.restype = ctypes.c_int
            libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        except (OSError, AttributeError):
            libc = None
        _LIBC.append(libc)
    return _LIBC[0]


def _release(base: int, length: int) -> None:
    _libc().munmap(base, length)


class SpanMap:
    """Files mapped read-only, one after the other (each from a page boundary), inside one reserved range.

    :meth:`add` maps a file and returns where it starts; :meth:`array` is a read-only uint8 array over everything
    mapped so far. Arrays handed out keep the mapping alive: it is released when the span and all of them are gone.
    Files are expected not to change while mapped (store shards never do); reading past a file's end is the
    caller's to prevent (the bytes there are zeros up to the page's end, then unmapped).
    """

    def __init__(self, reserve: int = RESERVE_BYTES) -> None:
        if not supported():
            raise OSError("spanning files in one address range needs 64-bit Linux or macOS")
        libc = _libc()
        self.reserve = page_rounded(reserve)
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        base = libc.mmap(None, self.reserve, 0, flags, -1, 0)  # PROT_NONE: address space only, never committed
        if base in (None, _FAILED):
            raise OSError(ctypes.get_errno(), f"could not reserve {self.reserve} bytes of address space")
        self.base = base
        self.end = 0  # where the next file goes
        self.broken = False  # a file failed to map: add no more
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _release, base, self.reserve)
        self._finalizer.atexit = False  # the process's exit releases it anyway

    def add(self, path: str, opened: Callable[[int], Any] | None = None) -> tuple[int, int]:
        """Map the file at ``path`` after the others; its (offset in :meth:`array`, size). ``opened(fd)`` is called
        with the open file before its size is taken (to watch it for changes from that moment)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ShardMissingError(f"shard file {path!r} is missing") from None
        try:
            if opened is not None:
                opened(fd)
            size = os.fstat(fd).st_size
            with self._lock:
                start = self.end
                slot = page_rounded(size)
                if start + slot > self.reserve:
                    raise SpanFullError(f"no room for {path!r} ({size} bytes) in a span of {self.reserve} bytes")
                if self.broken:
                    raise OSError(f"the span could not map a file before; not mapping {path!r}")
                if size:
                    addr = self.base + start
                    got = _libc().mmap(addr, size, mmap.PROT_READ, mmap.MAP_SHARED | _MAP_FIXED, fd, 0)
                    if got != addr:
                        errno = ctypes.get_errno()
                        self._plug(addr, slot)
                        raise OSError(errno, f"could not map {path!r} into the span")
                self.end = start + slot
            return start, size
        finally:
            os.close(fd)

    def _plug(self, addr: int, length: int) -> None:
        """After a failed ``MAP_FIXED``, the kernel may have unmapped that part of the reservation: reserve it again,
        or, failing that, never unmap the reservation (unmapping could hit a mapping made in the hole since)."""
        self.broken = True
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED
        if _libc().mmap(addr, length, 0, flags, -1, 0) != addr:
            self._finalizer.detach()

    def array(self) -> np.ndarray:
        """Read-only uint8 array over every file mapped so far (offsets as :meth:`add` returned them)."""
        return np.asarray(_Window(self, self.end))


def gather(span: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """``(len(starts), size)`` uint8: the ``size`` bytes at each of ``starts`` in the uint8 array ``span``, in one
    copy. The caller checks that every range lies inside ``span``'s files.

    The span is seen as overlapping items of ``size`` bytes, one starting at every byte, so each row is copied as
    one item (measured 2x faster than fancy-indexing a sliding window of 160-byte rows, the same for 3 KiB).
    """
    items = np.ndarray((max(len(span) - size + 1, 0),), np.dtype((np.void, size)), buffer=span, strides=(1,))
    return items[starts].view(np.uint8).reshape(len(starts), size)


class _Window:
    """Hands numpy a range of the span (``__array_interface__``); the resulting array keeps this, and so the span,
    alive as its ``base``."""

    def __init__(self, span: SpanMap, length: int) -> None:
        self.span = span
        self.__array_interface__ = {"data": (span.base, True), "shape": (length,), "typestr": "|u1", "version": 3}
