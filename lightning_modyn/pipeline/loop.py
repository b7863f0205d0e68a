"""``ContinualLoop``: replay a stream, let a trigger decide when to retrain, select data, fit, keep every model.

At each firing point the loop asks the selection policy for ``(keys, weights)``, sets them on the
``ModynDataModule``, builds a fresh ``Trainer`` from the user's Trainer arguments (any strategy and logger), fits
the model — warm from the previous model or from its initial weights — saves it in the :class:`ModelRegistry` with
its metadata, and tells the trigger about the new model. The loop's own state is written after every chunk, so a
killed run resumes from the last completed chunk and, with seeded fits, ends with the same results.

Under a multi-process strategy only rank 0 replays the stream and decides (trigger, selection); the plan is
broadcast inside each fit (:class:`_SharePlan`) and every rank trains on it. Ranks whose processes outlive a fit
(``strategy="ddp"``, torchrun, SLURM) follow rank 0 from fit to fit (:meth:`ContinualLoop._follow`) and write
nothing; under ``ddp_spawn`` the loop stays in the main process and each fit spawns its workers.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import lightning as L
import numpy as np
import torch

from lightning_modyn._checks import check_seed, check_submodule
from lightning_modyn.data import ModynDataModule
from lightning_modyn._io import write_json_atomic
from lightning_modyn.pipeline.registry import ModelRegistry
from lightning_modyn.pipeline.storage import ModelStorage
from lightning_modyn.pipeline.stream import ReplayStream, WatchStream
from lightning_modyn.selection import NewData, SelectionPolicy, TriggerHistory
from lightning_modyn.triggers.base import Trigger

STATE_FILE = "loop_state.json"

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced: one registry entry per trigger, and where everything was written."""

    output_dir: str
    triggers: list[dict[str, Any]] = field(default_factory=list)
    stream_samples: int = 0
    evaluation: dict[str, Any] | None = None

    @property
    def num_triggers(self) -> int:
        return len(self.triggers)


class LoopContext:
    """What model-aware triggers and the evaluation see: the current model applied to samples by key."""

    def __init__(self, loop: "ContinualLoop") -> None:
        self.loop = loop
        self.fit_history: list[tuple[int, float]] = []
        self._said_outputs = False

    @property
    def has_model(self) -> bool:
        return self.loop.models_trained > 0

    def batches(self, keys: np.ndarray, store: Any = None):
        return self.loop.datamodule.batches(keys, store=store)

    @torch.no_grad()
    def outputs(self, keys: np.ndarray, module: torch.nn.Module | None = None, embed: bool = False,
                store: Any = None):
        """The model's outputs (or embeddings) of samples by key, with their targets; from ``store`` if given
        (held-out data), else from the training store."""
        module = module or self.loop.model
        was_training = module.training
        module.eval()
        outs, ys = [], []
        try:
            for batch in self.batches(keys, store):
                x, y = batch[0], batch[1] if len(batch) > 1 else None
                if embed and not self.has_model and module is self.loop.model:
                    out = _flatten_inputs(x)
                elif embed:
                    out = self._embedding(module, x)
                else:
                    out = module(x)
                outs.append(out.detach().float().reshape(len(batch.keys), -1).cpu())
                if y is not None:
                    ys.append(y.cpu())
        finally:
            module.train(was_training)
        out = torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)
        return out, (torch.cat(ys).numpy() if ys else None)

    def embed(self, keys: np.ndarray) -> np.ndarray:
        return self.outputs(keys, embed=True)[0]

    def _embedding(self, module: torch.nn.Module, x: Any) -> torch.Tensor:
        """The model's embedding of a batch: the output of the loop's ``embedding_layer`` if one is named (a
        forward hook), else ``module.embed(x)`` if the model defines it, else its outputs (logged once)."""
        layer = self.loop.embedding_layer
        if layer is not None:
            captured: list[Any] = []
            handle = module.get_submodule(layer).register_forward_hook(lambda _m, _i, out: captured.append(out))
            try:
                module(x)
            finally:
                handle.remove()
            if not captured:
                raise RuntimeError(f"embedding_layer {layer!r} did not run in {type(module).__name__}.forward; name "
                                   "a module that the forward pass calls")
            out = captured[-1]
            return out[0] if isinstance(out, (tuple, list)) else out
        if hasattr(module, "embed"):
            return module.embed(x)
        if not self._said_outputs:
            self._said_outputs = True
            log.warning("embeddings of %s are its outputs: it defines no embed() and the loop names no "
                        "embedding_layer (e.g. embedding_layer='backbone.fc1' in the pipeline section)",
                        type(module).__name__)
        return module(x)

    def predict(self, keys: np.ndarray, module: torch.nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
        logits, y = self.outputs(keys, module)
        pred = logits.argmax(-1) if logits.shape[1] > 1 else (logits[:, 0] > 0).astype(np.int64)
        return pred, y

    def training_seconds_forecast(self, num_samples: int) -> float:
        if not self.fit_history:
            return 0.0
        samples = np.array([n for n, _ in self.fit_history], float)
        seconds = np.array([s for _, s in self.fit_history], float)
        if len(samples) < 2 or np.ptp(samples) == 0:
            return float(seconds.mean() / max(samples.mean(), 1) * num_samples)
        slope, intercept = np.polyfit(samples, seconds, 1)
        return float(max(0.0, intercept + slope * num_samples))


def _flatten_inputs(x: Any) -> torch.Tensor:
    if isinstance(x, dict):
        return torch.cat([v.reshape(len(v), -1).float() for v in x.values()], dim=1)
    return x.reshape(len(x), -1).float()


@dataclass
class _Plan:
    """What one fit trains: rank 0's decision, the same on every rank once broadcast."""

    trigger_id: int
    seed: int
    keys: np.ndarray
    weights: np.ndarray


@dataclass
class _Word:
    """Rank 0's word to the following ranks between two fits: ``"fit"`` again, ``"done"`` (with the run's
    result) or ``"abort"`` (rank 0 failed outside a fit)."""

    what: str
    trigger_id: int | None = None
    triggers: list[dict[str, Any]] = field(default_factory=list)
    stream_samples: int = 0
    error: str = ""


class _SharePlan(L.Callback):
    """Broadcasts rank 0's :class:`_Plan` at the start of a fit; the other ranks adopt it.

    ``setup`` is the first callback hook that runs with the process group up (the strategy creates it in
    ``setup_environment``) and it runs before the train loader is built (``fit_loop.setup_data``), so a rank that
    joined at this fit without having seen the stream (``strategy="ddp"`` re-executes the script for ranks > 0)
    still trains on exactly what rank 0 chose. Every rank seeds here, at the same point of the fit.
    """

    def __init__(self, plan: _Plan | None) -> None:
        self.plan = plan

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        plan = trainer.strategy.broadcast(self.plan, src=0)
        if plan is None:
            raise RuntimeError("a ContinualLoop fit started without rank 0's plan: rank 0 must run the loop too")
        if trainer.global_rank > 0:
            _adopt_plan(trainer.datamodule, plan)
        self.plan = plan
        L.seed_everything(plan.seed, workers=True, verbose=False)


def _adopt_plan(datamodule: ModynDataModule, plan: _Plan) -> None:
    """Set rank 0's training set and trigger id on this rank's DataModule, inside the fit's setup (before the train
    loader is built, so the fit trains on it)."""
    datamodule.set_training_set(plan.keys, plan.weights)
    datamodule.trigger_id = plan.trigger_id


def check_loop_seed(seed: Any, name: str = "seed") -> int:
    """A loop's seed: fits are seeded with ``seed + trigger_id``, which must be an integer in ``[0, 2**32 - 1]``."""
    return check_seed(name=name, seed=seed, hint=f"(fits are seeded with {name} + trigger_id)")


_LIGHTNING_INFO = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


@contextlib.contextmanager
def lightning_banners(show: bool):
    """Lightning's rank-zero information (accelerator banners, tips) shown, or held back to warnings and above: a
    loop builds a Trainer per fit and would repeat them at every one."""
    if show:
        yield
        return
    loggers = [logging.getLogger(name) for name in _LIGHTNING_INFO]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _keeps_process_group(trainer: L.Trainer) -> bool:
    """Whether this process stays in a process group with other ranks after a fit (``ddp``, torchrun, SLURM), as
    opposed to one process alone (single device) or the main process of ``ddp_spawn`` (its workers are gone)."""
    return trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


class ContinualLoop:
    """Replays a store's stream through a trigger, retraining a model per trigger.

    Args:
        model: The ``LightningModule`` to retrain (unchanged: it only needs ``training_step`` and optimizers).
        datamodule: A :class:`ModynDataModule` over the store (batch size, decode, workers...).
        trigger: When to retrain.
        selection: Which data each fit trains on (default: the data since the last trigger).
        trainer: Keyword arguments of ``lightning.Trainer`` for every fit (e.g. ``max_epochs``, ``strategy``), or a
            callable returning a fresh Trainer. Under a multi-process strategy (``ddp``, ``ddp_spawn``) rank 0
            decides and writes, every rank trains its plan (docs/pipeline.md, "Under DDP").
        output_dir: Where models, the loop state and results go.
        warm_start: Start each fit from the previous model (True) or from the initial weights (False).
        start, end: Replay the samples with ``start <= timestamp < end``.
        chunk_size: Samples the trigger sees per call.
        seed: Fits are seeded with ``seed + trigger_id``.
        evaluation: Optional :class:`~lightning_modyn.evaluation.Evaluation` run at the end.
        progress: Print a line per trigger.
        live: Watch the store for newly appended samples instead of replaying what is there
            (:class:`~lightning_modyn.pipeline.stream.WatchStream`); samples must arrive in time order.
        poll_seconds, idle_timeout: Live mode: how often to look for new data, and how long without any before
            the run ends (None: never).
        embedding_layer: What drift triggers compare: the output of this module of the model (its dotted name,
            e.g. ``"backbone.fc1"``). If None, the model's ``embed(x)`` if it defines one, else its outputs (a
            warning says so).
        model_storage: How the registry keeps each trigger's model (:mod:`~lightning_modyn.pipeline.storage`:
            whole, or as a difference to the model before, compressed or not); default whole, uncompressed.
    """

    def __init__(
        self,
        model: L.LightningModule,
        datamodule: ModynDataModule,
        trigger: Trigger,
        selection: SelectionPolicy | None = None,
        trainer: dict[str, Any] | Callable[[], L.Trainer] | None = None,
        output_dir: str = "runs/continual",
        warm_start: bool = True,
        start: int | None = None,
        end: int | None = None,
        chunk_size: int = 1000,
        seed: int = 0,
        evaluation: Any = None,
        progress: bool = True,
        live: bool = False,
        poll_seconds: float = 1.0,
        idle_timeout: float | None = 60.0,
        embedding_layer: str | None = None,
        model_storage: ModelStorage | None = None,
    ) -> None:
        if not isinstance(model, L.LightningModule):
            raise TypeError(f"model must be a LightningModule, got {type(model).__name__}")
        if not isinstance(datamodule, ModynDataModule):
            raise TypeError(f"datamodule must be a ModynDataModule, got {type(datamodule).__name__}")
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger must be a lightning_modyn Trigger, got {type(trigger).__name__}")
        if selection is not None and not isinstance(selection, SelectionPolicy):
            raise TypeError(f"selection must be a SelectionPolicy (e.g. lightning_modyn.selection.NewData()), got "
                            f"{type(selection).__name__}")
        check_loop_seed(seed)
        if embedding_layer is not None:
            check_submodule(model, embedding_layer, "embedding_layer")
        if live and end is not None:
            raise ValueError("end has no meaning in live mode (the stream has no end yet); stop a live run with "
                             "idle_timeout")
        self.model = model
        self.datamodule = datamodule
        self.trigger = trigger
        self.selection = selection or NewData()
        self.trainer_args = trainer or {"max_epochs": 1}
        self.output_dir = str(output_dir)
        self.warm_start = warm_start
        self.start, self.end, self.chunk_size = start, end, chunk_size
        self.seed = seed
        self.evaluation = evaluation
        self.progress = progress
        self.live, self.poll_seconds, self.idle_timeout = live, poll_seconds, idle_timeout
        self.embedding_layer = embedding_layer
        if model_storage is not None and not isinstance(model_storage, ModelStorage):
            raise TypeError(f"model_storage must be a ModelStorage (FullStorage, IncrementalStorage), got "
                            f"{type(model_storage).__name__}")
        self.model_storage = model_storage
        self.context = LoopContext(self)
        self.models_trained = 0
        self.global_rank = 0
        self._initial_state = copy.deepcopy(model.state_dict())
        self._followers: Any = None  # the strategy that reaches ranks waiting between fits (after a ddp fit)
        self._fitting = False
        self._fits_started = 0

    @property
    def initial_weights(self) -> dict[str, Any]:
        """The model's weights before any fit (a copy): where fits from scratch start, and the evaluation's
        baseline of forward transfer."""
        return copy.deepcopy(self._initial_state)

    # ------------------------------------------------------------------ pieces
    def _trainer(self, trigger_id: int | None, plan: _Plan | None = None) -> L.Trainer:
        """A fresh Trainer from the user's arguments, with :class:`_SharePlan` as its first callback."""
        if callable(self.trainer_args):
            trainer = self.trainer_args()
        else:
            args = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                    "enable_model_summary": False, **self.trainer_args}
            folder = "trainer" if trigger_id is None else os.path.join("trainer", f"trigger-{trigger_id:04d}")
            args.setdefault("default_root_dir", os.path.join(self.output_dir, folder))
            trainer = L.Trainer(**args)
        trainer.callbacks.insert(0, _SharePlan(plan))
        return trainer

    def _fit_with(self, trainer: L.Trainer) -> None:
        """Fit the model (reset to its initial weights first when not warm-starting)."""
        self._fitting = True  # stays True if the fit raises: the other ranks are inside that fit, not waiting
        if not self.warm_start:
            self.model.load_state_dict(self._initial_state)
        with warnings.catch_warnings():
            # a ModynDataModule without a validation set returns no val loader, which Lightning remarks on
            warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
            warnings.filterwarnings("ignore", message="You passed in a `val_dataloader` but have no `validation_step`")
            trainer.fit(self.model, datamodule=self.datamodule)
        self._fitting = False

    def _fit(self, trigger_id: int, keys: np.ndarray, weights: np.ndarray) -> float:
        """Rank 0: fit on its decision, which :class:`_SharePlan` hands to every other rank inside the fit."""
        self.datamodule.set_training_set(keys, weights)
        self.datamodule.trigger_id = trigger_id
        with lightning_banners(self._fits_started == 0):  # Lightning's banners and tips once per run
            self._fits_started += 1
            trainer = self._trainer(trigger_id, _Plan(trigger_id, self.seed + trigger_id, keys, weights))
            self._tell_followers(_Word("fit", trigger_id=trigger_id))  # last: what fails before it aborts them
            t0 = time.perf_counter()
            self._fit_with(trainer)
            seconds = time.perf_counter() - t0
        if _keeps_process_group(trainer):
            self._followers = trainer.strategy
        return seconds

    def _tell_followers(self, word: _Word) -> None:
        """Rank 0: tell the ranks waiting between fits what comes next (no-op when none are waiting). After "done"
        or "abort" they have left the loop, so nothing more is sent."""
        followers = self._followers
        if word.what != "fit":
            self._followers = None
        if followers is not None:
            followers.broadcast(word, src=0)

    def _save_state(self, position: int, intervals: list[tuple[int, int]]) -> None:
        write_json_atomic(os.path.join(self.output_dir, STATE_FILE), {
            "position": position, "intervals": intervals, "trigger": _jsonable(self.trigger.state_dict()),
            "selection": _jsonable(self.selection.state_dict()),
            "fit_history": self.context.fit_history, "models_trained": self.models_trained})

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        """Replay the stream; returns the models trained (resuming a killed run from its last chunk).

        Under a multi-process strategy rank 0 runs the loop and every other rank follows it; all ranks return the
        same triggers, and ``evaluation`` is set on rank 0 only (``loop.global_rank`` says which rank this is).
        """
        with lightning_banners(False):  # the first fit shows them
            trainer = self._trainer(None)  # its global rank is the rank of this process (the launcher's env)
        self.global_rank = trainer.global_rank
        self._followers, self._fitting = None, False
        if self.global_rank > 0:
            return self._follow(trainer)
        try:
            return self._lead()
        except BaseException as error:
            if not self._fitting:
                with contextlib.suppress(Exception):  # the error itself matters more than telling the others
                    self._tell_followers(_Word("abort", error=f"{type(error).__name__}: {error}"))
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
            trainer = self._trainer(word.trigger_id)

    def _stream(self) -> ReplayStream | WatchStream:
        if self.live:
            return WatchStream(self.datamodule.store, self.start, self.chunk_size, self.poll_seconds,
                               self.idle_timeout)
        return ReplayStream(self.datamodule.store, self.start, self.end, self.chunk_size)

    def _lead(self) -> RunResult:
        """Rank 0 (or the only process): replay, decide, fit, and write the registry, loop state and results."""
        os.makedirs(self.output_dir, exist_ok=True)
        registry = ModelRegistry(self.output_dir, self.model_storage)
        stream = self._stream()
        self.trigger.setup(self.context)
        position, intervals = 0, []
        state_path = os.path.join(self.output_dir, STATE_FILE)
        if os.path.exists(state_path):
            with open(state_path) as handle:
                state = json.load(handle)
            position, intervals = state["position"], [tuple(i) for i in state["intervals"]]
            self.trigger.load_state_dict(state["trigger"])
            if state.get("selection") is not None:  # None: a state written before policies all had one
                self.selection.load_state_dict(state["selection"])
            self.context.fit_history = [tuple(h) for h in state["fit_history"]]
            self.models_trained = state["models_trained"]
            if intervals:
                registry.load_into(len(intervals) - 1, self.model)
            self._say(f"resuming at stream position {position} after {len(intervals)} trigger(s)")
        last_end = intervals[-1][1] if intervals else 0
        for chunk in stream.chunks(position):
            for end in self._fires(chunk, last_end):
                intervals.append((last_end, end))
                last_end = end
                self._run_trigger(registry, stream, intervals)
                if self.evaluation is not None and len(stream):  # results grow as the run goes
                    self.evaluation.run(self, registry, stream, final=False)
            self._save_state(chunk.start + len(chunk), intervals)
        result = RunResult(self.output_dir, registry.entries()[: len(intervals)], len(stream))
        self._tell_followers(_Word("done", triggers=result.triggers, stream_samples=result.stream_samples))
        if not intervals:
            warnings.warn(f"{type(self.trigger).__name__} never fired over {len(stream)} samples: no model was "
                          "trained", RuntimeWarning, stacklevel=3)
            self._say(f"the trigger never fired over {len(stream)} samples; no model was trained")
        if self.evaluation is not None and len(stream):
            result.evaluation = self.evaluation.run(self, registry, stream)
        return result

    def _inform(self, chunk: Any, lo: int, hi: int) -> list[int]:
        """The trigger told about samples ``lo:hi`` of ``chunk``: its fire positions, checked, within the chunk."""
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
            seconds = 0.0
        else:
            seconds = self._fit(trigger_id, keys, weights)
        if existing is None:
            registry.save(trigger_id, self.model, {
                "timestamp": int(stream.timestamps[b - 1]), "first_timestamp": int(stream.timestamps[a]),
                "stream_position": b, "new_samples": b - a, "samples_trained": int(len(keys)),
                "train_seconds": round(seconds, 4), "selection": type(self.selection).__name__},
                keys=keys, weights=weights)
        self.models_trained += 1
        if len(keys):
            self.context.fit_history.append((int(len(keys)), float(seconds)))
        self.trigger.inform_new_model(trigger_id, keys, seconds)
        self._say(f"trigger {trigger_id}: stream position {b}, timestamp {int(stream.timestamps[b - 1])}, "
                  f"trained on {len(keys):,} samples in {seconds:.1f}s")

    def _say(self, text: str) -> None:
        if self.progress:
            print(f"[lightning-modyn] {text}", flush=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
