"""Each fit of a continual loop: its own logger version and checkpoint folder, its seconds per stage, the run's
progress display."""

from __future__ import annotations

import csv
import logging
import os

import pytest
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_modyn.pipeline.progress import STAGES, RunProgress
from lightning_modyn.selection.downsampling import BatchThenSample
from test_pipeline import EveryN, make_loop


def test_each_fit_logs_under_its_own_version_with_its_trigger_id(drifting_store, tmp_path):
    logger = CSVLogger(str(tmp_path / "logs"), name="fits")
    make_loop(drifting_store, tmp_path / "run", EveryN(400),
              trainer={"max_epochs": 1, "logger": logger, "log_every_n_steps": 1}).run()
    versions = sorted(os.listdir(tmp_path / "logs" / "fits"))
    assert versions == ["version_0", "version_1", "version_2"]
    for trigger_id, version in enumerate(versions):
        hparams = yaml.safe_load(open(tmp_path / "logs" / "fits" / version / "hparams.yaml"))
        assert hparams["trigger_id"] == trigger_id
    assert logger._version is None, "the logger the user gave was used by a fit: the next fit would share it"


def test_each_fit_checkpoints_into_its_own_folder(drifting_store, tmp_path):
    named = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    make_loop(drifting_store, tmp_path / "run", EveryN(400), trainer={"max_epochs": 1, "callbacks": [named]}).run()
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["trigger-0000", "trigger-0001", "trigger-0002"]
    for folder in os.listdir(tmp_path / "ckpt"):
        assert "last.ckpt" in os.listdir(tmp_path / "ckpt" / folder)
        assert not [f for f in os.listdir(tmp_path / "ckpt" / folder) if "-v" in f]
    # no dirpath: under the fit's own folder of the run
    make_loop(drifting_store, tmp_path / "run2", EveryN(600),
              trainer={"max_epochs": 1, "callbacks": [ModelCheckpoint(save_last=True)]}).run()
    for trigger_id in (0, 1):
        folder = tmp_path / "run2" / "trainer" / f"trigger-{trigger_id:04d}" / "checkpoints"
        assert "last.ckpt" in os.listdir(folder)


def test_seconds_per_stage_reach_the_result_and_the_cost_table(drifting_store, tmp_path):
    scoring = BatchThenSample("loss", ratio=50, record_scores=False)
    result = make_loop(drifting_store, tmp_path / "run", EveryN(400),
                       trainer={"max_epochs": 2, "callbacks": [scoring]}).run()
    for trigger in result.triggers:
        seconds = trigger["seconds"]
        assert set(seconds) == set(STAGES)
        assert seconds["train"] > 0 and seconds["score"] > 0 and seconds["decide"] >= 0
        assert seconds["train"] + seconds["score"] == pytest.approx(trigger["train_seconds"], abs=0.01)
        assert seconds["evaluate"] == 0  # no evaluation in this pipeline
    assert sum(t["seconds"]["decide"] for t in result.triggers) > 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "costs.csv")))
    assert [int(r["trigger_id"]) for r in rows] == [0, 1, 2]
    assert float(rows[1]["score_seconds"]) == pytest.approx(result.triggers[1]["seconds"]["score"], abs=1e-3)
    assert (tmp_path / "run" / "costs.png").stat().st_size > 1000


def test_progress_shows_position_triggers_and_stage(drifting_store, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lightning_modyn"):
        make_loop(drifting_store, tmp_path / "run", EveryN(600), progress=True).run()
    text = caplog.text
    assert "0/1,200 samples (0%), 0 triggers, replay: replaying the stream" in text
    assert "600/1,200 samples (50%), 0 triggers, train: training trigger 0 on 600 samples" in text
    assert "600/1,200 samples (50%), 1 trigger, replay: trigger 0 done; seconds " in text
    assert "1,200/1,200 samples (100%), 2 triggers, done: done" in text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lightning_modyn"):
        make_loop(drifting_store, tmp_path / "quiet", EveryN(600)).run()  # progress=False
    assert "samples" not in caplog.text


def test_progress_clock_refuses_unknown_stages():
    progress = RunProgress(False, 10)
    with pytest.raises(ValueError, match="unknown stage 'fitting'"):
        with progress.stage_of("fitting"):
            pass
    with progress.stage_of("select"):
        pass
    taken = progress.take_seconds()
    assert taken["select"] >= 0 and progress.seconds == dict.fromkeys(STAGES, 0.0)
