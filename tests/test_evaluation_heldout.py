"""Evaluation on held-out data beside the training stream: another store, or a time range of the training store."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from lightning_modyn import ModynDataModule, SampleStore
from lightning_modyn.datasets.rotating_digits import source_split
from lightning_modyn.evaluation import Evaluation, EvaluationDataset
from lightning_modyn.pipeline import ContinualLoop
from lightning_modyn.triggers import DataAmountTrigger
from test_pipeline import Classifier

ROWS = [("label", "<i4"), ("x", "<f4", (2,))]


def rows(n: int, seed: int, flip_after: int | None = None) -> np.ndarray:
    """Three classes from two features; the rule flips sign at position ``flip_after`` (an abrupt drift)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, ROWS)
    out["x"] = rng.normal(size=(n, 2))
    x = out["x"].copy()
    if flip_after is not None:
        x[flip_after:] *= -1
    out["label"] = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)
    return out


@pytest.fixture
def stores(tmp_path):
    """A training stream of 600 samples at t = 0..599 and a held-out stream of 300 at t = 0, 2, ..., 598, both
    drifting at t = 300."""
    with SampleStore.create(tmp_path / "train") as store:
        store.append_records(rows(600, 0, flip_after=300), timestamps=np.arange(600), labels="label")
    with SampleStore.create(tmp_path / "heldout") as store:
        store.append_records(rows(300, 1, flip_after=150), timestamps=np.arange(0, 600, 2), labels="label")
    return str(tmp_path / "train"), str(tmp_path / "heldout")


def run(tmp_path, train, evaluation):
    torch.manual_seed(0)
    loop = ContinualLoop(Classifier(3), ModynDataModule(train, batch_size=50), DataAmountTrigger(200),
                         trainer={"max_epochs": 3}, output_dir=str(tmp_path / "out"), progress=False,
                         evaluation=evaluation)
    return loop.run()


def test_every_model_is_evaluated_on_a_held_out_store_by_the_same_windows(tmp_path, stores):
    train, heldout = stores
    evaluation = Evaluation(every=100, metrics=("accuracy",), plots=True,
                            datasets=[EvaluationDataset("heldout", store=heldout)])
    result = run(tmp_path, train, evaluation).evaluation
    part = result["datasets"]["heldout"]
    assert [w["samples"] for w in part["windows"]] == [50] * 6  # t = 0..599 in windows of 100, every other t
    assert np.array(part["matrix"]["accuracy"]).shape == (3, 6)
    assert part["active_model"] == result["active_model"]  # the same windows, the same active models
    assert "trained_composite" not in part  # in-sample only exists on the stream
    # the first model (trained on t < 200) is right before the drift and wrong after it, on held-out data too
    first = part["matrix"]["accuracy"][0]
    assert np.mean(first[:3]) > np.mean(first[3:]) + 0.15
    saved = json.load(open(tmp_path / "out" / "results.json"))
    assert saved["datasets"]["heldout"]["summary"] == part["summary"]
    with open(tmp_path / "out" / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert {r["dataset"] for r in table} == {"stream", "heldout"}
    assert sum(r["dataset"] == "heldout" for r in table) == 3 * 6


def test_a_time_range_of_the_training_store_that_the_loop_replays_is_not_held_out(tmp_path, stores):
    train, _ = stores
    evaluation = Evaluation(every=100, plots=False, datasets=[EvaluationDataset("late", start=400)])
    with pytest.warns(RuntimeWarning, match="evaluation dataset 'late' shares samples with the replayed stream"):
        result = run(tmp_path, train, evaluation).evaluation
    assert [w["start"] for w in result["datasets"]["late"]["windows"]] == [400, 500]


@pytest.mark.parametrize("make, error, match", [
    (lambda: EvaluationDataset("stream"), ValueError, "a name other than 'stream'"),
    (lambda: EvaluationDataset("x", start=5, end=5), ValueError, r"evaluation dataset 'x': end \(5\) must be after"),
    (lambda: Evaluation(every=10, datasets=[EvaluationDataset("a"), EvaluationDataset("a")]), ValueError,
     r"distinct names, got \['a', 'a'\]"),
    (lambda: Evaluation(every=10, datasets=["heldout"]), TypeError, "datasets must hold EvaluationDataset objects"),
])
def test_bad_evaluation_datasets_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_an_empty_evaluation_dataset_is_refused_naming_it(tmp_path, stores):
    train, heldout = stores
    evaluation = Evaluation(every=100, plots=False, datasets=[EvaluationDataset("future", store=heldout,
                                                                                start=10_000)])
    with pytest.raises(ValueError, match="evaluation dataset 'future': no samples in .*heldout between 10000"):
        run(tmp_path, train, evaluation)


def test_the_held_out_digits_share_no_source_image_with_the_training_digits():
    train, heldout = source_split(1797, "train"), source_split(1797, "heldout")
    assert not np.intersect1d(train, heldout).size and len(train) + len(heldout) == 1797
    assert len(heldout) == 360 and np.array_equal(source_split(1797, "all"), np.arange(1797))
