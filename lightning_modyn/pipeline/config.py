"""``Pipeline``: how to retrain (trigger, selection, evaluation, where to write) — one definition of every setting of
the continual loop, shared by the Python API (``ContinualLoop(model, datamodule, Pipeline(...))``) and the
``pipeline`` section of a recipe."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from lightning_modyn._checks import check_int, check_number, check_seed
from lightning_modyn.pipeline.storage import ModelStorage
from lightning_modyn.selection import SelectionPolicy
from lightning_modyn.triggers.base import Trigger


@runtime_checkable
class RunEvaluator(Protocol):
    """What the loop needs of an evaluation (:class:`lightning_modyn.evaluation.Evaluation` is one): evaluate the
    models of ``registry`` on ``stream``, after each fit (``final=False``: results so far) and at the end."""

    def run(self, loop: Any, registry: Any, stream: Any, final: bool = True) -> dict[str, Any]: ...


def check_loop_seed(seed: Any, name: str = "seed") -> int:
    """A loop's seed: fits are seeded with ``seed + trigger_id``, which must be an integer in ``[0, 2**32 - 1]``."""
    return check_seed(name=name, seed=seed, hint=f"(fits are seeded with {name} + trigger_id)")


class Pipeline:
    """How to retrain: a trigger, a selection policy, optional evaluation, and where to write results.

    Args:
        trigger: When to retrain (``class_path`` of a :class:`~lightning_modyn.triggers.base.Trigger`).
        selection: Which data each fit uses (default ``NewData()``: the data since the last trigger).
        evaluation: Evaluate every model on windows of the stream and of held-out datasets, after each fit and at
            the end (an :class:`~lightning_modyn.evaluation.Evaluation`).
        output_dir: Models, loop state, results and plots go here.
        warm_start: Fit each model from the previous one (True) or from the initial weights (False).
        start, end: Replay samples with ``start <= timestamp < end``.
        chunk_size: Samples the trigger sees per call (decisions do not depend on it).
        seed: Fits are seeded with ``seed + trigger_id``.
        live: Watch the store for newly appended samples instead of replaying what is there
            (:class:`~lightning_modyn.pipeline.stream.WatchStream`; samples must arrive in time order);
            ``poll_seconds`` between looks, ``idle_timeout`` seconds without new data end the run (None: never).
        embedding_layer: The model's module whose output drift triggers and embedding-based strategies compare
            (its dotted name, ``backbone.fc1``); default: the model's ``embed()``, else its outputs (logged).
        model_storage: How each trigger's model is kept (``FullStorage``, ``IncrementalStorage``; class_path);
            default whole, uncompressed.
        progress: Report the run's progress (stream position, triggers, stage, seconds per stage) through the
            ``lightning_modyn`` logger on rank 0.
    """

    def __init__(self, trigger: Trigger, selection: SelectionPolicy | None = None,
                 evaluation: RunEvaluator | None = None, output_dir: str = "runs/continual", warm_start: bool = True,
                 start: int | None = None, end: int | None = None, chunk_size: int = 1000, seed: int = 0,
                 live: bool = False, poll_seconds: float = 1.0, idle_timeout: float | None = 60.0,
                 embedding_layer: str | None = None, model_storage: ModelStorage | None = None,
                 progress: bool = True) -> None:
        # checked here, before a dataset section may spend minutes writing the store, not when the loop starts
        if not isinstance(trigger, Trigger):
            raise TypeError(f"pipeline.trigger must be a lightning_modyn Trigger, got {type(trigger).__name__}")
        if selection is not None and not isinstance(selection, SelectionPolicy):
            raise TypeError(f"pipeline.selection must be a SelectionPolicy (e.g. lightning_modyn.selection."
                            f"NewData()), got {type(selection).__name__}")
        if evaluation is not None and not isinstance(evaluation, RunEvaluator):
            raise TypeError(f"pipeline.evaluation must be an Evaluation (an object with run(loop, registry, stream, "
                            f"final)), got {type(evaluation).__name__}")
        if model_storage is not None and not isinstance(model_storage, ModelStorage):
            raise TypeError(f"pipeline.model_storage must be a ModelStorage (FullStorage, IncrementalStorage), got "
                            f"{type(model_storage).__name__}")
        check_loop_seed(seed, "pipeline.seed")
        check_int("pipeline.chunk_size", chunk_size, 1)
        if start is not None and end is not None and end <= start:
            raise ValueError(f"pipeline.end ({end}) must be after pipeline.start ({start})")
        if live and end is not None:
            raise ValueError("pipeline.end has no meaning in live mode (the stream has no end yet); stop a live run "
                             "with pipeline.idle_timeout")
        check_number("pipeline.poll_seconds", poll_seconds, 0, low_open=True)
        if idle_timeout is not None:
            check_number("pipeline.idle_timeout", idle_timeout, 0, hint="(None: watch forever)")
        self.trigger = trigger
        self.selection = selection
        self.evaluation = evaluation
        self.output_dir = str(output_dir)
        self.warm_start = warm_start
        self.start, self.end, self.chunk_size, self.seed = start, end, chunk_size, seed
        self.live, self.poll_seconds, self.idle_timeout = live, poll_seconds, idle_timeout
        self.embedding_layer = embedding_layer
        self.model_storage = model_storage
        self.progress = progress
