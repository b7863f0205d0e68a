"""The ``pipeline`` section of a recipe: what the loop adds to LightningCLI's ``model``, ``data`` and ``trainer``."""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from lightning_modyn.evaluation import Evaluation
from lightning_modyn.pipeline.loop import check_loop_seed
from lightning_modyn.selection import SelectionPolicy
from lightning_modyn.store import SampleStore
from lightning_modyn.triggers.base import Trigger


class Pipeline:
    """How to retrain: a trigger, a selection policy, optional evaluation, and where to write results.

    Args:
        trigger: When to retrain (``class_path`` of a :class:`~lightning_modyn.triggers.base.Trigger`).
        selection: Which data each fit uses (default ``NewData()``: the data since the last trigger).
        evaluation: Evaluate every model on windows of the stream at the end.
        output_dir: Models, loop state, results and plots go here.
        warm_start: Fit each model from the previous one (True) or from the initial weights (False).
        start, end: Replay samples with ``start <= timestamp < end``.
        chunk_size: Samples the trigger sees per call.
        seed: Fits are seeded with ``seed + trigger_id``.
        live: Watch the store for new samples instead of replaying it; ``poll_seconds`` between looks,
            ``idle_timeout`` seconds without new data end the run (None: never).
        embedding_layer: The model's module whose output drift triggers compare (``backbone.fc1``); default: the
            model's ``embed()``, else its outputs.
    """

    def __init__(self, trigger: Trigger, selection: SelectionPolicy | None = None,
                 evaluation: Evaluation | None = None, output_dir: str = "runs/continual", warm_start: bool = True,
                 start: int | None = None, end: int | None = None, chunk_size: int = 1000, seed: int = 0,
                 live: bool = False, poll_seconds: float = 1.0, idle_timeout: float | None = 60.0,
                 embedding_layer: str | None = None) -> None:
        # checked here, before a dataset section may spend minutes writing the store, not when the loop starts
        check_loop_seed(seed, "pipeline.seed")
        if chunk_size <= 0:
            raise ValueError(f"pipeline.chunk_size must be positive, got {chunk_size}")
        if start is not None and end is not None and end <= start:
            raise ValueError(f"pipeline.end ({end}) must be after pipeline.start ({start})")
        if poll_seconds <= 0:
            raise ValueError(f"pipeline.poll_seconds must be positive, got {poll_seconds}")
        if idle_timeout is not None and idle_timeout < 0:
            raise ValueError(f"pipeline.idle_timeout must be None (watch forever) or >= 0, got {idle_timeout}")
        self.trigger = trigger
        self.selection = selection
        self.evaluation = evaluation
        self.output_dir = output_dir
        self.warm_start = warm_start
        self.start, self.end, self.chunk_size, self.seed = start, end, chunk_size, seed
        self.live, self.poll_seconds, self.idle_timeout = live, poll_seconds, idle_timeout
        self.embedding_layer = embedding_layer


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
    def write(self, url: str) -> np.ndarray:
        """Create a store at ``url`` holding the stream; return its keys."""

    def write_heldout(self) -> np.ndarray:
        """Create the store at :attr:`heldout_url` holding the held-out stream; return its keys."""
        raise NotImplementedError(f"{type(self).__name__} writes no held-out stream")

    def describe_heldout(self) -> dict[str, Any]:
        """What the held-out store holds, kept as its ``stream`` attribute."""
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
