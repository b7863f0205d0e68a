"""A model per trigger: weights (by a storage policy), the keys each trained on, and metadata in ``registry.json``."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from lightning_modyn._io import atomic_write, write_json_atomic
from lightning_modyn.pipeline.storage import (
    FullStorage,
    ModelStorage,
    arrays_state,
    decode,
    difference,
    encode,
    state_arrays,
    undo,
)


class ModelRegistry:
    """Stores ``models/trigger-NNNN.lmw`` (the module's ``state_dict``, whole or as a difference to the model
    before: :mod:`~lightning_modyn.pipeline.storage`), ``models/trigger-NNNN.keys.npz`` (the keys and weights the
    model trained on: its lineage) and one metadata record per trigger (trigger id, timestamp, samples trained,
    seconds, selection, bytes, storage, ...) in ``registry.json``. Files of older runs (``.pt``, weights only) are
    still read.

    Args:
        root: The run's output folder.
        storage: A storage policy (default: :class:`~lightning_modyn.pipeline.storage.FullStorage`, uncompressed).
    """

    def __init__(self, root: str, storage: ModelStorage | None = None) -> None:
        if storage is not None and not isinstance(storage, ModelStorage):
            raise TypeError(f"storage must be a ModelStorage (FullStorage, IncrementalStorage), got "
                            f"{type(storage).__name__}")
        self.root = root
        self.storage = storage or FullStorage()
        os.makedirs(os.path.join(root, "models"), exist_ok=True)
        self.index_path = os.path.join(root, "registry.json")
        self._entries: list[dict[str, Any]] = []
        self._last: tuple[int, dict[str, np.ndarray]] | None = None  # the last model rebuilt: chains load fast
        if os.path.exists(self.index_path):
            with open(self.index_path) as handle:
                self._entries = json.load(handle)["models"]

    def path(self, trigger_id: int) -> str:
        return os.path.join(self.root, "models", f"trigger-{trigger_id:04d}.lmw")

    def lineage_path(self, trigger_id: int) -> str:
        return os.path.join(self.root, "models", f"trigger-{trigger_id:04d}.keys.npz")

    def save(self, trigger_id: int, module: torch.nn.Module, metadata: dict[str, Any], keys: Any = None,
             weights: Any = None) -> dict[str, Any]:
        """Store trigger ``trigger_id``'s model by the storage policy, and (when given) the keys and weights it
        trained on."""
        arrays = state_arrays(module.state_dict())
        base = self.storage.base_of(trigger_id)
        header: dict[str, Any] = {"trigger_id": trigger_id, "base": None}
        stored = arrays
        if base is not None and self.get(base) is not None:
            previous = self._arrays(base)
            if set(previous) == set(arrays) and all(previous[k].shape == a.shape and previous[k].dtype == a.dtype
                                                    for k, a in arrays.items()):
                header.update(base=base, diff=self.storage.diff)
                stored = {k: difference(self.storage.diff, a, previous[k]) for k, a in arrays.items()}
        data = encode(stored, header, self.storage.codec)
        path = self.path(trigger_id)
        with atomic_write(path) as handle:
            handle.write(data)
        entry = {"trigger_id": trigger_id, "path": os.path.relpath(path, self.root), "bytes": len(data),
                 "storage": {**self.storage.describe(), "base": header["base"]}, **metadata}
        if keys is not None:
            entry["lineage"] = os.path.relpath(self._save_lineage(trigger_id, keys, weights), self.root)
        self._entries = [e for e in self._entries if e["trigger_id"] != trigger_id] + [entry]
        self._entries.sort(key=lambda e: e["trigger_id"])
        write_json_atomic(self.index_path, {"models": self._entries})
        self._last = (trigger_id, arrays)
        return entry

    def load_into(self, trigger_id: int, module: torch.nn.Module) -> torch.nn.Module:
        """Load trigger ``trigger_id``'s weights into ``module`` (never unpickles: see the storage module)."""
        entry = self.get(trigger_id)
        if entry is not None and entry["path"].endswith(".pt"):  # an older run: torch's weights-only loader
            state = torch.load(os.path.join(self.root, entry["path"]), map_location="cpu", weights_only=True)
        else:
            state = arrays_state(self._arrays(trigger_id), module.state_dict())
        module.load_state_dict(state)
        return module

    def weights(self, trigger_id: int) -> dict[str, torch.Tensor]:
        """Trigger ``trigger_id``'s ``state_dict`` as CPU tensors, without a module to load it into (bfloat16
        weights come back as their uint16 bits)."""
        return {k: torch.from_numpy(a.copy()) for k, a in self._arrays(trigger_id).items()}

    def _arrays(self, trigger_id: int) -> dict[str, np.ndarray]:
        """Trigger ``trigger_id``'s model as arrays, its chain of differences applied."""
        if self._last is not None and self._last[0] == trigger_id:
            return self._last[1]
        entry = self.get(trigger_id)
        if entry is None:
            raise KeyError(f"no model of trigger {trigger_id} in {self.index_path}")
        path = os.path.join(self.root, entry["path"])
        if path.endswith(".pt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
            arrays = state_arrays(state)
        else:
            with open(path, "rb") as handle:
                header, stored = decode(handle.read(), path)
            if header.get("base") is None:
                arrays = {k: a.copy() for k, a in stored.items()}
            else:
                previous = self._arrays(int(header["base"]))
                arrays = {k: undo(header["diff"], a, previous[k]) for k, a in stored.items()}
        self._last = (trigger_id, arrays)
        return arrays

    # ------------------------------------------------------------------ lineage
    def _save_lineage(self, trigger_id: int, keys: Any, weights: Any) -> str:
        keys = np.asarray(keys, np.int64).reshape(-1)
        weights = np.ones(len(keys), np.float32) if weights is None else np.asarray(weights, np.float32).reshape(-1)
        order = np.argsort(keys, kind="stable")
        keys, weights = keys[order], weights[order]
        gaps = np.diff(keys, prepend=np.int64(0))  # sorted keys as gaps: small numbers that compress well
        path = self.lineage_path(trigger_id)
        with atomic_write(path) as handle:
            np.savez_compressed(handle, gaps=gaps, weights=weights)
        return path

    def trained_keys(self, trigger_id: int) -> tuple[np.ndarray, np.ndarray]:
        """The keys (sorted) and weights trigger ``trigger_id``'s model trained on."""
        entry = self.get(trigger_id)
        if entry is None or "lineage" not in entry:
            raise KeyError(f"the registry at {self.root} has no lineage of trigger {trigger_id}")
        with np.load(os.path.join(self.root, entry["lineage"]), allow_pickle=False) as f:
            return np.cumsum(f["gaps"]), f["weights"].copy()

    def models_trained_on(self, keys: Any) -> dict[int, np.ndarray]:
        """Which models trained on which of ``keys``: trigger id -> the sorted keys among ``keys`` it trained on
        (only triggers that trained on at least one). For forgetting a sample: the models that saw it."""
        wanted = np.unique(np.asarray(keys, np.int64))
        out = {}
        for entry in self._entries:
            if "lineage" in entry:
                seen = np.intersect1d(self.trained_keys(entry["trigger_id"])[0], wanted, assume_unique=False)
                if len(seen):
                    out[int(entry["trigger_id"])] = seen
        return out

    # ------------------------------------------------------------------ entries
    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries)

    def get(self, trigger_id: int) -> dict[str, Any] | None:
        return next((e for e in self._entries if e["trigger_id"] == trigger_id), None)

    def __len__(self) -> int:
        return len(self._entries)
