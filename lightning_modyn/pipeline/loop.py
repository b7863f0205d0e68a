"""``ContinualLoop``: replay a stream, let a trigger decide when to retrain, select data, fit, keep every model.

At each firing point the loop asks the selection policy for ``(keys, weights)``, sets them on the
``ModynDataModule``, builds a fresh ``Trainer`` from the user's Trainer arguments (any strategy and logger), fits
the model — warm from the previous model or from its initial weights — saves it in the :class:`ModelRegistry` with
its metadata, and tells the trigger about the new model. The loop's own state is written after every chunk, so a
killed run resumes from the last completed chunk and, with seeded fits, ends with the same results.
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import lightning as L
import numpy as np
import torch

from lightning_modyn.data import ModynDataModule
from lightning_modyn.data.dataset import KeyedBatchDataset
from lightning_modyn.data.sampler import KeyBatch
from lightning_modyn.pipeline.registry import ModelRegistry, write_json_atomic
from lightning_modyn.pipeline.stream import ReplayStream
from lightning_modyn.selection import NewData, SelectionPolicy, TriggerHistory
from lightning_modyn.triggers.base import Trigger

STATE_FILE = "loop_state.json"


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

    @property
    def has_model(self) -> bool:
        return self.loop.models_trained > 0

    def batches(self, keys: np.ndarray):
        dm = self.loop.datamodule
        dataset = KeyedBatchDataset(dm.store, dm._decoder())
        size = dm.val_batch_size
        for a in range(0, len(keys), size):
            sel = np.asarray(keys[a : a + size], dtype=np.int64)
            yield dataset[KeyBatch(sel, np.ones(len(sel), np.float32))]

    @torch.no_grad()
    def outputs(self, keys: np.ndarray, module: torch.nn.Module | None = None, embed: bool = False):
        module = module or self.loop.model
        was_training = module.training
        module.eval()
        outs, ys = [], []
        try:
            for batch in self.batches(keys):
                x, y = batch[0], batch[1] if len(batch) > 1 else None
                if embed and not self.has_model and module is self.loop.model:
                    out = _flatten_inputs(x)
                elif embed and hasattr(module, "embed"):
                    out = module.embed(x)
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


class ContinualLoop:
    """Replays a store's stream through a trigger, retraining a model per trigger.

    Args:
        model: The ``LightningModule`` to retrain (unchanged: it only needs ``training_step`` and optimizers).
        datamodule: A :class:`ModynDataModule` over the store (batch size, decode, workers...).
        trigger: When to retrain.
        selection: Which data each fit trains on (default: the data since the last trigger).
        trainer: Keyword arguments of ``lightning.Trainer`` for every fit (e.g. ``max_epochs``, ``strategy``), or a
            callable returning a fresh Trainer.
        output_dir: Where models, the loop state and results go.
        warm_start: Start each fit from the previous model (True) or from the initial weights (False).
        start, end: Replay the samples with ``start <= timestamp < end``.
        chunk_size: Samples the trigger sees per call.
        seed: Fits are seeded with ``seed + trigger_id``.
        evaluation: Optional :class:`~lightning_modyn.evaluation.Evaluation` run at the end.
        progress: Print a line per trigger.
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
    ) -> None:
        if not isinstance(model, L.LightningModule):
            raise TypeError(f"model must be a LightningModule, got {type(model).__name__}")
        if not isinstance(datamodule, ModynDataModule):
            raise TypeError(f"datamodule must be a ModynDataModule, got {type(datamodule).__name__}")
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger must be a lightning_modyn Trigger, got {type(trigger).__name__}")
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
        self.context = LoopContext(self)
        self.models_trained = 0
        self._initial_state = copy.deepcopy(model.state_dict())

    # ------------------------------------------------------------------ pieces
    def _trainer(self, trigger_id: int) -> L.Trainer:
        if callable(self.trainer_args):
            return self.trainer_args()
        args = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                "enable_model_summary": False, **self.trainer_args}
        args.setdefault("default_root_dir", os.path.join(self.output_dir, "trainer", f"trigger-{trigger_id:04d}"))
        return L.Trainer(**args)

    def _fit(self, trigger_id: int, keys: np.ndarray, weights: np.ndarray) -> float:
        if not self.warm_start:
            self.model.load_state_dict(self._initial_state)
        self.datamodule.set_training_set(keys, weights)
        L.seed_everything(self.seed + trigger_id, workers=True, verbose=False)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # a ModynDataModule without a validation set returns no val loader, which Lightning remarks on
            warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
            warnings.filterwarnings("ignore", message="You passed in a `val_dataloader` but have no `validation_step`")
            self._trainer(trigger_id).fit(self.model, datamodule=self.datamodule)
        return time.perf_counter() - t0

    def _save_state(self, position: int, intervals: list[tuple[int, int]]) -> None:
        write_json_atomic(os.path.join(self.output_dir, STATE_FILE), {
            "position": position, "intervals": intervals, "trigger": _jsonable(self.trigger.state_dict()),
            "selection": _jsonable(self.selection.state_dict()) if hasattr(self.selection, "state_dict") else None,
            "fit_history": self.context.fit_history, "models_trained": self.models_trained})

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        """Replay the stream; returns the models trained (resuming a killed run from its last chunk)."""
        os.makedirs(self.output_dir, exist_ok=True)
        registry = ModelRegistry(self.output_dir)
        stream = ReplayStream(self.datamodule.store, self.start, self.end, self.chunk_size)
        self.trigger.setup(self.context)
        position, intervals = 0, []
        state_path = os.path.join(self.output_dir, STATE_FILE)
        if os.path.exists(state_path):
            with open(state_path) as handle:
                state = json.load(handle)
            position, intervals = state["position"], [tuple(i) for i in state["intervals"]]
            self.trigger.load_state_dict(state["trigger"])
            if state.get("selection") is not None and hasattr(self.selection, "load_state_dict"):
                self.selection.load_state_dict(state["selection"])
            self.context.fit_history = [tuple(h) for h in state["fit_history"]]
            self.models_trained = state["models_trained"]
            if intervals:
                registry.load_into(len(intervals) - 1, self.model)
            self._say(f"resuming at stream position {position} after {len(intervals)} trigger(s)")
        last_end = intervals[-1][1] if intervals else 0
        for chunk in stream.chunks(position):
            fired = np.asarray(self.trigger.inform(chunk.keys, chunk.timestamps, chunk.labels), dtype=np.int64)
            if len(fired) and (fired.min() < -1 or fired.max() >= len(chunk) or np.any(np.diff(fired) <= 0)):
                raise ValueError(f"{type(self.trigger).__name__}.inform returned positions {fired.tolist()}; they "
                                 f"must increase within the chunk of {len(chunk)} samples (-1: the previous "
                                 "chunk's last sample)")
            for p in fired.tolist():
                end = chunk.start + p + 1
                if end <= last_end:  # nothing new since the last trigger (e.g. -1 right after a fire)
                    continue
                intervals.append((last_end, end))
                last_end = end
                self._run_trigger(registry, stream, intervals)
            self._save_state(chunk.start + len(chunk), intervals)
        result = RunResult(self.output_dir, registry.entries()[: len(intervals)], len(stream))
        if not intervals:
            warnings.warn(f"{type(self.trigger).__name__} never fired over {len(stream)} samples: no model was "
                          "trained", RuntimeWarning, stacklevel=2)
            self._say(f"the trigger never fired over {len(stream)} samples; no model was trained")
        if self.evaluation is not None:
            result.evaluation = self.evaluation.run(self, registry, stream)
        return result

    def _run_trigger(self, registry: ModelRegistry, stream: ReplayStream, intervals: list[tuple[int, int]]) -> None:
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
                "train_seconds": round(seconds, 4), "selection": type(self.selection).__name__})
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
