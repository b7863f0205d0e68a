"""Decode functions: a fetched batch of store data -> the tuple a ``training_step`` unpacks (e.g. ``x, y``).

A decode function receives a :class:`SampleBatch` and returns a tuple. The built-in ones are classes so that they
pickle into DataLoader workers and can be named in a LightningCLI config (``class_path`` / ``init_args``).
Members a decoder lists in ``members`` are fetched with one vectorized gather each; a decoder without
``members`` gets whole samples (``batch.samples()``: one dict per sample, as :meth:`SampleStore.get` returns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

from lightning_modyn.store import NO_LABEL, MemberBatch, SampleStore


@dataclass
class SampleBatch:
    """What a decode function sees: the keys of one batch and their data, fetched in one go."""

    keys: np.ndarray
    store: SampleStore
    rows: np.ndarray | None = None
    members: dict[str, MemberBatch] = field(default_factory=dict)
    _samples: list[dict] | None = None

    def samples(self) -> list[dict[str, Any]]:
        """Whole samples (member bytes plus ``__key__``, ``__label__``...), fetched on first use."""
        if self._samples is None:
            self._samples = self.store.get(self.keys)
        return self._samples

    def labels(self) -> np.ndarray:
        """Labels from the catalog (``NO_LABEL`` where a sample has none)."""
        return self.store.lookup(self.keys).labels


class RecordsToTensors:
    """Records -> ``(x, y)``: ``y`` the label field, ``x`` the other fields (a tensor, or a dict of tensors).

    Args:
        label_field: Name of the label field; None gives ``(x,)``.
        label_dtype: dtype of ``y`` (e.g. ``"float32"`` for a BCE loss).
    """

    def __init__(self, label_field: str | None = "label", label_dtype: str | None = None) -> None:
        if label_dtype is not None and not isinstance(getattr(torch, str(label_dtype), None), torch.dtype):
            raise ValueError(f"label_dtype {label_dtype!r} is not a torch dtype (e.g. 'int64', 'float32')")
        self.label_field = label_field
        self.label_dtype = label_dtype

    def __call__(self, batch: SampleBatch) -> tuple:
        rows = batch.rows
        if rows is None:
            raise TypeError("RecordsToTensors decodes records; this store's training keys are samples")
        names = [n for n in rows.dtype.names if n != self.label_field]
        fields = {n: torch.from_numpy(np.ascontiguousarray(rows[n])) for n in names}
        x = fields[names[0]] if len(names) == 1 else fields
        if self.label_field is None:
            return (x,)
        if self.label_field not in rows.dtype.names:
            raise KeyError(f"records have no field {self.label_field!r} (fields: {rows.dtype.names})")
        y = torch.from_numpy(np.ascontiguousarray(rows[self.label_field]))
        y = y.long() if self.label_dtype is None else y.to(getattr(torch, self.label_dtype))
        return x, y


class ArrayMember:
    """A fixed-size binary member (e.g. raw image bytes) -> ``(x, y)`` with ``y`` the catalog label.

    Args:
        member: Extension of the member holding the array bytes.
        shape: Shape of one sample's array (e.g. ``[32, 32, 3]``).
        dtype: numpy dtype of the bytes.
        scale: Multiply by this and return float32 (e.g. ``1/255``); None keeps the dtype.
        channels_first: Move the last axis to the front (HWC -> CHW).
    """

    def __init__(self, member: str, shape: Sequence[int], dtype: str = "uint8", scale: float | None = None,
                 channels_first: bool = False) -> None:
        if not isinstance(member, str) or not member:
            raise TypeError(f"member must be the extension of a member (e.g. 'raw'), got {member!r}")
        if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ValueError(f"shape must be a list of positive integers (one sample's array, e.g. [32, 32, 3]), "
                             f"got {shape!r}")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype {dtype!r} is not a numpy dtype (e.g. 'uint8', 'float32')") from None
        if self.dtype.hasobject:
            raise TypeError(f"dtype {dtype!r} holds Python objects; member bytes decode to plain numeric dtypes")
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float, np.number))):
            raise TypeError(f"scale must be a number (e.g. 1/255) or None, got {type(scale).__name__} {scale!r}")
        self.member = member
        self.members = (member,)
        self.shape = tuple(int(s) for s in shape)
        self.scale = scale
        self.channels_first = channels_first

    def __call__(self, batch: SampleBatch) -> tuple:
        data = batch.members[self.member]
        size = data.fixed_size
        expected = int(np.prod(self.shape)) * self.dtype.itemsize
        if size != expected:
            raise ValueError(f"member {self.member!r} has {size} bytes per sample, expected {expected} for "
                             f"shape {self.shape} of {self.dtype}")
        arr = data.array()  # may be a strided view of whole sample rows (the member is a prefix of each row)
        if self.scale is None and get_worker_info() is None:
            arr = np.ascontiguousarray(arr)  # else a copy is made anyway: by the scaling, or by the worker hand-over
        x = torch.from_numpy(arr.view(self.dtype).reshape((len(batch.keys),) + self.shape))
        if self.channels_first:
            x = x.movedim(-1, 1)
        if self.scale is not None:
            x = x.float() * self.scale
        labels = batch.labels()
        if (labels == NO_LABEL).any():
            raise ValueError(f"sample {int(batch.keys[labels == NO_LABEL][0])} has no label in the store")
        return x, torch.from_numpy(labels)
