"""A recipe with a downsampling callback: LightningCLI builds it from class_path, the loop fits with it per trigger."""

from __future__ import annotations

import os

import numpy as np
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
