"""``lightning-modyn run``: recipes on LightningCLI, end to end, and the errors a bad recipe gets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import yaml

from lightning_modyn import SampleStore
from lightning_modyn.recipe import run_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_recipe(tmp_path, **overrides) -> dict:
    recipe = {
        "seed_everything": 0,
        "dataset": {"class_path": "lightning_modyn.datasets.streams.RotatingDigitsStream",
                    "init_args": {"num_periods": 4, "samples_per_period": 150, "image_size": 16}},
        "data": {"store": str(tmp_path / "store"), "batch_size": 64,
                 "decode": {"class_path": "lightning_modyn.data.ArrayMember",
                            "init_args": {"member": "raw", "shape": [16, 16, 1], "scale": 0.0039,
                                          "channels_first": True}}},
        "model": {"class_path": "lightning_modyn.models.DigitsConvNet", "init_args": {"channels": 8}},
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "logger": False, "enable_checkpointing": False,
                    "enable_progress_bar": False, "enable_model_summary": False},
        "pipeline": {"trigger": {"class_path": "lightning_modyn.triggers.DataAmountTrigger",
                                 "init_args": {"num_samples": 200}},
                     "evaluation": {"every": 86400},
                     "output_dir": str(tmp_path / "out"), "chunk_size": 100},
    }
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if value is None:
            recipe[section].pop(field) if field else recipe.pop(section)
        elif field:
            recipe[section][field] = value
        else:
            recipe[section] = value
    return recipe


def write(tmp_path, recipe) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_recipe_runs_end_to_end(tmp_path, capsys, caplog):
    with caplog.at_level("INFO", logger="lightning.pytorch.utilities.rank_zero"):
        result = run_recipe(["--config", write(tmp_path, small_recipe(tmp_path))])
    assert sum(r.getMessage().startswith("GPU available:") for r in caplog.records) == 1  # banners once
    assert result.num_triggers == 3  # 600 samples, a trigger every 200
    out = capsys.readouterr().out
    assert "3 trigger(s) over 600 samples" in out and f"output: {tmp_path / 'out'}" in out
    results = json.load(open(tmp_path / "out" / "results.json"))
    assert len(results["triggers"]) == 3 and len(results["windows"]) == 4
    assert (tmp_path / "out" / "accuracy_over_time.png").exists()
    assert (tmp_path / "out" / "config.yaml").exists()
    again = run_recipe(["--config", write(tmp_path, small_recipe(tmp_path))])  # resumes: nothing left to do
    assert again.num_triggers == 3


def test_print_config_works(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lightning_modyn.cli", "run", "--config",
                             write(tmp_path, small_recipe(tmp_path)), "--print_config"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["pipeline"]["trigger"]["class_path"] == "lightning_modyn.triggers.DataAmountTrigger"
    assert printed["data"]["batch_size"] == 64


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"pipeline.trigger": {"class_path": "lightning_modyn.triggers.NoSuchTrigger"}}, "NoSuchTrigger"),
        ({"pipeline": None}, "pipeline"),
        ({"pipeline.trigger": None}, "trigger"),
        ({"data.decode": "lambda batch: batch"}, "decode"),
        ({"data.decode": "os.system"}, "refused"),
        ({"data.decode": "builtins.eval"}, "refused"),
        ({"data.decode": "pickle.loads"}, "names pickle.loads: refused"),  # its function lives in _pickle
    ],
)
def test_bad_recipes_are_refused_clearly(tmp_path, overrides, match, capsys):
    with pytest.raises((SystemExit, ValueError)) as info:
        run_recipe(["--config", write(tmp_path, small_recipe(tmp_path, **overrides))])
    text = str(info.value) + capsys.readouterr().err
    assert match in text
    assert not (tmp_path / "out" / "results.json").exists()


def test_missing_store_without_dataset_section(tmp_path):
    from lightning_modyn.store import StoreNotFoundError

    with pytest.raises(StoreNotFoundError, match="no dataset section"):
        run_recipe(["--config", write(tmp_path, small_recipe(tmp_path, dataset=None))])


def test_a_recipe_names_its_own_functions_by_import_path(tmp_path):
    import custom_recipe_functions as custom

    drift = {"class_path": "lightning_modyn.triggers.DataDriftTrigger",
             "init_args": {"metrics": {"gap": ["custom_recipe_functions.mean_gap",
                                               {"class_path": "lightning_modyn.triggers.StaticThreshold",
                                                "init_args": {"threshold": 1e9}}]},
                           "detection_interval": 100}}
    amount = {"class_path": "lightning_modyn.triggers.DataAmountTrigger", "init_args": {"num_samples": 200}}
    trigger = {"class_path": "lightning_modyn.triggers.EnsembleTrigger",
               "init_args": {"triggers": [amount, drift], "detection_interval": 100,
                             "aggregation": "custom_recipe_functions.any_fired"}}
    config = write(tmp_path, small_recipe(tmp_path, **{"pipeline.trigger": trigger}))
    printed = subprocess.run([sys.executable, "-m", "lightning_modyn.cli", "run", "--config", config,
                              "--print_config"], capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "aggregation: custom_recipe_functions.any_fired" in printed.stdout
    def run(aggregation, name: str) -> int:
        trigger["init_args"]["aggregation"] = aggregation
        recipe = small_recipe(tmp_path, **{"pipeline.trigger": trigger})
        recipe["pipeline"]["output_dir"] = str(tmp_path / name)
        return run_recipe(["--config", write(tmp_path, recipe)]).num_triggers

    before = dict(custom.CALLS)
    fired_any = run("custom_recipe_functions.any_fired", "any")
    assert custom.CALLS["any_fired"] > before["any_fired"] and custom.CALLS["mean_gap"] > before["mean_gap"]
    fired_both = run("majority", "majority")  # of two members: both
    assert fired_both < fired_any  # the drift member (threshold 1e9) fires only at its first detection point
    # a callable class with arguments, by class_path: "all of them" decides as "majority" of two does
    assert run({"class_path": "custom_recipe_functions.AtLeastFraction", "init_args": {"fraction": 1.0}},
               "all") == fired_both
    assert custom.CALLS["at_least_fraction"] > 0


@pytest.mark.parametrize("aggregation, match", [
    ("custom_recipe_functions.no_such_function", "aggregation: module 'custom_recipe_functions' has no "
                                                 "'no_such_function'"),
    ("no_such_module.any_fired", r"aggregation: cannot import 'no_such_module.any_fired' \(No module named"),
    ("custom_recipe_functions.CALLS", "aggregation must be a callable or one of"),
    ("custom_recipe_functions.AtLeastFraction", "is a class; name a function, or give the class as"),
])
def test_a_callable_that_cannot_be_imported_is_refused_naming_it(aggregation, match):
    from lightning_modyn.triggers import DataAmountTrigger, EnsembleTrigger

    with pytest.raises(ValueError, match=match):
        EnsembleTrigger([DataAmountTrigger(2)], 5, aggregation)


def test_trigger_that_never_fires_still_finishes(tmp_path, capsys):
    recipe = small_recipe(tmp_path)
    recipe["pipeline"]["trigger"]["init_args"]["num_samples"] = 10_000
    recipe["pipeline"].pop("evaluation")
    with pytest.warns(RuntimeWarning, match="never fired"):
        result = run_recipe(["--config", write(tmp_path, recipe)])
    assert result.num_triggers == 0
    assert "never fired" in capsys.readouterr().out


def test_the_embedding_layer_of_a_recipe_reaches_the_loop(tmp_path):
    recipe = small_recipe(tmp_path)
    recipe["pipeline"]["embedding_layer"] = "no_such_layer"
    with pytest.raises(ValueError, match="embedding_layer 'no_such_layer' is not a module of DigitsConvNet; its "
                                         "modules: "):
        run_recipe(["--config", write(tmp_path, recipe)])


def test_a_run_without_triggers_is_still_evaluated_and_plotted(tmp_path):
    recipe = small_recipe(tmp_path)
    recipe["pipeline"]["trigger"]["init_args"]["num_samples"] = 10_000
    with pytest.warns(RuntimeWarning, match="never fired"):
        result = run_recipe(["--config", write(tmp_path, recipe)])
    assert result.num_triggers == 0
    assert (tmp_path / "out" / "accuracy_over_time.png").exists()  # no model: the line is empty, the plot is made
    assert not (tmp_path / "out" / "matrix_accuracy.png").exists()  # and there is no model-by-window matrix


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(ROOT, "recipes")) if f.endswith(".yaml")))
def test_shipped_recipes_parse(name, tmp_path):
    """Every recipe in recipes/ is a valid config (checked without running it)."""
    result = subprocess.run([sys.executable, "-m", "lightning_modyn.cli", "run", "--config",
                             os.path.join(ROOT, "recipes", name), "--print_config"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pipeline" in yaml.safe_load(result.stdout)


def test_store_written_by_another_dataset_is_refused(tmp_path, capsys):
    recipe = small_recipe(tmp_path)
    recipe["pipeline"]["trigger"]["init_args"]["num_samples"] = 10_000  # never fires: only the store matters here
    recipe["pipeline"].pop("evaluation")
    with pytest.warns(RuntimeWarning, match="never fired"):
        run_recipe(["--config", write(tmp_path, recipe)])
    from lightning_modyn.store import SampleStore

    with SampleStore.open(tmp_path / "store", readonly=True) as store:
        stream = store.attributes["stream"]
        size = len(store)
    assert stream["class_path"] == "lightning_modyn.datasets.streams.RotatingDigitsStream"
    assert stream["init_args"]["num_periods"] == 4 and stream["init_args"]["seed"] == 0
    with pytest.warns(RuntimeWarning, match="never fired"):  # the same dataset again: the store is reused
        run_recipe(["--config", write(tmp_path, recipe)])
    recipe["dataset"]["init_args"].update(seed=3, samples_per_period=100)
    recipe["pipeline"]["output_dir"] = str(tmp_path / "out-other")  # a new run: the store is what is refused
    with pytest.raises(ValueError, match=r"another dataset than the recipe's \(samples_per_period: store 150 vs "
                                         r"recipe 100, seed: store 0 vs recipe 3\)"):
        run_recipe(["--config", write(tmp_path, recipe)])
    with SampleStore.open(tmp_path / "store", readonly=True) as store:
        assert len(store) == size and store.attributes["stream"] == stream


def test_store_that_does_not_say_which_stream_it_holds_is_used_with_a_warning(tmp_path):
    from lightning_modyn.datasets.streams import RotatingDigitsStream
    from lightning_modyn.store import SampleStore

    RotatingDigitsStream(num_periods=2, samples_per_period=50).write(str(tmp_path / "store"))
    with SampleStore.open(tmp_path / "store", readonly=True) as store:
        assert store.attributes == {}
        with pytest.warns(RuntimeWarning, match="does not record which stream it holds"):
            RotatingDigitsStream(num_periods=2, samples_per_period=50).check_store(store)


def test_run_reports_a_users_error_as_one_line_with_exit_code_2(tmp_path, capsys, monkeypatch):
    from lightning_modyn.cli import main

    recipe = small_recipe(tmp_path)
    recipe["pipeline"]["embedding_layer"] = "no_such_layer"
    config = write(tmp_path, recipe)
    assert main(["run", "--config", config]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lightning-modyn run: error: embedding_layer 'no_such_layer' is not a module of "
                              "DigitsConvNet")
    assert err[-1].endswith("(set LIGHTNING_MODYN_DEBUG=1 for the traceback)") and "Traceback" not in "\n".join(err)
    monkeypatch.setenv("LIGHTNING_MODYN_DEBUG", "1")
    with pytest.raises(ValueError, match="no_such_layer"):
        main(["run", "--config", config])


def test_a_recipe_writes_a_held_out_stream_and_evaluates_every_model_on_it(tmp_path, capsys):
    recipe = small_recipe(tmp_path)
    recipe["dataset"]["init_args"].update(heldout_samples_per_period=40, heldout_store=str(tmp_path / "heldout"))
    recipe["pipeline"]["evaluation"]["datasets"] = [{"name": "heldout", "store": str(tmp_path / "heldout")}]
    result = run_recipe(["--config", write(tmp_path, recipe)])
    part = result.evaluation["datasets"]["heldout"]
    assert [w["samples"] for w in part["windows"]] == [40] * 4
    out = capsys.readouterr().out
    assert "accuracy of the currently active model on heldout, mean over the windows that had a model:" in out
    with SampleStore.open(str(tmp_path / "heldout"), readonly=True) as held:
        assert held.attributes["stream"]["heldout"]["sources"] == "heldout"
    with SampleStore.open(str(tmp_path / "store"), readonly=True) as train:
        assert train.attributes["stream"]["init_args"]["sources"] == "train"
    # the same held-out store asked to hold another stream is refused, not silently reused
    recipe["dataset"]["init_args"]["heldout_samples_per_period"] = 50
    recipe["data"]["store"] = str(tmp_path / "store2")
    recipe["pipeline"]["output_dir"] = str(tmp_path / "out2")
    with pytest.raises(ValueError, match="dataset.heldout_store: .*heldout holds another stream"):
        run_recipe(["--config", write(tmp_path, recipe)])


def test_a_rerun_with_other_settings_is_refused_instead_of_resuming_the_old_models(tmp_path, capsys):
    recipe = small_recipe(tmp_path)
    run_recipe(["--config", write(tmp_path, recipe)])
    saved = (tmp_path / "out" / "config.yaml").read_text()
    recipe["model"]["init_args"]["channels"] = 4
    recipe["pipeline"]["trigger"]["init_args"]["num_samples"] = 300
    with pytest.raises(ValueError, match=r"pipeline.output_dir .*out holds a run made with other settings "
                                         r"\(model.init_args.channels: 8 then, 4 now; pipeline.trigger.init_args."
                                         r"num_samples: 200 then, 300 now\); .*delete .*out to start afresh"):
        run_recipe(["--config", write(tmp_path, recipe)])
    assert (tmp_path / "out" / "config.yaml").read_text() == saved  # still describes the models on disk
    # what does not change the models may change: evaluation, the progress display and bar, an empty callback list
    recipe = small_recipe(tmp_path)
    recipe["pipeline"]["evaluation"] = {"every": 43200}
    recipe["pipeline"]["progress"] = False
    recipe["trainer"]["enable_progress_bar"] = True
    recipe["trainer"]["callbacks"] = []
    assert run_recipe(["--config", write(tmp_path, recipe)]).num_triggers == 3


def test_a_recipe_chooses_how_models_are_stored_and_the_results_do_not_change(tmp_path):
    results = {}
    for name, storage in [("full", None), ("xor", {"class_path": "lightning_modyn.pipeline.IncrementalStorage",
                                                    "init_args": {"diff": "xor", "full_every": 2, "codec": "lzma"}})]:
        recipe = small_recipe(tmp_path)
        recipe["pipeline"]["output_dir"] = str(tmp_path / name)
        if storage is not None:
            recipe["pipeline"]["model_storage"] = storage
        results[name] = run_recipe(["--config", write(tmp_path, recipe)])
    stored = [t["storage"] for t in results["xor"].triggers]
    assert [s["base"] for s in stored] == [None, 0, None] and {s["codec"] for s in stored} == {"lzma"}
    assert results["xor"].evaluation["matrix"] == results["full"].evaluation["matrix"]  # every model exact
    assert sum(t["bytes"] for t in results["xor"].triggers) < sum(t["bytes"] for t in results["full"].triggers)
    assert all(t["lineage"].endswith(".keys.npz") for t in results["full"].triggers)


def test_a_store_whose_generation_was_killed_is_written_again_not_trained_on(tmp_path, caplog, monkeypatch):
    from lightning_modyn.datasets.rotating_digits import write_rotating_digits
    from lightning_modyn.datasets.streams import RotatingDigitsStream

    real = RotatingDigitsStream.write

    def killed_midway(self, store):
        write_rotating_digits(store, **{**self.options, "num_periods": 1})  # day 0 of 4 is in
        raise KeyboardInterrupt("killed while writing the stream")

    monkeypatch.setattr(RotatingDigitsStream, "write", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(["--config", write(tmp_path, small_recipe(tmp_path))])
    with SampleStore.open(str(tmp_path / "store"), readonly=True) as partial:
        assert len(partial) == 150 and partial.attributes["stream"]["unfinished"] is True
    monkeypatch.setattr(RotatingDigitsStream, "write", real)
    with caplog.at_level(logging.INFO, logger="lightning_modyn"):
        result = run_recipe(["--config", write(tmp_path, small_recipe(tmp_path))])
    assert "was left unfinished by a run stopped while writing it: writing it again" in caplog.text
    assert result.num_triggers == 3 and result.stream_samples == 600
    with SampleStore.open(str(tmp_path / "store"), readonly=True) as store:
        assert "unfinished" not in store.attributes["stream"]


def test_a_generated_store_keeps_its_timeline_and_the_plots_read_days(tmp_path):
    recipe = small_recipe(tmp_path)
    recipe["dataset"]["init_args"].update({"abrupt_shifts": [2], "shift_kind": "invert"})
    recipe["pipeline"]["evaluation"] = {"every": 86400, "plots": True}
    run_recipe(["--config", write(tmp_path, recipe)])
    with SampleStore.open(str(tmp_path / "store"), readonly=True) as store:
        timeline = store.attributes["timeline"]
    assert timeline == {"unit": "day", "unit_seconds": 86400, "start": 0,
                        "shifts": [{"at": 2 * 86400, "label": "contrast inverted"}]}
    assert (tmp_path / "out" / "accuracy_over_time.png").stat().st_size > 1000
    from lightning_modyn.datasets.streams import SyntheticClicksStream

    assert SyntheticClicksStream(days=2).timeline()["unit"] == "day"
