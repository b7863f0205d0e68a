"""The stream a loop replays: a store's live samples between two timestamps, in (timestamp, key) order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

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
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
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
