"""Evaluation datasets beside the training stream: samples no model trained on, sliced by the same windows.

A continual run that is scored only on its own stream mixes two questions: how well the active model serves
the data that arrives next (the stream, evaluated before it is trained on: prequential), and how well each model
generalises. An :class:`EvaluationDataset` answers the second on samples the loop never replays: another store
(e.g. written beside the stream by a bundled generator, ``heldout_samples_per_period``), or a time range of the
training store that the loop's ``start``/``end`` leave out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightning_modyn.store import SampleStore


@dataclass
class EvaluationDataset:
    """Samples to evaluate every model on, besides the training stream.

    Args:
        name: How results, CSV rows and plots name it (``heldout``).
        store: URL of the store that holds it; None: the training store (then give a time range the loop does
            not replay, or the samples are not held out).
        start, end: Only samples with ``start <= timestamp < end``.
        storage_options: fsspec options of ``store`` (credentials, endpoint).
    """

    name: str
    store: str | None = None
    start: int | None = None
    end: int | None = None
    storage_options: dict | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name == "stream":
            raise ValueError(f"an evaluation dataset needs a name other than 'stream' (the training stream's), got "
                             f"{self.name!r}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"evaluation dataset {self.name!r}: end ({self.end}) must be after start ({self.start})")

    def open(self, training_store: SampleStore) -> tuple[SampleStore, bool]:
        """The store to read (``True``: opened here, close it after use)."""
        if self.store is None:
            return training_store, False
        return SampleStore.open(self.store, readonly=True, storage_options=self.storage_options), True

    def samples(self, store: SampleStore) -> tuple[np.ndarray, np.ndarray]:
        """Keys and timestamps of its live samples, in ``(timestamp, key)`` order."""
        found = store.time_range(self.start, self.end)
        keys, ts = np.asarray(found.keys, np.int64), np.asarray(found.timestamps, np.int64)
        order = np.lexsort((keys, ts))
        if not len(keys):
            raise ValueError(f"evaluation dataset {self.name!r}: no samples in {store.url} between {self.start} and "
                             f"{self.end}")
        return keys[order], ts[order]
