"""The ``pipeline`` section of a recipe: what the loop adds to LightningCLI's ``model``, ``data`` and ``trainer``."""

from __future__ import annotations

from lightning_modyn.evaluation import Evaluation
from lightning_modyn.pipeline.loop import check_loop_seed
from lightning_modyn.pipeline.storage import ModelStorage
from lightning_modyn.selection import SelectionPolicy
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
        model_storage: How each trigger's model is kept (``FullStorage``, ``IncrementalStorage``; class_path).
    """

    def __init__(self, trigger: Trigger, selection: SelectionPolicy | None = None,
                 evaluation: Evaluation | None = None, output_dir: str = "runs/continual", warm_start: bool = True,
                 start: int | None = None, end: int | None = None, chunk_size: int = 1000, seed: int = 0,
                 live: bool = False, poll_seconds: float = 1.0, idle_timeout: float | None = 60.0,
                 embedding_layer: str | None = None, model_storage: ModelStorage | None = None) -> None:
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
        self.model_storage = model_storage
