"""Work computed ahead on one background thread per process, and taken later by key.

The sampler uses it for the next epoch's order: O(n) numpy work (a shuffle and two gathers, which numpy runs without
the GIL) that would otherwise stall the first batch of every epoch. Keys name the result completely (the training
set's fingerprint, every setting, the epoch), so a result is taken only by a caller that would have computed the
same thing. Each result waits for one owner: an owner that starts something else drops what it started before,
an owner that is garbage collected drops it too, and one that starts what another owner left waiting takes it over
(a sampler rebuilt every epoch by ``reload_dataloaders_every_n_epochs`` takes what its predecessor started). So at
most one result waits per live sampler.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Hashable

_OWNERS = itertools.count()


def new_owner(obj: object) -> int:
    """A token for ``obj`` to start work under; what it left waiting is dropped when ``obj`` is collected."""
    token = next(_OWNERS)
    weakref.finalize(obj, AHEAD.collected, token).atexit = False  # nothing to drop at interpreter exit
    return token


class _Ahead:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._waiting: dict[Hashable, tuple[Future, int]] = {}
        self._owned: dict[int, Hashable] = {}
        self._gone: list[int] = []

    def collected(self, owner: int) -> None:
        """``owner`` was garbage collected: drop what it left waiting at the next call. A finalizer runs wherever
        the collector does, also inside this class's locked sections, so it must not take the lock itself."""
        self._gone.append(owner)  # atomic under the GIL

    def _here(self) -> ThreadPoolExecutor:
        # A forked child inherits the parent's executor and futures but not its thread: work queued there, or a
        # future the parent's thread was computing, would never finish. Each process starts its own.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightning-modyn-ahead")
            self._waiting, self._owned, self._gone = {}, {}, []
        while self._gone:
            key = self._owned.get(self._gone.pop())
            if key is not None:
                self._drop(key)
        assert self._executor is not None
        return self._executor

    def _drop(self, key: Hashable) -> None:
        entry = self._waiting.pop(key, None)
        if entry is not None:
            entry[0].cancel()
            if self._owned.get(entry[1]) == key:
                del self._owned[entry[1]]

    def start(self, key: Hashable, fn: Callable[..., Any], *args: Any, owner: int) -> None:
        """Begin ``fn(*args)`` on the background thread for ``owner``, unless the result for ``key`` is already on
        its way (then ``owner`` takes it over). What ``owner`` started before under another key is dropped."""
        with self._lock:
            executor = self._here()
            previous = self._owned.get(owner)
            if previous is not None and previous != key:
                self._drop(previous)
            entry = self._waiting.get(key)
            if entry is None:
                self._waiting[key] = (executor.submit(fn, *args), owner)
            elif entry[1] != owner:
                self._owned.pop(entry[1], None)
                self._waiting[key] = (entry[0], owner)
            self._owned[owner] = key

    def take(self, key: Hashable) -> Future | None:
        """The computation started for ``key`` (then forgotten here), or None."""
        with self._lock:
            self._here()
            entry = self._waiting.pop(key, None)
            if entry is None:
                return None
            if self._owned.get(entry[1]) == key:
                del self._owned[entry[1]]
            return entry[0]

    def forget(self, owner: int) -> None:
        """Drop what ``owner`` left waiting."""
        with self._lock:
            self._here()
            key = self._owned.get(owner)
            if key is not None:
                self._drop(key)

    def waiting(self) -> list[Hashable]:
        with self._lock:
            self._here()
            return list(self._waiting)


AHEAD = _Ahead()
