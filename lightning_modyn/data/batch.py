"""Batches that an unchanged ``training_step`` unpacks as usual, while callbacks read keys and weights.

``x, y = batch`` works because a :class:`KeyedBatch` *is* the tuple the decode function returned; the store keys
and the selection weights ride along as attributes (``batch.keys``, ``batch.weights``), and Lightning moves all of
it to the device through :meth:`KeyedBatch.to`.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device


class KeyedBatch(tuple):
    """A tuple (as returned by the decode function) that also carries ``keys`` and ``weights`` tensors.

    ``weights`` is 0 for padding samples that make every rank see the same number of samples under DDP.

    >>> b = KeyedBatch(("x", "y"), keys=torch.tensor([3, 5]), weights=torch.tensor([1.0, 0.5]))
    >>> x, y = b
    >>> (x, y, b.keys.tolist(), b.weights.tolist())
    ('x', 'y', [3, 5], [1.0, 0.5])
    """

    keys: torch.Tensor

    def __new__(cls, items, keys: torch.Tensor, weights: torch.Tensor) -> "KeyedBatch":
        obj = super().__new__(cls, items)
        obj.keys = keys
        obj._weights = weights
        obj.weights_read = False
        return obj

    @property
    def weights(self) -> torch.Tensor:
        """The samples' weights. Reading them is noted (``weights_read``), so that a selection callback can tell
        a training step that applied them from one that ignored them."""
        self.weights_read = True
        return self._weights

    @weights.setter
    def weights(self, value: torch.Tensor) -> None:
        self._weights = value

    def __getnewargs__(self):  # pickling across DataLoader worker processes
        return (tuple(self), self.keys, self._weights)

    def to(self, *args: Any, **kwargs: Any) -> "KeyedBatch":
        """Move every tensor (including keys and weights) like ``Tensor.to``."""
        device = args[0] if args else kwargs.get("device")
        non_blocking = kwargs.get("non_blocking", False)
        items = tuple(move_data_to_device(item, device) if device is not None else item for item in self)
        return KeyedBatch(
            items,
            keys=self.keys.to(device, non_blocking=non_blocking) if device is not None else self.keys,
            weights=self._weights.to(device, non_blocking=non_blocking) if device is not None else self._weights,
        )

    def pin_memory(self) -> "KeyedBatch":
        """Pinned copies for fast host-to-GPU transfer (used by ``DataLoader(pin_memory=True)``)."""
        from torch.utils.data._utils.pin_memory import pin_memory

        return KeyedBatch(tuple(pin_memory(item) for item in self), self.keys.pin_memory(), self._weights.pin_memory())

    def __repr__(self) -> str:
        return f"KeyedBatch({tuple.__repr__(self)}, keys=<{len(self.keys)} keys>)"


_training_batch: KeyedBatch | None = None  # the batch this process handed to the training step last


def note_training_batch(batch: Any) -> None:
    """Remember the batch that is about to reach ``training_step`` (the DataModule's ``on_after_batch_transfer``)."""
    global _training_batch
    _training_batch = batch if isinstance(batch, KeyedBatch) else None


def keyed_batch(batch: Any) -> KeyedBatch | None:
    """The :class:`KeyedBatch` behind ``batch``: ``batch`` itself, or the training batch that a wrapper rebuilt as
    a plain tuple holding the very same tensors (torch's ``DistributedDataParallel`` does so when it has
    ``device_ids``: its input move turns tuple subclasses into tuples); None for any other batch."""
    if isinstance(batch, KeyedBatch):
        return batch
    noted = _training_batch
    if noted is None or not isinstance(batch, (tuple, list)) or len(batch) != len(noted):
        return None
    mine, theirs = _leaves(batch), _leaves(tuple(noted))
    return noted if len(mine) == len(theirs) and all(a is b for a, b in zip(mine, theirs)) else None


def _leaves(node: Any) -> list[Any]:
    if isinstance(node, (tuple, list)):
        return [leaf for item in node for leaf in _leaves(item)]
    if isinstance(node, dict):
        return [leaf for key in sorted(node, key=str) for leaf in _leaves(node[key])]
    return [node]


def batch_keys(batch: Any) -> torch.Tensor | None:
    """The store keys of a batch from :class:`ModynDataModule`, or None for other batches."""
    found = keyed_batch(batch)
    return None if found is None else found.keys


def batch_weights(batch: Any, note: bool = True) -> torch.Tensor | None:
    """The selection weights of a batch from :class:`ModynDataModule`, or None for other batches. ``note=False``
    looks without noting the read (``weights_read``), for a callback that counts what a step trained on: only the
    training step's own reading tells a selection callback that the weights were applied."""
    found = keyed_batch(batch)
    if found is None:
        return None
    if not note:
        return found._weights
    return found.weights
