"""``ContinualLoop``: replay a stream, let a trigger decide when to retrain, select data, fit, keep every model.

At each firing point the loop asks the selection policy for ``(keys, weights)``, sets them on the
``ModynDataModule``, builds a fresh ``Trainer`` for the fit (:mod:`~lightning_modyn.pipeline.fits`), fits the
model — warm from the previous model or from its initial weights — saves it in the :class:`ModelRegistry` with its
metadata, evaluates it if the pipeline says so, and tells the trigger about the new model. The loop's state
(:mod:`~lightning_modyn.pipeline.state`) is written after every chunk, so a killed run resumes from the last
completed chunk and, with seeded fits, ends with the same results.

Under a multi-process strategy only rank 0 replays the stream and decides; every rank trains on its plan
(:mod:`~lightning_modyn.pipeline.ranks`).
"""

from __future__ import annotations

import contextlib
import os
import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import lightning as L
import numpy as np

from lightning_modyn._checks import check_submodule
from lightning_modyn.data import ModynDataModule
from lightning_modyn.pipeline.config import Pipeline
from lightning_modyn.pipeline.context import LoopContext
from lightning_modyn.pipeline.costs import write_costs
from lightning_modyn.pipeline.fits import FitTrainers, TrainedSamples
from lightning_modyn.pipeline.progress import RunProgress, lightning_banners, say
from lightning_modyn.pipeline.ranks import FitPlan, LeaderWord, SharePlan, keeps_process_group
from lightning_modyn.pipeline.registry import ModelRegistry
from lightning_modyn.pipeline.state import LoopState
from lightning_modyn.pipeline.stream import ReplayStream, WatchStream
from lightning_modyn.selection import NewData, TriggerHistory
from lightning_modyn.triggers.base import Trigger


@dataclass
class RunResult:
    """What a run produced: one registry entry per trigger (with its ``seconds`` per stage), and where everything
    was written."""

    output_dir: str
    triggers: list[dict[str, Any]] = field(default_factory=list)
    stream_samples: int = 0
    evaluation: dict[str, Any] | None = None

    @property
    def num_triggers(self) -> int:
        return len(self.triggers)


class ContinualLoop:
    """Replays a store's stream through a trigger, retraining a model per trigger.

    Args:
        model: The ``LightningModule`` to retrain (unchanged: it only needs ``training_step`` and optimizers).
        datamodule: A :class:`ModynDataModule` over the store (batch size, decode, workers...).
        pipeline: How to retrain: a :class:`~lightning_modyn.pipeline.config.Pipeline` (trigger, selection,
            evaluation, output folder, chunking, seed, live mode...), or just its trigger, with the other settings of
            ``Pipeline`` as keyword arguments (``ContinualLoop(model, dm, TimeTrigger(86400), chunk_size=500)``).
        trainer: Keyword arguments of ``lightning.Trainer`` for every fit (e.g. ``max_epochs``, ``strategy``,
            ``logger``, ``callbacks``), or a callable returning a fresh Trainer. Each fit logs under its own logger
            version and checkpoints into its own folder (:mod:`~lightning_modyn.pipeline.fits`). Under a
            multi-process strategy (``ddp``, ``ddp_spawn``) rank 0 decides and writes, every rank trains its plan
            (docs/pipeline.md, "Under DDP").
        **settings: With a trigger as ``pipeline``: the other arguments of ``Pipeline``.

    After a run, :attr:`stage_seconds` holds per trigger the seconds spent deciding, selecting, scoring, training,
    storing and evaluating.
    """

    def __init__(self, model: L.LightningModule, datamodule: ModynDataModule, pipeline: Pipeline | Trigger,
                 trainer: dict[str, Any] | Callable[[], L.Trainer] | None = None, **settings: Any) -> None:
        if not isinstance(model, L.LightningModule):
            raise TypeError(f"model must be a LightningModule, got {type(model).__name__}")
        if not isinstance(datamodule, ModynDataModule):
            raise TypeError(f"datamodule must be a ModynDataModule, got {type(datamodule).__name__}")
        if isinstance(pipeline, Pipeline):
            if settings:
                raise TypeError(f"give the settings {sorted(settings)} in the Pipeline, not beside it")
        elif isinstance(pipeline, Trigger):
            pipeline = Pipeline(pipeline, **settings)
        else:
            raise TypeError(f"pipeline must be a Pipeline or a lightning_modyn Trigger, got {type(pipeline).__name__}")
        if pipeline.embedding_layer is not None:
            check_submodule(model, pipeline.embedding_layer, "embedding_layer")
        self.model = model
        self.datamodule = datamodule
        self.pipeline = pipeline
        self.trigger = pipeline.trigger
        self.selection = pipeline.selection or NewData()
        self.evaluation = pipeline.evaluation
        self.output_dir = pipeline.output_dir
        self.trainers = FitTrainers(trainer, self.output_dir)
        self.context = LoopContext(self)
        self.models_trained = 0
        self.stage_seconds: list[dict[str, float]] = []
        self.global_rank = 0
        self._initial_state = copy.deepcopy(model.state_dict())
        self._followers: Any = None  # the strategy that reaches ranks waiting between fits (after a ddp fit)
        self._fitting = False
        self._fits_started = 0
        self._progress = RunProgress(False, None)

    @property
    def initial_weights(self) -> dict[str, Any]:
        """The model's weights before any fit (a copy): where fits from scratch start, and the evaluation's
        baseline of forward transfer."""
        return copy.deepcopy(self._initial_state)

    # ------------------------------------------------------------------ fits
    def _fit_with(self, trainer: L.Trainer) -> None:
        """Fit the model (reset to its initial weights first when not warm-starting)."""
        self._fitting = True  # stays True if the fit raises: the other ranks are inside that fit, not waiting
        if not self.pipeline.warm_start:
            self.model.load_state_dict(self._initial_state)
        with warnings.catch_warnings():
            # a ModynDataModule without a validation set returns no val loader, which Lightning remarks on
            warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
            warnings.filterwarnings("ignore", message="You passed in a `val_dataloader` but have no `validation_step`")
            trainer.fit(self.model, datamodule=self.datamodule)
        self._fitting = False

    def _fit(self, trigger_id: int, keys: np.ndarray, weights: np.ndarray) -> tuple[float, TrainedSamples]:
        """Rank 0: fit on its decision, which :class:`SharePlan` hands to every other rank inside the fit; the
        seconds of scoring callbacks count as scoring, the rest as training. Returns the training seconds and what
        the fit's steps received (:class:`TrainedSamples`)."""
        self.datamodule.set_training_set(keys, weights)
        self.datamodule.trigger_id = trigger_id
        with lightning_banners(self._fits_started == 0):  # Lightning's banners and tips once per run
            self._fits_started += 1
            plan = FitPlan(trigger_id, self.pipeline.seed + trigger_id, keys, weights)
            trained = TrainedSamples()
            trainer = self.trainers.trainer(trigger_id, SharePlan(plan), trained)
            self._tell_followers(LeaderWord("fit", trigger_id=trigger_id))  # last: what fails before it aborts them
            scoring = _scoring_seconds(trainer)
            t0 = time.perf_counter()
            with self._progress.stage_of("train", f"training trigger {trigger_id} on {len(keys):,} samples"):
                self._fit_with(trainer)
            seconds = time.perf_counter() - t0
            self._progress.move(_scoring_seconds(trainer) - scoring, "train", "score")
        if keeps_process_group(trainer):
            self._followers = trainer.strategy
        return seconds, trained

    def _tell_followers(self, word: LeaderWord) -> None:
        """Rank 0: tell the ranks waiting between fits what comes next (no-op when none are waiting). After "done"
        or "abort" they have left the loop, so nothing more is sent."""
        followers = self._followers
        if word.what != "fit":
            self._followers = None
        if followers is not None:
            followers.broadcast(word, src=0)

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        """Replay the stream; returns the models trained (resuming a killed run from its last chunk).

        Under a multi-process strategy rank 0 runs the loop and every other rank follows it; all ranks return the
        same triggers, and ``evaluation`` is set on rank 0 only (``loop.global_rank`` says which rank this is).
        """
        with lightning_banners(False):  # the first fit shows them
            # its rank is this process's (launcher's env); ranks > 0 fit with it first
            trainer = self.trainers.trainer(None, SharePlan(None), TrainedSamples())
        self.global_rank = trainer.global_rank
        self._followers, self._fitting = None, False
        if self.global_rank > 0:
            return self._follow(trainer)
        try:
            return self._lead()
        except BaseException as error:
            if not self._fitting:
                with contextlib.suppress(Exception):  # the error itself matters more than telling the others
                    self._tell_followers(LeaderWord("abort", error=f"{type(error).__name__}: {error}"))
            raise

    def _follow(self, trainer: L.Trainer) -> RunResult:
        """Ranks > 0: no stream, trigger, selection or files of their own. Each fit trains on rank 0's plan; between
        fits they wait for rank 0's next word (rank 0 replays the stream meanwhile)."""
        while True:
            self._fit_with(trainer)
            self.models_trained += 1
            word = trainer.strategy.broadcast(None, src=0)
            if word.what == "done":
                return RunResult(self.output_dir, word.triggers, word.stream_samples)
            if word.what == "abort":
                raise RuntimeError(f"rank 0 stopped the continual loop: {word.error}")
            trainer = self.trainers.trainer(word.trigger_id, SharePlan(None), TrainedSamples())

    def _stream(self) -> ReplayStream | WatchStream:
        p = self.pipeline
        if p.live:
            return WatchStream(self.datamodule.store, p.start, p.chunk_size, p.poll_seconds, p.idle_timeout)
        return ReplayStream(self.datamodule.store, p.start, p.end, p.chunk_size)

    def _resume(self, registry: ModelRegistry) -> LoopState:
        """The state a killed run left (its trigger, selection, history and model restored), or a fresh one."""
        state = LoopState.load(self.output_dir)
        if state is None:
            return LoopState()
        self.trigger.load_state_dict(state.trigger)
        if state.selection is not None:  # None: a state written before policies all had one
            self.selection.load_state_dict(state.selection)
        self.context.fit_history = list(state.fit_history)
        self.models_trained = state.models_trained
        self.stage_seconds = list(state.stage_seconds)
        if state.intervals:
            registry.load_into(len(state.intervals) - 1, self.model)
        say("resuming at stream position %d after %d trigger(s)", state.position, len(state.intervals))
        return state

    def _lead(self) -> RunResult:
        """Rank 0 (or the only process): replay, decide, fit, and write the registry, loop state and results."""
        os.makedirs(self.output_dir, exist_ok=True)
        registry = ModelRegistry(self.output_dir, self.pipeline.model_storage)
        stream = self._stream()
        self.trigger.setup(self.context)
        state = self._resume(registry)
        self._progress = progress = RunProgress(self.pipeline.progress, None if self.pipeline.live else len(stream))
        progress.position, progress.triggers = state.position, len(state.intervals)
        progress.show("resumed" if state.intervals else "replaying the stream")
        last_end = state.intervals[-1][1] if state.intervals else 0
        for chunk in stream.chunks(state.position):
            for end in self._fires(chunk, last_end):
                state.intervals.append((last_end, end))
                last_end = end
                progress.position = end
                self._run_trigger(registry, stream, state.intervals)
                if self.evaluation is not None and len(stream):  # results grow as the run goes
                    with progress.stage_of("evaluate", f"evaluating trigger {len(state.intervals) - 1}"):
                        self.evaluation.run(self, registry, stream, final=False)
                self._finish_trigger(len(state.intervals) - 1)
            state.position = chunk.start + len(chunk)
            self._save(state)
            progress.replayed(state.position)
        progress.stage = "done"
        result = RunResult(self.output_dir, self._with_seconds(registry.entries()[: len(state.intervals)]),
                           len(stream))
        self._tell_followers(LeaderWord("done", triggers=result.triggers, stream_samples=result.stream_samples))
        if not state.intervals:
            warnings.warn(f"{type(self.trigger).__name__} never fired over {len(stream)} samples: no model was "
                          "trained", RuntimeWarning, stacklevel=3)
            progress.show(f"{type(self.trigger).__name__} never fired over {len(stream):,} samples; no model was "
                          "trained")
        write_costs(self.output_dir, result.triggers)
        if self.evaluation is not None and len(stream):
            progress.stage = "evaluation"
            progress.show("evaluating every model on every window")
            result.evaluation = self.evaluation.run(self, registry, stream)
        progress.show("done")
        return result

    def _save(self, state: LoopState) -> None:
        state.trigger, state.selection = self.trigger.state_dict(), self.selection.state_dict()
        state.fit_history, state.models_trained = self.context.fit_history, self.models_trained
        state.stage_seconds = self.stage_seconds
        state.save(self.output_dir)

    def _with_seconds(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Registry entries with the seconds per stage of each trigger (``{}`` where a restart lost them)."""
        return [{**e, "seconds": self.stage_seconds[i] if i < len(self.stage_seconds) else {}}
                for i, e in enumerate(entries)]

    def _finish_trigger(self, trigger_id: int) -> None:
        """Close the trigger's clock: its seconds per stage, kept in order of triggers."""
        seconds = self._progress.take_seconds()
        del self.stage_seconds[trigger_id:]  # a trigger redone after a restart replaces what was lost
        self.stage_seconds.extend([{}] * (trigger_id - len(self.stage_seconds)))
        self.stage_seconds.append(seconds)
        self._progress.triggers = trigger_id + 1
        self._progress.show(f"trigger {trigger_id} done; seconds " + ", ".join(
            f"{stage} {s:.2f}" for stage, s in seconds.items() if s >= 0.005))

    def _inform(self, chunk: Any, lo: int, hi: int) -> list[int]:
        """The trigger told about samples ``lo:hi`` of ``chunk``: its fire positions, checked, within the chunk."""
        with self._progress.stage_of("decide"):
            fired = np.asarray(self.trigger.inform(chunk.keys[lo:hi], chunk.timestamps[lo:hi], chunk.labels[lo:hi]),
                               dtype=np.int64)
        if len(fired) and (fired.min() < -1 or fired.max() >= hi - lo or np.any(np.diff(fired) <= 0)):
            raise ValueError(f"{type(self.trigger).__name__}.inform returned positions {fired.tolist()}; they must "
                             f"increase within the chunk of {hi - lo} samples (-1: the previous chunk's last sample)")
        return (fired + lo).tolist()

    def _fires(self, chunk: Any, last_end: int):
        """Stream positions (ends of trigger intervals) where the trigger fires in ``chunk``, one at a time: the
        caller trains each model before the next is asked for. A trigger whose decisions use the model
        (``uses_model``) sees nothing past a fire until then: the loop rewinds it to the chunk's unseen part and
        tells it only up to the fire, so its decisions do not depend on the chunk size."""
        lo = 0
        while lo < len(chunk):
            before = self.trigger.state_dict() if self.trigger.uses_model else None
            fired = [p for p in self._inform(chunk, lo, len(chunk)) if chunk.start + p + 1 > last_end]
            if not fired:  # (-1 right after a fire: nothing new since the last trigger)
                return
            first = fired[0]
            if before is not None and first < len(chunk) - 1:  # it decided past the fire with the old model
                self.trigger.load_state_dict(copy.deepcopy(before))
                again = [p for p in self._inform(chunk, lo, first + 1) if chunk.start + p + 1 > last_end]
                if again != [first]:
                    raise RuntimeError(f"{type(self.trigger).__name__} fired at {again} when told the same samples "
                                       f"again after load_state_dict (first {first}); its state_dict must hold "
                                       "everything its decisions depend on")
            elif before is None:  # decisions from the data alone: every fire of this pass stands
                for p in fired:
                    yield chunk.start + p + 1
                return
            last_end = chunk.start + first + 1
            yield last_end
            lo = first + 1

    def _run_trigger(self, registry: ModelRegistry, stream: ReplayStream | WatchStream,
                     intervals: list[tuple[int, int]]) -> None:
        trigger_id = len(intervals) - 1
        progress = self._progress
        with progress.stage_of("select"):
            history = TriggerHistory([stream.keys[a:b] for a, b in intervals])
            keys, weights = self.selection.select(history, self.datamodule.store)
        a, b = intervals[-1]
        existing = registry.get(trigger_id)
        if existing is not None:  # trained before a restart: same seed and data, so reuse it
            registry.load_into(trigger_id, self.model)
            seconds = existing["train_seconds"]
        elif len(keys) == 0:
            warnings.warn(f"trigger {trigger_id}: the selection is empty; the model is kept as it is",
                          RuntimeWarning, stacklevel=2)
            seconds, count, passes = 0.0, 0, 0
        else:
            seconds, trained = self._fit(trigger_id, keys, weights)
            count = len(keys) if trained.count is None else trained.count  # None: the fit ran elsewhere
            passes = trained.passes
        if existing is None:
            with progress.stage_of("store"):
                registry.save(trigger_id, self.model, {
                    "timestamp": int(stream.timestamps[b - 1]), "first_timestamp": int(stream.timestamps[a]),
                    "stream_position": b, "new_samples": b - a, "samples_selected": int(len(keys)),
                    "samples_trained": int(count), "sample_passes": passes,
                    "train_seconds": round(seconds, 4), "selection": type(self.selection).__name__},
                    keys=keys, weights=weights)
        self.models_trained += 1
        if len(keys):
            self.context.fit_history.append((int(len(keys)), float(seconds)))
        self.trigger.inform_new_model(trigger_id, keys, seconds)


def _scoring_seconds(trainer: L.Trainer) -> float:
    """Seconds the trainer's selection callbacks have spent scoring so far (their ``scoring_seconds``)."""
    return float(sum(getattr(c, "scoring_seconds", 0.0) for c in trainer.callbacks))
