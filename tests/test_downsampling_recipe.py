"""A recipe with a downsampling callback: LightningCLI builds it from class_path, the loop fits with it per trigger."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import yaml

from lightning_modyn.recipe import run_recipe
from test_recipes import small_recipe


def test_recipe_with_a_downsampling_callback_records_scores_per_trigger(tmp_path):
    recipe = small_recipe(tmp_path)
    recipe["data"]["batch_size"] = 100
    recipe["trainer"]["callbacks"] = [{
        "class_path": "lightning_modyn.selection.downsampling.BatchThenSample",
        "init_args": {"strategy": {"class_path": "lightning_modyn.selection.downsampling.Uncertainty",
                                   "init_args": {"metric": "entropy"}},
                      "ratio": 25, "scores_dir": str(tmp_path / "scores")}}]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_recipe(["--config", str(path)])
    assert result.num_triggers == 3
    # each fit selected its trigger's 200 new samples and trained on a quarter of every batch of 100
    assert [(t["samples_selected"], t["samples_trained"], t["sample_passes"]) for t in result.triggers] == \
        [(200, 50, 50)] * 3
    with open(tmp_path / "out" / "costs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["samples_selected"], r["samples_trained"]) for r in rows] == [("200", "50")] * 3
    for trigger in range(3):
        with np.load(tmp_path / "scores" / f"scores-trigger-{trigger:04d}.npz", allow_pickle=False) as f:
            assert int(f["trigger_id"]) == trigger
            # each fit scores the 200 new samples of its trigger once per epoch (max_epochs=1)
            assert len(f["keys"]) == 200 and len(set(f["keys"].tolist())) == 200
            assert np.all(f["scores"] >= 0)


def test_downsampling_recipe_and_its_full_data_twin_differ_only_in_the_callback():
    """recipes/downsampling_digits_full.yaml is the downsampling recipe on all data: the same streams, stores, model
    and fits, without the downsampling callback (docs/selection.md compares the two)."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
    with open(os.path.join(root, "downsampling_digits.yaml")) as handle:
        downsampled = yaml.safe_load(handle)
    with open(os.path.join(root, "downsampling_digits_full.yaml")) as handle:
        full = yaml.safe_load(handle)
    (callback,) = downsampled["trainer"].pop("callbacks")
    assert callback["class_path"] == "lightning_modyn.selection.downsampling.SampleThenBatch"
    assert callback["init_args"]["ratio"] < 100
    assert "callbacks" not in full["trainer"]
    assert full["pipeline"].pop("output_dir") != downsampled["pipeline"].pop("output_dir")
    assert full == downsampled


def test_a_recipe_scores_with_a_loss_it_names_by_import_path(tmp_path):
    import custom_recipe_functions as custom

    recipe = small_recipe(tmp_path)
    recipe["data"]["batch_size"] = 100
    recipe["trainer"]["callbacks"] = [{
        "class_path": "lightning_modyn.selection.downsampling.BatchThenSample",
        "init_args": {"strategy": "loss", "ratio": 50, "loss": "custom_recipe_functions.focal_loss",
                      "scores_dir": str(tmp_path / "scores")}}]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    printed = subprocess.run([sys.executable, "-m", "lightning_modyn.cli", "run", "--config", str(path),
                              "--print_config"], capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "loss: custom_recipe_functions.focal_loss" in printed.stdout
    before = custom.CALLS["focal_loss"]
    assert run_recipe(["--config", str(path)]).num_triggers == 3
    assert custom.CALLS["focal_loss"] - before == 6  # one scoring pass per batch: 3 fits x 2 batches of 100
    with np.load(tmp_path / "scores" / "scores-trigger-0000.npz", allow_pickle=False) as f:
        focal, focal_keys = f["scores"][:100], f["keys"][:100]
    recipe["trainer"]["callbacks"][0]["init_args"].pop("loss")  # the default: cross-entropy
    recipe["trainer"]["callbacks"][0]["init_args"]["scores_dir"] = str(tmp_path / "ce-scores")
    recipe["pipeline"]["output_dir"] = str(tmp_path / "ce-out")
    path.write_text(yaml.safe_dump(recipe))
    run_recipe(["--config", str(path)])
    with np.load(tmp_path / "ce-scores" / "scores-trigger-0000.npz", allow_pickle=False) as f:
        cross_entropy, keys = f["scores"][:100], f["keys"][:100]
    # the first batch meets the same first model (after it, the selections and so the models differ): the focal
    # loss -(1-p)^2 log p is below cross-entropy -log p everywhere
    assert np.array_equal(keys, focal_keys) and np.all(focal < cross_entropy)
    assert np.allclose(focal, (1 - np.exp(-cross_entropy)) ** 2 * cross_entropy, atol=1e-5)


def test_samples_trained_counts_what_the_steps_received(tmp_path):
    recipe = small_recipe(tmp_path)
    recipe["trainer"]["limit_train_batches"] = 2  # two batches of 64 of each trigger's 200 samples
    recipe["pipeline"].pop("evaluation")
    def counts(name: str, **trainer) -> list[tuple[int, int, int]]:
        recipe["trainer"].update(trainer)
        recipe["pipeline"]["output_dir"] = str(tmp_path / name)
        result = run_recipe(["--config", str(_write(tmp_path, recipe))])
        return [(t["samples_selected"], t["samples_trained"], t["sample_passes"]) for t in result.triggers]

    assert counts("two-batches") == [(200, 128, 128)] * 3
    recipe["trainer"].pop("limit_train_batches")
    assert counts("two-epochs", max_epochs=2) == [(200, 200, 400)] * 3  # every sample, twice
    assert counts("no-training", limit_train_batches=0) == [(200, 0, 0)] * 3
    with open(tmp_path / "two-epochs" / "costs.csv") as handle:
        assert [r["sample_passes"] for r in csv.DictReader(handle)] == ["400"] * 3


def _write(tmp_path, recipe):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("use_weights", [False, True])
def test_a_loop_fit_that_ignores_the_weights_is_warned(tmp_path, use_weights):
    """Through the loop, whose own callbacks look at every batch's weights: only the training step's reading
    counts as applying them."""
    recipe = small_recipe(tmp_path)
    recipe["model"]["init_args"]["use_weights"] = use_weights
    recipe["pipeline"].pop("evaluation")
    recipe["trainer"]["callbacks"] = [{
        "class_path": "lightning_modyn.selection.downsampling.SampleThenBatch",
        "init_args": {"strategy": {"class_path": "lightning_modyn.selection.downsampling.Loss",
                                   "init_args": {"rule": "importance"}}, "ratio": 50, "period": 0}}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_recipe(["--config", str(_write(tmp_path, recipe))])
    warned = [w for w in caught if "the training step ignored the selection weights" in str(w.message)]
    assert len(warned) == (0 if use_weights else 3)  # once per fit
