"""Evaluation metrics by hand, and how many classes they count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_modyn import ModynDataModule, SampleStore
from lightning_modyn.evaluation import Evaluation
from lightning_modyn.evaluation.evaluate import _classes
from lightning_modyn.evaluation.metrics import metric_specs
from lightning_modyn.pipeline import ContinualLoop
from lightning_modyn.triggers import DataAmountTrigger
from test_pipeline import Classifier


def metric(name, scores, y, classes):
    (spec,) = metric_specs([name])
    return spec.compute(np.asarray(scores, np.float32), np.asarray(y), classes)


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


def test_records_appended_without_labels_are_evaluated_with_the_models_classes(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.zeros(600, [("label", "<i4"), ("x", "<f4", (2,))])
    rows["x"] = rng.normal(size=(600, 2))
    rows["label"] = (rows["x"][:, 0] > 0).astype(np.int32) + (rows["x"][:, 1] > 0)  # classes 0, 1, 2
    with SampleStore.create(tmp_path / "s") as store:
        store.append_records(rows, timestamps=np.arange(600))  # no labels= : the catalog has none
    loop = ContinualLoop(Classifier(3), ModynDataModule(str(tmp_path / "s"), batch_size=50), DataAmountTrigger(200),
                         trainer={"max_epochs": 2}, output_dir=str(tmp_path / "out"), progress=False,
                         evaluation=Evaluation(every=100, metrics=("accuracy", "f1", "roc_auc"), plots=False))
    result = loop.run()
    summary = result.evaluation["summary"]
    assert result.num_triggers == 3 and summary["accuracy"]["composite_mean"] > 0.6
    assert 0.5 < summary["roc_auc"]["composite_mean"] <= 1.0


def test_top_k_accuracy_and_the_f1_averages_by_hand():
    scores = [[0.9, 0.5, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]]
    y = [1, 2, 2, 1]  # top-1 right on rows 1 and 3; the second best is right on row 0
    assert metric("accuracy", scores, y, 3) == pytest.approx(0.5)
    assert metric("accuracy@2", scores, y, 3) == pytest.approx(0.75)
    assert metric("accuracy@3", scores, y, 3) == pytest.approx(1.0)
    # predictions 0, 2, 0, 1 against 1, 2, 2, 1: class 0 F1 0, class 1 F1 2/3, class 2 F1 2/3; supports 0, 2, 2
    assert metric("f1_macro", scores, y, 3) == pytest.approx((0 + 2 / 3 + 2 / 3) / 3)
    assert metric("f1_weighted", scores, y, 3) == pytest.approx((2 * 2 / 3 + 2 * 2 / 3) / 4)
    assert metric("f1_micro", scores, y, 3) == pytest.approx(0.5)
    assert metric("f1", scores, y, 3) == metric("f1_macro", scores, y, 3)
    binary = [[2.0], [-1.0], [0.5], [-0.5]]  # predictions 1, 0, 1, 0
    assert metric("f1", binary, [1, 1, 1, 0], 2) == pytest.approx(0.8)  # of class 1: P 1, R 2/3
    assert metric("f1_binary", binary, [1, 1, 1, 0], 2) == pytest.approx(0.8)
    assert metric("f1_macro", binary, [1, 1, 1, 0], 2) == pytest.approx((0.8 + 2 / 3) / 2)


@pytest.mark.parametrize("metrics, match", [
    (["accuracy@0"], "unknown metric 'accuracy@0'"),
    (["top5"], r"unknown metric 'top5'; choose from \('accuracy', 'accuracy@k'"),
    (["accuracy", "accuracy"], r"distinct metrics, got \['accuracy', 'accuracy'\]"),
    ("accuracy", "metrics must be a list of names or torchmetrics metrics"),
    ([3], "a metric is a name .* or a torchmetrics.Metric, got 3"),
])
def test_bad_metrics_are_refused(metrics, match):
    with pytest.raises(ValueError, match=match):
        Evaluation(every=10, metrics=metrics)


def test_a_torchmetrics_metric_and_forward_transfer(tmp_path):
    from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

    rng = np.random.default_rng(0)
    rows = np.zeros(600, [("label", "<i4"), ("x", "<f4", (2,))])
    rows["x"] = rng.normal(size=(600, 2))
    rows["label"] = (rows["x"][:, 0] > 0).astype(np.int32) + (rows["x"][:, 1] > 0)
    with SampleStore.create(tmp_path / "s") as store:
        store.append_records(rows, timestamps=np.arange(600), labels="label")
    torch.manual_seed(0)
    evaluation = Evaluation(every=100, plots=False, metrics=["accuracy", "accuracy@2", MulticlassAccuracy(3, average="micro"),
                                                             MulticlassCalibrationError(3)])
    loop = ContinualLoop(Classifier(3), ModynDataModule(str(tmp_path / "s"), batch_size=50), DataAmountTrigger(200),
                         trainer={"max_epochs": 2}, output_dir=str(tmp_path / "out"), progress=False,
                         evaluation=evaluation)
    result = loop.run().evaluation
    top1, mine = np.array(result["matrix"]["accuracy"]), np.array(result["matrix"]["MulticlassAccuracy"])
    assert np.allclose(top1, mine, atol=1e-6) and (np.array(result["matrix"]["accuracy@2"]) >= top1).all()
    summary = result["summary"]["accuracy"]
    baseline = np.array(result["baseline"]["accuracy"])  # the untrained model on every window
    active = [k for k in result["active_model"]]
    expected = np.mean([top1[k, j] - baseline[j] for j, k in enumerate(active) if k >= 0])
    assert summary["forward_transfer"] == pytest.approx(expected) and summary["forward_transfer"] > 0.2
    assert 0 <= result["summary"]["MulticlassCalibrationError"]["composite_mean"] <= 1
