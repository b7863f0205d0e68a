"""Synthetic clicks: the known click model, the held-out stream beside the training stream, and a DLRM that
learns from them (the ``synthetic_clicks.yaml`` recipe, scaled down, evaluated on its held-out stream)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score as roc_auc

from lightning_modyn.datasets.clicks import DAY_SECONDS, synthetic_clicks_arrays, write_synthetic_clicks
from lightning_modyn.datasets.criteo import CRITEO_DTYPE, click_logits, synthetic_criteo_rows
from lightning_modyn.datasets.streams import SyntheticClicksStream
from lightning_modyn.store import SampleStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIFTS = dict(drift_per_day=1e-4, ctr_drift_per_day=0.3, concept_drift_per_day=0.1)


def features(rows: np.ndarray) -> set[bytes]:
    """Every row's features (dense and categorical, not the label) as bytes."""
    return {r["dense"].tobytes() + r["cat"].tobytes() for r in rows}


# ====================================================================== the click model
def test_labels_follow_the_known_click_model():
    rows = synthetic_criteo_rows(40_000, seed=1, click_seed=3)
    logits = click_logits(rows, click_seed=3)
    p = 1 / (1 + np.exp(-logits))
    # calibrated: in every decile of the predicted probability, the click rate is the predicted one
    edges = np.quantile(p, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    for b in range(10):
        inside = bins == b
        assert abs(rows["label"][inside].mean() - p[inside].mean()) < 0.03, b
    # and the features carry signal: the model separates clicks well, another seed's model does not
    assert roc_auc(rows["label"], logits) > 0.82
    assert roc_auc(rows["label"], click_logits(rows, click_seed=4)) < 0.80


def test_dense_and_categorical_features_both_carry_signal():
    rows = synthetic_criteo_rows(40_000, seed=2)
    no_ids = rows.copy()
    no_ids["cat"] = 0  # every id the same: only the dense features still differ
    no_dense = rows.copy()
    no_dense["dense"] = np.float32(np.log1p(3.0))
    auc = {name: roc_auc(rows["label"], click_logits(r)) for name, r in
           [("dense", no_ids), ("categorical", no_dense), ("both", rows)]}
    assert 0.65 < auc["dense"] < auc["both"] - 0.08, auc
    assert 0.65 < auc["categorical"] < auc["both"] - 0.05, auc


def test_concept_drift_turns_the_click_model_into_another():
    rows, ts = synthetic_clicks_arrays(days=2, rows_per_day=20_000, concept_drift_per_day=1.0, drift_per_day=0)
    day1 = rows[ts // DAY_SECONDS == 1]
    assert roc_auc(day1["label"], click_logits(day1, phase=1.0)) > 0.82  # day 1's model, phase 1
    assert abs(roc_auc(day1["label"], click_logits(day1, phase=0.0)) - 0.5) < 0.03  # unrelated to day 0's
    # a slow drift keeps neighbouring days' models close
    rows, ts = synthetic_clicks_arrays(days=2, rows_per_day=20_000, concept_drift_per_day=0.05, drift_per_day=0)
    day1 = rows[ts // DAY_SECONDS == 1]
    now, before = (roc_auc(day1["label"], click_logits(day1, phase=p)) for p in (0.05, 0.0))
    assert before > now - 0.01 and now > 0.82


def test_an_id_keeps_its_effect_when_popularity_drifts():
    # popularity moves ids through the ranks, but with no concept drift one model labels every day
    rows, ts = synthetic_clicks_arrays(days=3, rows_per_day=15_000, drift_per_day=1e-3)
    day = ts // DAY_SECONDS
    assert not np.isin(rows["cat"][day == 2, 0], rows["cat"][day == 0, 0][:50]).all()  # other ids are popular
    for d in range(3):
        assert roc_auc(rows["label"][day == d], click_logits(rows[day == d])) > 0.82


# ====================================================================== the held-out stream
def test_heldout_stream_is_disjoint_from_the_training_stream():
    train, train_ts = synthetic_clicks_arrays(days=3, rows_per_day=3000, seed=5, **DRIFTS)
    held, held_ts = synthetic_clicks_arrays(days=3, rows_per_day=1000, seed=5, heldout=True, **DRIFTS)
    assert held.dtype == CRITEO_DTYPE and held.shape == (3000,)
    assert (held_ts // DAY_SECONDS).tolist() == np.repeat(np.arange(3), 1000).tolist()  # the same days
    assert not features(train) & features(held)
    # and not merely a shorter prefix of another stream: no row of a long held-out stream is a training row
    long_held, _ = synthetic_clicks_arrays(days=3, rows_per_day=3000, seed=5, heldout=True, **DRIFTS)
    assert not features(train) & features(long_held)


def test_heldout_stream_is_distributed_like_the_training_stream():
    days, n = 4, 12_000
    train, train_ts = synthetic_clicks_arrays(days=days, rows_per_day=n, seed=2, **DRIFTS)
    held, held_ts = synthetic_clicks_arrays(days=days, rows_per_day=n, seed=2, heldout=True, **DRIFTS)
    for d in range(days):
        a, b = train[train_ts // DAY_SECONDS == d], held[held_ts // DAY_SECONDS == d]
        rate = a["label"].mean()
        assert abs(rate - b["label"].mean()) < 4 * np.sqrt(2 * rate * (1 - rate) / n), d  # same click rate
        np.testing.assert_allclose(a["dense"].mean(axis=0), b["dense"].mean(axis=0), atol=0.04)
        top = np.arange(10) + int(d * DRIFTS["drift_per_day"] * 100_000)  # the day's most popular ids
        assert abs(np.isin(a["cat"], top).mean() - np.isin(b["cat"], top).mean()) < 0.01, d
        # one click model (the day's) labels both
        logits = [click_logits(x, click_seed=2, phase=d * DRIFTS["concept_drift_per_day"]) for x in (a, b)]
        auc = [roc_auc(x["label"], s) for x, s in zip((a, b), logits)]
        assert auc[0] > 0.8 and abs(auc[0] - auc[1]) < 0.02, (d, auc)
    # the click rate drifts in both alike (up by ctr_drift_per_day in log-odds a day)
    assert np.diff(held["label"].reshape(days, n).mean(axis=1)).min() > 0


def test_streams_are_deterministic_under_their_seed():
    for heldout in (False, True):
        a = synthetic_clicks_arrays(days=3, rows_per_day=800, seed=7, heldout=heldout, **DRIFTS)
        b = synthetic_clicks_arrays(days=3, rows_per_day=800, seed=7, heldout=heldout, **DRIFTS)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        other = synthetic_clicks_arrays(days=3, rows_per_day=800, seed=8, heldout=heldout, **DRIFTS)
        assert not np.array_equal(a[0]["cat"], other[0]["cat"])
        prefix = synthetic_clicks_arrays(days=2, rows_per_day=800, seed=7, heldout=heldout, **DRIFTS)
        np.testing.assert_array_equal(prefix[0], a[0][:1600])


def test_stream_generator_writes_both_streams(tmp_path):
    gen = SyntheticClicksStream(days=2, rows_per_day=600, seed=3, heldout_rows_per_day=200,
                                heldout_store=str(tmp_path / "heldout"), **DRIFTS)
    assert gen.heldout_url == str(tmp_path / "heldout")
    train_keys = gen.write(str(tmp_path / "train"))
    held_keys = gen.write_heldout()
    rows, ts = synthetic_clicks_arrays(days=2, rows_per_day=600, seed=3, **DRIFTS)
    held, held_ts = synthetic_clicks_arrays(days=2, rows_per_day=200, seed=3, heldout=True, **DRIFTS)
    with SampleStore.open(str(tmp_path / "train"), readonly=True) as store:
        np.testing.assert_array_equal(store.get_records(train_keys), rows)
    with SampleStore.open(str(tmp_path / "heldout"), readonly=True) as store:
        np.testing.assert_array_equal(store.get_records(held_keys), held)
        np.testing.assert_array_equal(store.lookup(held_keys).timestamps, held_ts)
    # the training stream is the same with or without a held-out stream beside it
    assert SyntheticClicksStream(days=2, rows_per_day=600, seed=3, **DRIFTS).options == gen.options
    described = gen.describe_heldout()
    assert described["heldout"]["rows_per_day"] == 200 and described["heldout"]["heldout"] is True
    assert described["init_args"] == gen.describe()["init_args"]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(heldout_rows_per_day=-1), "heldout_rows_per_day"),
        (dict(heldout_rows_per_day=2.5, heldout_store="x"), "heldout_rows_per_day"),
        (dict(heldout_rows_per_day=100), "heldout_store"),  # one without the other
        (dict(heldout_store="x"), "heldout_rows_per_day"),
        (dict(days=0), "days"),
        (dict(rows_per_day=0), "rows_per_day"),
        (dict(concept_drift_per_day=float("nan")), "concept_drift_per_day"),
        (dict(drift_per_day=True), "drift_per_day"),
        (dict(seed=-3), "seed"),
    ],
)
def test_bad_stream_arguments_are_refused_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SyntheticClicksStream(**kwargs)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: synthetic_clicks_arrays(days=1, heldout="yes"), "heldout"),
        (lambda: synthetic_clicks_arrays(days=1, concept_drift_per_day="fast"), "concept_drift_per_day"),
        (lambda: synthetic_criteo_rows(-1), "n"),
        (lambda: synthetic_criteo_rows(10, click_seed=-1), "click_seed"),
        (lambda: synthetic_criteo_rows(10, phase=float("inf")), "phase"),
        (lambda: synthetic_criteo_rows(10, num_categories=1), "num_categories"),
    ],
)
def test_bad_generator_arguments_are_refused_naming_them(call, name):
    with pytest.raises(ValueError, match=rf"\b{name} must be"):
        call()


def test_bad_heldout_flag_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="heldout"):
        write_synthetic_clicks(str(tmp_path / "never"), days=1, rows_per_day=10, heldout=1)
    assert not (tmp_path / "never").exists()


# ====================================================================== a DLRM learns from them
def train_dlrm(rows: np.ndarray, seed: int = 0):
    """A small TinyDLRM after one epoch over ``rows`` (batches of 64, its own loss and optimizer)."""
    import torch

    from lightning_modyn.models import TinyDLRM

    torch.manual_seed(seed)
    model = TinyDLRM(num_embeddings=1000, embedding_dim=8, lr=3e-3)
    optimizer = model.configure_optimizers()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small gains nothing from more, and on a busy machine loses a lot
    try:
        for i in range(0, len(rows), 64):
            loss = model.training_step(as_batch(rows[i:i + 64]), i)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model


def as_batch(rows: np.ndarray):
    import torch

    x = {"dense": torch.from_numpy(rows["dense"]), "cat": torch.from_numpy(rows["cat"])}
    return x, torch.from_numpy(rows["label"]).long()


def heldout_auc(model, rows: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        scores = model(as_batch(rows)[0]).squeeze(1).numpy()
    return roc_auc(rows["label"], scores)


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_tiny_dlrm_learns_the_clicks_of_the_next_heldout_day():
    options = dict(seed=0, drift_per_day=1e-4, ctr_drift_per_day=0.05, concept_drift_per_day=0.05)
    train, _ = synthetic_clicks_arrays(days=2, rows_per_day=6000, **options)
    held, held_ts = synthetic_clicks_arrays(days=3, rows_per_day=3000, heldout=True, **options)
    tomorrow = held[held_ts // DAY_SECONDS == 2]  # a day no model trained on, from rows no model saw
    assert heldout_auc(train_dlrm(train), tomorrow) > 0.68
    # the control: the same model on the same rows with their clicks shuffled learns nothing that holds out
    shuffled = train.copy()
    shuffled["label"] = np.random.default_rng(0).permutation(train["label"])
    assert abs(heldout_auc(train_dlrm(shuffled), tomorrow) - 0.5) < 0.06


def test_shipped_recipe_evaluates_on_its_heldout_stream():
    with open(os.path.join(ROOT, "recipes", "synthetic_clicks.yaml")) as handle:
        recipe = yaml.safe_load(handle)
    init_args = recipe["dataset"]["init_args"]
    generator = SyntheticClicksStream(**init_args)  # every argument valid
    evaluation = recipe["pipeline"]["evaluation"]
    assert [d["store"] for d in evaluation["datasets"]] == [generator.heldout_url] != [recipe["data"]["store"]]
    assert {"accuracy", "roc_auc"} <= set(evaluation["metrics"])
    assert init_args["heldout_rows_per_day"] > 0 and recipe["trainer"]["max_epochs"] == 1
