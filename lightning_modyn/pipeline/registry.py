"""A model per trigger: weights and metadata on disk, written atomically, listed in ``registry.json``."""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from lightning_modyn._io import atomic_write, write_json_atomic


class ModelRegistry:
    """Stores ``models/trigger-NNNN.pt`` (the module's ``state_dict``) and one metadata record per trigger
    (trigger id, timestamp, samples trained, seconds, selection, ...) in ``registry.json``."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(os.path.join(root, "models"), exist_ok=True)
        self.index_path = os.path.join(root, "registry.json")
        self._entries: list[dict[str, Any]] = []
        if os.path.exists(self.index_path):
            with open(self.index_path) as handle:
                self._entries = json.load(handle)["models"]

    def path(self, trigger_id: int) -> str:
        return os.path.join(self.root, "models", f"trigger-{trigger_id:04d}.pt")

    def save(self, trigger_id: int, module: torch.nn.Module, metadata: dict[str, Any]) -> dict[str, Any]:
        path = self.path(trigger_id)
        with atomic_write(path) as handle:
            torch.save(module.state_dict(), handle)
        entry = {"trigger_id": trigger_id, "path": os.path.relpath(path, self.root), **metadata}
        self._entries = [e for e in self._entries if e["trigger_id"] != trigger_id] + [entry]
        self._entries.sort(key=lambda e: e["trigger_id"])
        write_json_atomic(self.index_path, {"models": self._entries})
        return entry

    def load_into(self, trigger_id: int, module: torch.nn.Module) -> torch.nn.Module:
        """Load trigger ``trigger_id``'s weights into ``module`` (weights only: never unpickles objects)."""
        state = torch.load(self.path(trigger_id), map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        return module

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries)

    def get(self, trigger_id: int) -> dict[str, Any] | None:
        return next((e for e in self._entries if e["trigger_id"] == trigger_id), None)

    def __len__(self) -> int:
        return len(self._entries)
