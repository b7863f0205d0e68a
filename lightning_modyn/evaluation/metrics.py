"""What an evaluation measures on a window: a metric named by a short string, or any torchmetrics metric.

Names: ``"accuracy"`` (top-1), ``"accuracy@k"`` (the target among the ``k`` highest outputs), ``"f1"`` (of class 1
for two classes, macro for more), ``"f1_binary"``, ``"f1_micro"``, ``"f1_macro"``, ``"f1_weighted"`` (the last
three over every class, two included), ``"roc_auc"`` (from probabilities: for two outputs the softmax
probability of class 1, for one logit its sigmoid, for more one-vs-rest over the softmax). A
``torchmetrics.Metric`` instance (``class_path`` in a recipe) is given the probabilities (``(N, C)`` softmax, or
``(N,)`` for one logit) and the integer targets of each window, and must compute one number.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

_TOP_K = re.compile(r"accuracy@([1-9][0-9]*)")
NAMES = ("accuracy", "accuracy@k", "f1", "f1_binary", "f1_micro", "f1_macro", "f1_weighted", "roc_auc")


@dataclass
class MetricSpec:
    """One metric of an evaluation: its name in results, and how a window's outputs and targets become a value."""

    name: str
    compute: Callable[[np.ndarray, np.ndarray, int], float]


def metric_specs(metrics: Any) -> list[MetricSpec]:
    """The metrics of an evaluation, checked: each a name (see the module docstring) or a torchmetrics metric;
    names must be distinct."""
    if isinstance(metrics, (str, bytes)) or not hasattr(metrics, "__iter__"):
        raise ValueError(f"metrics must be a list of names or torchmetrics metrics, got {metrics!r}")
    specs = [_spec(m) for m in metrics]
    names = [s.name for s in specs]
    if not specs or len(set(names)) != len(names):
        raise ValueError(f"metrics must be a non-empty list of distinct metrics, got {names}")
    return specs


def _spec(metric: Any) -> MetricSpec:
    import torchmetrics

    if isinstance(metric, torchmetrics.Metric):
        return MetricSpec(type(metric).__name__, lambda scores, y, classes, m=metric: _torchmetric(m, scores, y))
    if not isinstance(metric, str):
        raise ValueError(f"a metric is a name ({', '.join(NAMES)}) or a torchmetrics.Metric, got {metric!r}")
    top = _TOP_K.fullmatch(metric)
    if metric == "accuracy" or top:
        k = int(top.group(1)) if top else 1
        return MetricSpec(metric, lambda scores, y, classes: _top_k_accuracy(scores, y, k))
    if metric in ("f1", "f1_binary", "f1_micro", "f1_macro", "f1_weighted"):
        average = None if metric == "f1" else metric[3:]
        return MetricSpec(metric, lambda scores, y, classes: _f1(scores, y, classes, average))
    if metric == "roc_auc":
        return MetricSpec(metric, _roc_auc)
    raise ValueError(f"unknown metric {metric!r}; choose from {NAMES} (k a whole number) or give a "
                     "torchmetrics.Metric (class_path in a recipe)")


def predictions(scores: np.ndarray) -> np.ndarray:
    """The predicted class of every row: the largest output, or for one logit whether it is above 0."""
    return scores.argmax(-1) if scores.shape[1] > 1 else (scores[:, 0] > 0).astype(np.int64)


def probabilities(scores: np.ndarray) -> torch.Tensor:
    """Softmax probabilities ``(N, C)`` of several outputs, or the sigmoid ``(N,)`` of one logit."""
    s = torch.from_numpy(np.ascontiguousarray(scores)).float()
    return s.softmax(-1) if s.shape[1] > 1 else s.reshape(-1).sigmoid()


def _top_k_accuracy(scores: np.ndarray, y: np.ndarray, k: int) -> float:
    if scores.shape[1] == 1:
        if k > 1:
            raise ValueError(f"accuracy@{k} needs a model with several outputs; this one has one logit")
        return float(np.mean(predictions(scores) == y))
    if k > scores.shape[1]:
        raise ValueError(f"accuracy@{k}: the model has only {scores.shape[1]} outputs")
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k > 1 else scores.argmax(1)[:, None]
    return float(np.mean((top == y[:, None]).any(axis=1)))


def _f1(scores: np.ndarray, y: np.ndarray, classes: int, average: str | None) -> float:
    """F1 with ``average`` ``"binary"`` (class 1; two classes only), ``"micro"``, ``"macro"``, ``"weighted"`` over
    every class, or None: binary for two classes, macro for more."""
    import torchmetrics.functional as tmf

    p, t = torch.from_numpy(predictions(scores)), torch.from_numpy(y.astype(np.int64))
    if average is None:
        average = "binary" if classes <= 2 else "macro"
    if average == "binary":
        if classes > 2:
            raise ValueError(f"f1_binary needs two classes, the evaluation counts {classes}; use f1_macro")
        return float(tmf.f1_score(p, t, task="binary"))
    return float(tmf.f1_score(p, t, task="multiclass", num_classes=max(classes, 2), average=average))


def _roc_auc(scores: np.ndarray, y: np.ndarray, classes: int) -> float:
    import torchmetrics.functional as tmf

    t = torch.from_numpy(y.astype(np.int64))
    prob = probabilities(scores)
    if classes <= 2:  # the probability of class 1
        return float(tmf.auroc(prob[:, 1] if prob.ndim == 2 else prob, t, task="binary"))
    return float(tmf.auroc(prob, t, task="multiclass", num_classes=classes))


def _torchmetric(metric: Any, scores: np.ndarray, y: np.ndarray) -> float:
    m = copy.deepcopy(metric)  # a fresh state per window
    m.reset()
    m.update(probabilities(scores), torch.from_numpy(y.astype(np.int64)))
    value = m.compute()
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError(f"metric {type(metric).__name__} computed {value!r}; an evaluation metric must compute "
                         "one number (e.g. average='macro')")
    return float(value)
