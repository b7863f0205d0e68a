"""ContinualLoop under DDP with 2 CPU processes (gloo): rank 0 decides, every rank trains its plan, rank 0 writes.

The runs go through tests/ddp_loop.py, whose trigger and selection decide differently on every rank; the expected
plan is rank 0's (a trigger every 300 samples, known weights), and the expected models are those of plain DDP fits
on that plan ("known"). Most of each run's time is starting Python processes (importing torch and Lightning).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddp_loop import EVERY, weights_of  # tests/ is on sys.path, as for every test module
from test_pipeline import DTYPE

from lightning_modyn import SampleStore
from lightning_modyn.pipeline import ModelRegistry

SCRIPT = os.path.join(os.path.dirname(__file__), "ddp_loop.py")


def launch(url: str, out: str, mode: str, *options: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    result = subprocess.run([sys.executable, SCRIPT, url, out, mode, *options], capture_output=True, text=True,
                            timeout=300, env=env)
    if ok:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def fits(out: str, rank: int) -> list[dict]:
    with open(os.path.join(out, f"fits-rank{rank}.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def weights(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_same_weights(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{what}: parameters differ"


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """1200 samples at t = 0..1199: the drifting stream of test_pipeline."""
    root = tmp_path_factory.mktemp("ddp-loop")
    rng = np.random.default_rng(0)
    rows = np.zeros(1200, DTYPE)
    rows["x"] = rng.normal(size=(1200, 2)).astype(np.float32)
    t = np.arange(1200)
    rows["label"] = np.where(t < 600, rows["x"][:, 0] > 0, rows["x"][:, 0] < 0).astype(np.int32)
    store = SampleStore.create(root / "stream")
    keys = store.append_records(rows, timestamps=t, labels="label")
    store.close()
    return {"url": str(root / "stream"), "keys": keys, "root": root}


@pytest.fixture(scope="module")
def ddp_run(stream):
    """A 4-trigger loop under strategy="ddp", then (same processes) the known fits; the reference of every test."""
    out = str(stream["root"] / "ddp")
    result = launch(stream["url"], out, "ddp", "--known")
    return {"out": out, "known": os.path.join(out, "known"), "output": result.stdout + result.stderr}


def check_run(stream: dict, out: str, known: str, triggers: int, passes: int | None = 2 * EVERY) -> None:
    """Every rank fitted once per trigger on rank 0's (keys, weights); the registry holds what every rank ended
    with, and that equals the known run's model. ``passes``: the rows trained per fit (max_epochs=2), None where
    the fits ran in spawned processes that do not report them back."""
    for rank in (0, 1):
        done = fits(out, rank)
        assert [f["trigger_id"] for f in done] == list(range(triggers)), f"rank {rank} fitted {len(done)} times"
        for f in done:
            i = f["trigger_id"]
            assert f["world"] == 2 and f["rank"] == rank
            assert f["keys"] == stream["keys"][i * EVERY:(i + 1) * EVERY].tolist(), f"rank {rank}, trigger {i}"
            assert np.array_equal(np.float32(f["weights"]), weights_of(i, 0, EVERY)), f"rank {rank}, trigger {i}"
    registry = json.load(open(os.path.join(out, "run", "registry.json")))["models"]
    assert [e["stream_position"] for e in registry] == [EVERY * (i + 1) for i in range(triggers)]
    assert [e["samples_trained"] for e in registry] == [EVERY] * triggers  # both ranks' halves together
    assert [e["sample_passes"] for e in registry] == [passes] * triggers
    for i in range(triggers):
        saved = ModelRegistry(os.path.join(out, "run")).weights(i)
        for rank in (0, 1):
            assert_same_weights(saved, weights(os.path.join(out, "weights", f"rank{rank}-trigger{i}.pt")),
                                f"trigger {i}: registry vs rank {rank}")
        assert_same_weights(saved, weights(os.path.join(known, "weights", f"rank0-trigger{i}.pt")),
                            f"trigger {i}: registry vs the known run")


@pytest.mark.slow
def test_ddp_ranks_train_rank0s_plan_and_only_rank0_writes(stream, ddp_run):
    out = ddp_run["out"]
    check_run(stream, out, ddp_run["known"], 4)
    # rank 1 replayed nothing and said nothing: one "done" line per trigger in the output of both processes
    lines = [line for line in ddp_run["output"].splitlines()
             if line.startswith("[lightning-modyn] ") and " done; seconds " in line]
    assert len(lines) == 4, ddp_run["output"]
    ranks = {r: json.load(open(os.path.join(out, f"result-rank{r}.json"))) for r in (0, 1)}
    assert ranks[0]["triggers"] == ranks[1]["triggers"] and len(ranks[0]["triggers"]) == 4
    assert ranks[0]["has_evaluation"] and not ranks[1]["has_evaluation"]
    assert sorted(os.listdir(os.path.join(out, "run"))) == ["costs.csv", "costs.png", "evaluation", "loop_state.json",
                                                             "models", "registry.json", "results.csv", "results.json"]
    # evaluated during the run, on rank 0: each model's values were measured after its fit and kept
    assert sorted(os.listdir(os.path.join(out, "run", "evaluation"))) == [
        "initial.json", *[f"trigger-{t:04d}.json" for t in range(4)]]
    assert [line for line in ddp_run["output"].splitlines() if ", evaluate: evaluating trigger " in line] != []


@pytest.mark.slow
def test_ddp_run_killed_between_fits_stops_every_rank_and_resumes(stream, ddp_run):
    out = str(stream["root"] / "killed")
    killed = launch(stream["url"], out, "ddp", "--crash-after", "1", ok=False)
    assert killed.returncode != 0
    assert "rank 0 stopped the continual loop: KeyboardInterrupt: simulated crash" in killed.stderr  # not a hang
    assert len(json.load(open(os.path.join(out, "run", "registry.json")))["models"]) == 2
    # the last completed chunk ends before trigger 1: its model is reused, and rank 1 first joins at trigger 2
    resumed = launch(stream["url"], out, "ddp")
    assert "resuming at stream position 512 after 1 trigger(s)" in resumed.stderr
    check_run(stream, out, ddp_run["known"], 4)


@pytest.mark.slow
def test_ddp_spawn_fits_in_workers_and_brings_rank0s_model_back(stream, ddp_run):
    out = str(stream["root"] / "spawn")
    launch(stream["url"], out, "ddp_spawn", "--triggers", "2")  # trigger 1 warm-starts from what came back
    check_run(stream, out, ddp_run["known"], 2, passes=None)
