"""A recipe with a downsampling callback: LightningCLI builds it from class_path, the loop fits with it per trigger."""

from __future__ import annotations

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
