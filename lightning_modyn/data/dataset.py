"""A map-style dataset whose items are whole batches: one store gather and one decode per batch."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_modyn.data.batch import KeyedBatch
from lightning_modyn.data.decode import SampleBatch
from lightning_modyn.data.sampler import KeyBatch
from lightning_modyn.data.transfer import PackedBatch, SlotBatch, hand_over
from lightning_modyn.store import DeletedKeyError, SampleStore, StoreError


class KeyedBatchDataset(Dataset):
    """Turns a :class:`KeyBatch` (keys + weights) into a :class:`KeyedBatch` (decoded tuple + keys + weights).

    Records are read with ``get_records`` (no per-row objects); samples with ``get_member`` for the members the
    decoder names, else with ``get``. Keys deleted while training are dropped from the batch with a warning.
    With ``any_order`` (training batches), a batch's keys are first put in the store's :meth:`read_order`, so
    each byte is copied once; the batch holds the same samples, and its keys and weights follow the new order.
    The store pickles as its URL, so DataLoader workers reopen it read-only. In a worker the batch is returned
    in a reused shared-memory slot (:func:`~lightning_modyn.data.transfer.hand_over`: one block instead of one per
    tensor); :class:`~lightning_modyn.data.datamodule.ModynDataLoader` copies it out in the training process.
    """

    def __init__(self, store: SampleStore, decode: Callable[[SampleBatch], tuple], any_order: bool = False) -> None:
        self.store = store
        self.decode = decode
        self.any_order = any_order

    def __getitem__(self, request: KeyBatch) -> KeyedBatch | SlotBatch | PackedBatch:
        return hand_over(self.read(request))

    def read(self, request: KeyBatch) -> KeyedBatch:
        """Fetch and decode one batch request."""
        if not isinstance(request, KeyBatch):
            raise TypeError(f"items of this dataset are KeyBatch requests from SelectionSampler, got {request!r}")
        keys, weights = request.keys, request.weights
        try:
            keys, weights, out = self._read_pinned(request, keys, weights)
        except DeletedKeyError:
            live = self.store.contains(keys)  # outside the pin: sees the delete
            warnings.warn(f"{int((~live).sum())} key(s) of batch {request.index} were deleted from the store "
                          "during training; they are skipped", RuntimeWarning, stacklevel=3)
            keys, weights, out = self._read_pinned(request, keys[live], weights[live])
        if not isinstance(out, (tuple, list)):
            raise TypeError(f"decode must return a tuple such as (x, y), got {type(out).__name__}")
        return KeyedBatch(tuple(out), keys=torch.from_numpy(np.ascontiguousarray(keys)),
                          weights=torch.from_numpy(np.ascontiguousarray(weights)))

    def _read_pinned(self, request: KeyBatch, keys: np.ndarray, weights: np.ndarray) -> tuple:
        """Read order, bytes and labels of one batch from one snapshot (one change check), then decode."""
        with self.store.pinned():
            try:
                keys, weights = self._ordered(keys, weights)
                batch = self._fetch(keys)
            except DeletedKeyError:
                raise
            except StoreError as err:
                raise type(err)(f"while reading batch {request.index} of epoch {request.epoch} "
                                f"(keys {int(keys[0])}...): {err}") from err
            try:
                out = self.decode(batch)
            except DeletedKeyError:
                raise  # e.g. a decoder reading whole samples met a key deleted meanwhile: skipped like any other
            except Exception as err:
                raise RuntimeError(
                    f"decode {type(self.decode).__name__} failed on batch {request.index} with keys "
                    f"{keys[:8].tolist()}{'...' if len(keys) > 8 else ''} from {self.store.url}: {err}"
                ) from err
        return keys, weights, out

    def _ordered(self, keys: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.any_order or not len(keys):
            return keys, weights
        order = self.store.read_order(keys)
        return keys[order], weights[order]

    def _fetch(self, keys: np.ndarray) -> SampleBatch:
        if self.store.record_dtype is not None and self.store.holds_only_records():
            return SampleBatch(keys, self.store, rows=self.store.get_records(keys))
        members = getattr(self.decode, "members", None)
        if members:
            return SampleBatch(keys, self.store, members={m: self.store.get_member(keys, m) for m in members})
        if self.store.record_dtype is not None:
            try:
                return SampleBatch(keys, self.store, rows=self.store.get_records(keys))
            except StoreError:
                pass
        return SampleBatch(keys, self.store)


def passthrough(batch):
    """The DataLoader's collate function: items are already whole batches."""
    return batch
