"""Hand a batch from a DataLoader worker to the training process as one shared-memory block.

A worker returns a batch by pickling it into a queue; PyTorch moves every tensor's storage to its own
shared-memory segment and passes one file descriptor per storage to the training process. A
:class:`~lightning_modyn.data.batch.KeyedBatch` of records has four or five tensors (features, label, keys,
weights), and on a small machine that per-segment cost, not the store read, bounds the loader: measured here, a
640 KiB batch moved as four tensors costs about twice as much as the same bytes moved as one.

:func:`pack` copies every tensor of a batch into one contiguous uint8 buffer (each tensor at a 64-byte aligned
offset) and records where each one lives; :meth:`PackedBatch.unpack` rebuilds the same structure as views into
that buffer in the training process. ``DataLoader(pin_memory=True)`` pins the single buffer. The tensors come
back with the same dtype, shape and values, contiguous; non-tensor leaves travel unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lightning_modyn.data.batch import KeyedBatch

ALIGNMENT = 64


@dataclass(frozen=True)
class _Slot:
    """Where one tensor lives in the buffer."""

    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Container:
    """A tuple, list, dict, named tuple or KeyedBatch whose items are layouts."""

    kind: type
    items: tuple  # layouts; for a dict, (key, layout) pairs
    extra: tuple = ()  # KeyedBatch: (keys layout, weights layout)


def _plan(obj: Any, tensors: list[tuple[torch.Tensor, _Slot]]) -> Any:
    """The layout of ``obj``; every tensor to copy is appended to ``tensors`` with its slot."""
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided or obj.device.type != "cpu" or obj.requires_grad or obj.is_quantized:
            return obj  # sparse, device, autograd and quantized tensors travel as they are
        offset = 0
        if tensors:
            last = tensors[-1][1]
            offset = last.offset + -(-last.nbytes // ALIGNMENT) * ALIGNMENT
        slot = _Slot(offset, obj.numel() * obj.element_size(), obj.dtype, tuple(obj.shape))
        tensors.append((obj, slot))
        return slot
    if isinstance(obj, KeyedBatch):
        return _Container(KeyedBatch, tuple(_plan(i, tensors) for i in obj),
                          (_plan(obj.keys, tensors), _plan(obj.weights, tensors)))
    if type(obj) is dict:
        return _Container(dict, tuple((k, _plan(v, tensors)) for k, v in obj.items()))
    if type(obj) in (tuple, list) or (isinstance(obj, tuple) and hasattr(obj, "_fields")):
        return _Container(type(obj), tuple(_plan(i, tensors) for i in obj))
    return obj


def _rebuild(layout: Any, buffer: torch.Tensor) -> Any:
    if isinstance(layout, _Slot):
        return buffer[layout.offset : layout.offset + layout.nbytes].view(layout.dtype).view(layout.shape)
    if isinstance(layout, _Container):
        if layout.kind is dict:
            return {k: _rebuild(v, buffer) for k, v in layout.items}
        items = [_rebuild(i, buffer) for i in layout.items]
        if layout.kind is KeyedBatch:
            keys, weights = (_rebuild(e, buffer) for e in layout.extra)
            return KeyedBatch(tuple(items), keys=keys, weights=weights)
        if layout.kind in (tuple, list):
            return layout.kind(items)
        return layout.kind(*items)  # a named tuple
    return layout


@dataclass
class PackedBatch:
    """A batch whose tensors all live in ``buffer`` (one storage), with the layout to rebuild it."""

    buffer: torch.Tensor
    layout: Any

    def unpack(self) -> Any:
        """The original structure, its tensors being views into ``buffer``."""
        return _rebuild(self.layout, self.buffer)

    def pin_memory(self, device: Any = None) -> "PackedBatch":
        """Pin the one buffer (called by the DataLoader's pin-memory thread)."""
        pinned = self.buffer.pin_memory() if device is None else self.buffer.pin_memory(device)
        return PackedBatch(pinned, self.layout)


def pack(batch: Any) -> PackedBatch:
    """Copy every CPU tensor of ``batch`` (nested in tuples, lists, dicts, KeyedBatch) into one buffer."""
    tensors: list[tuple[torch.Tensor, _Slot]] = []
    layout = _plan(batch, tensors)
    size = tensors[-1][1].offset + tensors[-1][1].nbytes if tensors else 0
    buffer = torch.empty(size, dtype=torch.uint8)
    for tensor, slot in tensors:
        _rebuild(slot, buffer).copy_(tensor)
    return PackedBatch(buffer, layout)


def unpack(batch: Any) -> Any:
    """``batch.unpack()`` for a :class:`PackedBatch`, anything else unchanged."""
    return batch.unpack() if isinstance(batch, PackedBatch) else batch
