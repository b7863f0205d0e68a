"""The stream a loop sees: a replay of a store's samples (experiment mode) or a watch for new ones (live mode)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from lightning_modyn._checks import check_int, check_number
from lightning_modyn.store import SampleStore


@dataclass
class Chunk:
    """A slice of the stream: ``start`` is the global position of its first sample."""

    start: int
    keys: np.ndarray
    timestamps: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


class ReplayStream:
    """Replays the samples with ``start <= timestamp < end`` in chunks of ``chunk_size`` (experiment mode).

    The order is fixed by the store's catalog, so a resumed run sees the same stream from a saved position.
    """

    def __init__(self, store: SampleStore, start: int | None = None, end: int | None = None,
                 chunk_size: int = 1000) -> None:
        check_int("chunk_size", chunk_size, 1, hint="(samples per chunk)")
        if start is not None and end is not None and end <= start:
            raise ValueError(f"the stream's end ({end}) must be after its start ({start})")
        window = store.time_range(start, end)
        order = np.lexsort((window.keys, window.timestamps))
        self.keys = window.keys[order]
        self.timestamps = window.timestamps[order]
        self.labels = window.labels[order]
        self.chunk_size = chunk_size
        if not len(self.keys):
            raise ValueError(f"the stream is empty: {store.url} has no live samples with "
                             f"{start if start is not None else '-inf'} <= timestamp < {end if end is not None else 'inf'}")

    def __len__(self) -> int:
        return len(self.keys)

    def chunks(self, from_position: int = 0) -> Iterator[Chunk]:
        for a in range(from_position, len(self.keys), self.chunk_size):
            b = min(len(self.keys), a + self.chunk_size)
            yield Chunk(a, self.keys[a:b], self.timestamps[a:b], self.labels[a:b])


class WatchStream:
    """Watches a store for newly appended samples and yields them in chunks as they arrive (live mode).

    The stream is the store's live samples with ``timestamp >= start``: first those already there (in key order),
    then whatever writers commit (each commit's keys in key order), seen by polling the catalog every
    ``poll_seconds``. Timestamps must not
    decrease along the stream — a retraining decision cannot be taken back — so a sample older than one already
    seen is refused with an error naming both. The watch ends after ``idle_timeout`` seconds without new data
    (None: never), or once ``max_samples`` have arrived.

    ``keys``, ``timestamps`` and ``labels`` hold everything seen so far (they grow), so the loop and the evaluation
    use a watched stream exactly as a replayed one.
    """

    def __init__(self, store: SampleStore, start: int | None = None, chunk_size: int = 1000,
                 poll_seconds: float = 1.0, idle_timeout: float | None = 60.0, max_samples: int | None = None) -> None:
        check_int("chunk_size", chunk_size, 1, hint="(samples per chunk)")
        check_number("poll_seconds", poll_seconds, 0, low_open=True)
        if idle_timeout is not None:
            check_number("idle_timeout", idle_timeout, 0, hint="seconds, or None to watch forever")
        self.store = store
        self.start = start
        self.chunk_size = chunk_size
        self.poll_seconds = poll_seconds
        self.idle_timeout = idle_timeout
        self.max_samples = max_samples
        self.keys = np.zeros(0, np.int64)
        self.timestamps = np.zeros(0, np.int64)
        self.labels = np.zeros(0, np.int64)
        self._cursor: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def _poll(self) -> int:
        """Take in what was appended since the last poll; returns how many samples arrived."""
        self.store.refresh()
        new, self._cursor = self.store.new_since(self._cursor)  # exact with several writers
        if not len(new):
            return 0
        keep = new.timestamps >= self.start if self.start is not None else np.ones(len(new), bool)
        keys, ts, labels = new.keys[keep], new.timestamps[keep], new.labels[keep]
        if self.max_samples is not None:
            room = self.max_samples - len(self.keys)
            keys, ts, labels = keys[:room], ts[:room], labels[:room]
        if len(ts):
            seq_keys, seq_ts = np.concatenate([self.keys[-1:], keys]), np.concatenate([self.timestamps[-1:], ts])
            drops = np.flatnonzero(np.diff(seq_ts) < 0)
            if len(drops):
                i = int(drops[0])
                raise ValueError(f"timestamps out of order in the watched stream: key {int(seq_keys[i + 1])} has "
                                 f"timestamp {int(seq_ts[i + 1])}, earlier than key {int(seq_keys[i])}'s "
                                 f"{int(seq_ts[i])}; live mode needs samples appended in time order")
        self.keys = np.concatenate([self.keys, keys])
        self.timestamps = np.concatenate([self.timestamps, ts])
        self.labels = np.concatenate([self.labels, labels])
        return len(keys)

    def _full(self) -> bool:
        return self.max_samples is not None and len(self.keys) >= self.max_samples

    def chunks(self, from_position: int = 0) -> Iterator[Chunk]:
        self._poll()
        position, idle_since = from_position, time.monotonic()
        while True:
            while len(self.keys) - position >= self.chunk_size or (position < len(self.keys) and self._full()):
                b = min(len(self.keys), position + self.chunk_size)
                yield Chunk(position, self.keys[position:b], self.timestamps[position:b], self.labels[position:b])
                position = b
            if self._full():
                return
            if self._poll():
                idle_since = time.monotonic()
                continue
            if self.idle_timeout is not None and time.monotonic() - idle_since >= self.idle_timeout:
                if position < len(self.keys):  # what is left is a last, smaller chunk
                    yield Chunk(position, self.keys[position:], self.timestamps[position:], self.labels[position:])
                return
            time.sleep(self.poll_seconds)
            if position < len(self.keys) and time.monotonic() - idle_since >= self.poll_seconds:
                # new data stopped short of a chunk: hand it over rather than wait for the chunk to fill
                b = len(self.keys)
                yield Chunk(position, self.keys[position:b], self.timestamps[position:b], self.labels[position:b])
                position = b
