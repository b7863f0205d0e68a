"""Evaluation metrics by hand, and how many classes they count."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_modyn import ModynDataModule, SampleStore
from lightning_modyn.evaluation import Evaluation
from lightning_modyn.evaluation.evaluate import _classes, _metric
from lightning_modyn.pipeline import ContinualLoop
from lightning_modyn.triggers import DataAmountTrigger


def metric(name, scores, y, classes):
    scores, y = np.asarray(scores, np.float32), np.asarray(y)
    pred = scores.argmax(-1) if scores.shape[1] > 1 else (scores[:, 0] > 0).astype(np.int64)
    return _metric(name, pred, scores, y, classes)


def test_binary_roc_auc_ranks_the_probability_of_class_1_not_its_raw_logit():
    scores, y = [[5, 4], [0, 1], [3, 3.5], [-2, -2.5]], [1, 0, 1, 0]
    # p(class 1) = 0.27, 0.73, 0.62, 0.38: of the four (positive, negative) pairs only (0.62, 0.38) is ordered
    assert metric("roc_auc", scores, y, 2) == pytest.approx(0.25)
    one_logit = [[2.0], [-1.0], [0.5], [1.0]]  # one output: its sigmoid, same order as the logit
    assert metric("roc_auc", one_logit, [1, 0, 1, 0], 2) == pytest.approx(0.75)  # only (0.5, 1.0) out of order
    three = [[3, 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0]]
    assert metric("roc_auc", three, [0, 1, 2, 0], 3) == pytest.approx(1.0)
    assert metric("accuracy", three, [0, 1, 2, 1], 3) == pytest.approx(0.75)


def test_the_classes_come_from_the_model_or_the_config_and_targets_outside_them_are_refused():
    assert _classes(None, np.zeros((4, 3)), np.array([0, 2])) == 3
    assert _classes(None, np.zeros((4, 1)), np.array([0, 1])) == 2
    assert _classes(5, np.zeros((4, 1)), np.array([4])) == 5
    with pytest.raises(ValueError, match=r"targets range over \[0, 3\], outside the 3 classes of the model's 3 "
                                         r"output\(s\); set Evaluation\(num_classes=...\)"):
        _classes(None, np.zeros((4, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="evaluation num_classes=4, but the model has 3 outputs"):
        _classes(4, np.zeros((4, 3)), np.array([0]))
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 2, got 1"):
        Evaluation(every=10, num_classes=1)


class ThreeClasses(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 3)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_records_appended_without_labels_are_evaluated_with_the_models_classes(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.zeros(600, [("label", "<i4"), ("x", "<f4", (2,))])
    rows["x"] = rng.normal(size=(600, 2))
    rows["label"] = (rows["x"][:, 0] > 0).astype(np.int32) + (rows["x"][:, 1] > 0)  # classes 0, 1, 2
    with SampleStore.create(tmp_path / "s") as store:
        store.append_records(rows, timestamps=np.arange(600))  # no labels= : the catalog has none
    loop = ContinualLoop(ThreeClasses(), ModynDataModule(str(tmp_path / "s"), batch_size=50), DataAmountTrigger(200),
                         trainer={"max_epochs": 2}, output_dir=str(tmp_path / "out"), progress=False,
                         evaluation=Evaluation(every=100, metrics=("accuracy", "f1", "roc_auc"), plots=False))
    result = loop.run()
    summary = result.evaluation["summary"]
    assert result.num_triggers == 3 and summary["accuracy"]["composite_mean"] > 0.6
    assert 0.5 < summary["roc_auc"]["composite_mean"] <= 1.0
