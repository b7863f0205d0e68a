"""Work computed ahead on one background thread per process, and taken later by key.

The sampler uses it for the next epoch's order: O(n) numpy work (a shuffle and two gathers, which numpy runs without
the GIL) that would otherwise stall the first batch of every epoch. Keys name the result completely (the training
set's fingerprint, every setting, the epoch), so a result is taken only by a caller that would have computed the
same thing: a new sampler over the same set (``reload_dataloaders_every_n_epochs``) finds what the previous one
started. At most two results wait at a time; older ones are dropped.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Hashable

MAX_WAITING = 2


class _Ahead:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._waiting: OrderedDict[Hashable, Future] = OrderedDict()

    def _here(self) -> ThreadPoolExecutor:
        # A forked child inherits the parent's executor and futures but not its thread: work queued there, or a
        # future the parent's thread was computing, would never finish. Each process starts its own.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightning-modyn-ahead")
            self._waiting = OrderedDict()
        assert self._executor is not None
        return self._executor

    def start(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Begin ``fn(*args)`` on the background thread, unless the result for ``key`` is already on its way."""
        with self._lock:
            executor = self._here()
            if key in self._waiting:
                return
            self._waiting[key] = executor.submit(fn, *args)
            while len(self._waiting) > MAX_WAITING:
                self._waiting.popitem(last=False)[1].cancel()

    def take(self, key: Hashable) -> Future | None:
        """The computation started for ``key`` (then forgotten here), or None."""
        with self._lock:
            self._here()
            return self._waiting.pop(key, None)

    def waiting(self) -> list[Hashable]:
        with self._lock:
            self._here()
            return list(self._waiting)


AHEAD = _Ahead()
