"""Evaluate every model on every window: the evaluation matrix, the composite model over time, and reports.

The *currently active* composite model of a window is the newest model whose trigger point lies before the
window starts (it is what would serve requests then); before the first trigger there is none. Forgetting and
backward transfer are read off the matrix.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import warnings
from typing import Any, Sequence

import numpy as np
from lightning.pytorch.loggers import Logger
from torchmetrics import Metric

from lightning_modyn._checks import check_choice, check_int
from lightning_modyn.evaluation.heldout import EvaluationDataset
from lightning_modyn.evaluation.metrics import metric_specs
from lightning_modyn.evaluation.plots import TIME_UNITS, plot_results, timeline_of
from lightning_modyn.evaluation.windows import (
    BetweenTriggersWindows,
    PeriodicWindows,
    SlicingWindows,
    StaticWindows,
    TriggerOffsetWindows,
)
from lightning_modyn._io import write_json_atomic

def _classes(configured: int | None, scores: np.ndarray, y: np.ndarray) -> int:
    """How many classes a window's metrics count: ``num_classes`` if configured, else the model's outputs (2 for
    one logit); targets outside that range are an error naming both."""
    outputs = scores.shape[1] if scores.ndim == 2 else 1
    classes = configured if configured is not None else (outputs if outputs > 1 else 2)
    if configured is not None and outputs > 1 and outputs != configured:
        raise ValueError(f"evaluation num_classes={configured}, but the model has {outputs} outputs")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        source = f"num_classes={configured}" if configured is not None else f"the model's {outputs} output(s)"
        raise ValueError(f"evaluation: targets range over [{int(y.min())}, {int(y.max())}], outside the {classes} "
                         f"classes of {source}; set Evaluation(num_classes=...) or check the decoded labels")
    return classes


class Evaluation:
    """Evaluate every trained model on windows of the replayed stream after a run.

    Args:
        windows: A windows object (default: ``SlicingWindows(every)``; see :mod:`lightning_modyn.evaluation.windows`
            for periodic, static, between-trigger and trigger-offset windows).
        every: Window length when ``windows`` is not given.
        metrics: Names (``"accuracy"``, ``"accuracy@5"``, ``"f1"``, ``"f1_micro"``, ``"f1_macro"``, ``"f1_weighted"``,
            ``"f1_binary"``, ``"roc_auc"``) or ``torchmetrics.Metric`` objects (``class_path`` in a recipe), see
            :mod:`lightning_modyn.evaluation.metrics`.
        plots: Write PNG plots (accuracy over time with trigger marks; the matrix heatmap).
        logger: A Lightning logger (e.g. ``CSVLogger``, ``TensorBoardLogger``) that also receives the metrics:
            per window (step = window index) the currently active and currently trained models' values, then
            the summary.
        num_classes: Classes the metrics count; default: the model's outputs (2 for one logit). Targets outside
            them, or a model with another number of outputs, are an error naming both.
        datasets: :class:`~lightning_modyn.evaluation.heldout.EvaluationDataset` objects (held-out samples: another
            store, or a time range the loop does not replay), each sliced by the same windows; their results go to
            ``results.json`` under ``datasets`` and to the plots and CSV with their names.
        time_unit: The unit of the plots' time axes (``"second"``, ``"minute"``, ``"hour"``, ``"day"``,
            ``"week"``; timestamps are seconds); default: the unit of the store's ``timeline`` attribute (the
            bundled generators write one, with the stream's distribution shifts, which the plots mark), else raw
            timestamps.

    Two composite models are reported per window: the *currently active* model (the last one trained before the
    window starts: what a deployment would serve) and the *currently trained* model (the first one whose
    trigger comes at or after the window's start: the model that learns from that window's data). The summary
    holds, per metric, the active composite's mean, the mean forgetting and the backward transfer (the mean over
    windows of the final model's value minus the currently trained model's value, after Lopez-Paz & Ranzato,
    "Gradient Episodic Memory for Continual Learning", NeurIPS 2017).
    """

    def __init__(self, windows: SlicingWindows | PeriodicWindows | StaticWindows | BetweenTriggersWindows
                 | TriggerOffsetWindows | None = None, every: int | None = None,
                 metrics: Sequence[str | Metric] = ("accuracy",), plots: bool = True, logger: Logger | None = None,
                 num_classes: int | None = None, datasets: list[EvaluationDataset] | None = None,
                 time_unit: str | None = None) -> None:
        if windows is None and every is None:
            raise ValueError("give windows=... or every=<window length>")
        self.specs = metric_specs(metrics)
        if num_classes is not None:
            check_int("num_classes", num_classes, 2)
        self.num_classes = num_classes
        self.datasets = list(datasets or [])
        for dataset in self.datasets:
            if not isinstance(dataset, EvaluationDataset):
                raise TypeError(f"datasets must hold EvaluationDataset objects, got {type(dataset).__name__}")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"evaluation datasets need distinct names, got {names}")
        if time_unit is not None:
            check_choice("time_unit", time_unit, TIME_UNITS, hint="(or None: the store's timeline)")
        self.time_unit = time_unit
        self.timeline: dict[str, Any] = timeline_of(time_unit, None)  # with the store's, once a run gives one
        self.windows = windows or SlicingWindows(every)
        self.metrics = tuple(spec.name for spec in self.specs)
        self.plots = plots
        self.logger = logger

    def run(self, loop, registry, stream, final: bool = True) -> dict[str, Any]:
        """Evaluate every model in ``registry`` on the stream's windows and every dataset's, write the results
        (``final``: also the plots and the logger). Values already measured (an earlier call of this run, or of
        a run that was killed: ``<output_dir>/evaluation/``) are read back, not measured again, so calling this
        after every fit costs only the new model's windows."""
        self._cache = _Cache(os.path.join(loop.output_dir, "evaluation"))
        seconds = getattr(loop, "stage_seconds", [])  # per trigger and stage, where the loop measures them
        entries = [{**e, "seconds": seconds[i]} if i < len(seconds) else e for i, e in enumerate(registry.entries())]
        first, last = int(stream.timestamps[0]), int(stream.timestamps[-1])
        result = self._evaluate(loop, registry, entries, stream.keys, stream.timestamps, None, "stream", (first, last))
        if result is None:
            return {}
        result = {"triggers": entries, **result,
                  "total_train_seconds": float(sum(e["train_seconds"] for e in entries))}
        if self.datasets:
            result["datasets"] = {}
            training_store = loop.datamodule.store
            for dataset in self.datasets:
                store, opened = dataset.open(training_store)
                try:
                    keys, ts = dataset.samples(store)
                    if store is training_store and np.isin(keys, stream.keys).any():
                        warnings.warn(f"evaluation dataset {dataset.name!r} shares samples with the replayed "
                                      "stream: models trained on them, so it is not held out", RuntimeWarning,
                                      stacklevel=2)
                    # windows laid over both time ranges, so that they coincide with the stream's where they meet
                    span = (min(first, int(ts[0])), max(last, int(ts[-1])))
                    found = self._evaluate(loop, registry, entries, keys, ts, store, dataset.name, span)
                finally:
                    if opened:
                        store.close()
                if found is not None:
                    found.pop("trained_model"), found.pop("trained_composite")  # in-sample only on the stream
                    result["datasets"][dataset.name] = found
        self.timeline = timeline_of(self.time_unit, loop.datamodule.store.attributes.get("timeline"))
        self.write(loop.output_dir, result, plots=final and self.plots)
        if final and self.logger is not None:
            self.log(result)
        return result

    def _evaluate(self, loop, registry, entries: list[dict], keys: np.ndarray, timestamps: np.ndarray, store: Any,
                  name: str, span: tuple[int, int]) -> dict[str, Any] | None:
        """Every model on every window (laid over ``span``) of one set of samples (the stream, or a dataset)."""
        spans = self.windows.windows(span[0], span[1], [int(e["timestamp"]) for e in entries])
        masks = [(timestamps >= a) & (timestamps < b) for a, b in spans]
        kept = [i for i, m in enumerate(masks) if m.any()]
        if not kept:
            if not spans and not entries:  # windows placed around triggers, and none fired
                warnings.warn("no trigger fired, so there are no windows around triggers to evaluate on",
                              RuntimeWarning, stacklevel=3)
                return None
            raise ValueError(f"every evaluation window of {name!r} is empty; choose windows inside its time range "
                             f"[{int(timestamps[0])}, {int(timestamps[-1])}]")
        spans = [spans[i] for i in kept]
        masks = [masks[i] for i in kept]
        matrix = {m: np.full((len(entries), len(spans)), np.nan) for m in self.metrics}
        baseline = {m: np.full(len(spans), np.nan) for m in self.metrics}
        scratch = copy.deepcopy(loop.model)

        def measure(into: dict[str, np.ndarray], at: tuple, model: str, load: Any) -> None:
            loaded = False
            for j, (mask, (a, b)) in enumerate(zip(masks, spans)):
                cell = f"{name}|{a}|{b}|{int(mask.sum())}|{self.num_classes}"
                values = self._cache.get(model, cell)
                if any(spec.name not in values for spec in self.specs):
                    if not loaded:
                        load()
                        loaded = True
                    scores, y = loop.context.outputs(keys[mask], scratch, store=store)
                    if y is None:
                        raise ValueError("evaluation needs targets: the DataModule's decode returns no labels")
                    num_classes = _classes(self.num_classes, scores, y)
                    values = {spec.name: spec.compute(scores, y, num_classes) for spec in self.specs}
                    self._cache.put(model, cell, values)
                for spec in self.specs:
                    into[spec.name][(*at, j)] = values[spec.name]
            self._cache.flush(model)

        # the untrained model: the baseline of forward transfer
        measure(baseline, (), "initial", lambda: scratch.load_state_dict(loop.initial_weights))
        for i, entry in enumerate(entries):
            measure(matrix, (i,), f"trigger-{entry['trigger_id']:04d}",
                    lambda t=entry["trigger_id"]: registry.load_into(t, scratch))
        trigger_ts = [e["timestamp"] for e in entries]
        active = [int(np.searchsorted(trigger_ts, a, side="left")) - 1 for a, _ in spans]
        composite = {m: [None if k < 0 else float(matrix[m][k, j]) for j, k in enumerate(active)]
                     for m in self.metrics}
        trained = [int(np.searchsorted(trigger_ts, a, side="left")) for a, _ in spans]
        trained = [k if k < len(entries) else -1 for k in trained]
        trained_composite = {m: [None if k < 0 else float(matrix[m][k, j]) for j, k in enumerate(trained)]
                             for m in self.metrics}
        return {
            "windows": [{"start": a, "end": b, "samples": int(mask.sum())} for (a, b), mask in zip(spans, masks)],
            "matrix": {m: matrix[m].tolist() for m in self.metrics},
            "active_model": active,
            "composite": composite,
            "trained_model": trained,
            "trained_composite": trained_composite,
            "baseline": {m: baseline[m].tolist() for m in self.metrics},
            "summary": {m: _summary(matrix[m], composite[m], trained, active, baseline[m]) for m in self.metrics},
        }

    def log(self, result: dict[str, Any]) -> None:
        """Send the per-window composites and the summary to the Lightning logger."""
        for j in range(len(result["windows"])):
            values = {f"eval/{m}_active": result["composite"][m][j] for m in self.metrics}
            values.update({f"eval/{m}_trained": result["trained_composite"][m][j] for m in self.metrics})
            values = {k: v for k, v in values.items() if v is not None}
            if values:
                self.logger.log_metrics(values, step=j)
        for name, part in result.get("datasets", {}).items():
            for j in range(len(part["windows"])):
                values = {f"eval/{name}/{m}_active": part["composite"][m][j] for m in self.metrics}
                values = {k: v for k, v in values.items() if v is not None}
                if values:
                    self.logger.log_metrics(values, step=j)
        summary = {f"eval/{m}_{k}": v for m in self.metrics for k, v in result["summary"][m].items() if v is not None}
        summary.update({f"eval/{name}/{m}_{k}": v for name, part in result.get("datasets", {}).items()
                        for m in self.metrics for k, v in part["summary"][m].items() if v is not None})
        summary["eval/triggers"] = len(result["triggers"])
        summary["eval/total_train_seconds"] = result["total_train_seconds"]
        self.logger.log_metrics(summary, step=len(result["windows"]))
        self.logger.save()

    def write(self, out: str, result: dict[str, Any], plots: bool | None = None) -> None:
        write_json_atomic(os.path.join(out, "results.json"), result)
        with open(os.path.join(out, "results.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["dataset", "model_trigger", "window_start", "window_end", "metric", "value", "active"])
            for name, part in [("stream", result), *result.get("datasets", {}).items()]:
                for m, rows in part["matrix"].items():
                    for i, row in enumerate(rows):
                        for j, value in enumerate(row):
                            w = part["windows"][j]
                            writer.writerow([name, result["triggers"][i]["trigger_id"], w["start"], w["end"], m,
                                             value, int(part["active_model"][j] == i)])
        if self.plots if plots is None else plots:
            plot_results(out, result, self.timeline)


class _Cache:
    """Measured values per model (``initial`` or ``trigger-NNNN``) and window, one JSON file per model under
    ``folder``: what a run already evaluated, kept across calls and across a restart."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.values: dict[str, dict[str, dict[str, float]]] = {}
        self.dirty: set[str] = set()

    def _path(self, model: str) -> str:
        return os.path.join(self.folder, f"{model}.json")

    def get(self, model: str, cell: str) -> dict[str, float]:
        if model not in self.values:
            path = self._path(model)
            try:
                with open(path) as handle:
                    self.values[model] = json.load(handle)
            except (FileNotFoundError, ValueError):  # none yet, or damaged: measured again
                self.values[model] = {}
        return self.values[model].get(cell, {})

    def put(self, model: str, cell: str, values: dict[str, float]) -> None:
        self.values[model][cell] = {**self.values[model].get(cell, {}), **values}
        self.dirty.add(model)

    def flush(self, model: str) -> None:
        if model in self.dirty:
            os.makedirs(self.folder, exist_ok=True)
            write_json_atomic(self._path(model), self.values[model])
            self.dirty.discard(model)


def _summary(matrix: np.ndarray, composite: list, trained: list[int], active: list[int],
             baseline: np.ndarray) -> dict[str, float | None]:
    values = [v for v in composite if v is not None]
    # forward transfer: the active model (trained on data before the window) against the untrained model
    forward = [matrix[k, j] - baseline[j] for j, k in enumerate(active) if k >= 0]
    n = matrix.shape[0]
    # forgetting: how much each model's best accuracy on a window drops by the final model
    diag_best = [np.nanmax(matrix[: n, j]) - matrix[n - 1, j] for j in range(matrix.shape[1])] if n else []
    # backward transfer: the final model on each window against the model that learned from that window
    transfer = [matrix[n - 1, j] - matrix[k, j] for j, k in enumerate(trained) if 0 <= k < n - 1]
    return {"composite_mean": float(np.mean(values)) if values else None,
            # windows before the first model count nowhere in composite_mean: say how many were covered
            "composite_windows": len(values), "composite_coverage": len(values) / len(composite) if composite else None,
            "mean_forgetting": float(np.nanmean(diag_best)) if len(diag_best) else None,
            "backward_transfer": float(np.mean(transfer)) if transfer else None,
            "forward_transfer": float(np.mean(forward)) if forward else None}
