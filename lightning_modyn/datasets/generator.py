"""The ``dataset`` section of a recipe: a generator that writes a bundled dynamic dataset into a store.

Lives with the datasets (the pipeline's CLI uses it), so that ``datasets/`` imports nothing of ``pipeline/``.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from lightning_modyn.store import SampleStore


class StreamGenerator(ABC):
    """The optional ``dataset`` section: writes a bundled dynamic dataset into the store if it is not there.

    The store keeps the generator's :meth:`describe` as its ``stream`` attribute, so a later run whose recipe asks
    for a different stream at the same ``data.store`` is refused instead of silently training on the old one.
    Subclasses keep their arguments in ``self.options``.
    """

    options: dict[str, Any]
    heldout_url: str | None = None
    """Where the generator writes a held-out stream beside the training stream (None: it writes none)."""

    @abstractmethod
    def write(self, store_or_url: Any) -> np.ndarray:
        """Write the stream into a new, writable store (or create one at a URL); return its keys."""

    def write_heldout(self, store_or_url: Any = None) -> np.ndarray:
        """Write the held-out stream into a new store (default: create it at :attr:`heldout_url`)."""
        raise NotImplementedError(f"{type(self).__name__} writes no held-out stream")

    def timeline(self) -> dict[str, Any] | None:
        """How to read the stream's timestamps, for plots: ``{"unit": "day", "unit_seconds": 86400, "start": t0,
        "shifts": [{"at": t, "label": what changed}]}``, or None if the stream says nothing. The recipe stores it
        as the store's ``timeline`` attribute."""
        return None

    def describe_heldout(self) -> dict[str, Any]:
        """What the held-out store holds: its ``stream`` attribute (the CLI stores it as JSON values)."""
        return {**self.describe(), "heldout": True}

    def describe(self) -> dict[str, Any]:
        """``class_path`` and ``init_args`` of this stream, as JSON values."""
        return json.loads(json.dumps({"class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                                      "init_args": self.options}))

    def check_store(self, store: SampleStore) -> None:
        """Raise if ``store`` holds another stream than this one; warn if it does not say which it holds."""
        held = store.attributes.get("stream")
        wanted = self.describe()
        if held is None:
            warnings.warn(f"{store.url} does not record which stream it holds (written by another tool or an "
                          f"older version); the recipe's dataset section is not checked against it",
                          RuntimeWarning, stacklevel=2)
            return
        if held == wanted:
            return
        if held.get("class_path") != wanted["class_path"]:
            diff = f"it holds {held.get('class_path')}, the recipe asks for {wanted['class_path']}"
        else:
            a, b = held.get("init_args", {}), wanted["init_args"]
            diff = ", ".join(f"{k}: store {a.get(k)!r} vs recipe {b.get(k)!r}"
                             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        raise ValueError(f"the store at {store.url} was written by another dataset than the recipe's ({diff}); "
                         "delete that store or point data.store at another path")
