"""Downsampling under strategy="ddp" with 2 CPU processes: every rank selects the same subset from the same scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lightning_modyn import SampleStore
from test_downsampling import make_rows

SCRIPT = os.path.join(os.path.dirname(__file__), "ddp_downsampling.py")


@pytest.mark.slow
def test_ranks_select_the_same_subset_from_gathered_scores(tmp_path):
    store = SampleStore.create(tmp_path / "store")
    store.append_records(make_rows(301, seed=3), timestamps=np.arange(301), labels="label")
    store.close()
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    run = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "store"), str(out)], cwd=os.path.dirname(__file__),
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]

    # sample-then-batch: one subset, identical on both ranks, split between them
    sub0, sub1 = ranks[0]["stb_subset"], ranks[1]["stb_subset"]
    assert sub0 == sub1 and len(sub0[0]) == round(0.5 * 301)
    trained = ranks[0]["stb_trained"] + ranks[1]["stb_trained"]
    assert set(trained) == set(sub0[0])  # every chosen key trained on by some rank (plus padding repeats)

    # batch-then-sample: both ranks see the same gathered pool and keep the global top 25 % between them
    steps0, steps1 = ranks[0]["bts_steps"], ranks[1]["bts_steps"]
    assert len(steps0) == len(steps1) > 0
    for a, b in zip(steps0, steps1):
        assert a["pool_keys"] == b["pool_keys"] and a["pool_scores"] == b["pool_scores"]
        keys, scores = np.array(a["pool_keys"]), np.array(a["pool_scores"])
        top = keys[np.argsort(-scores, kind="stable")[: max(1, round(0.25 * len(keys)))]]
        kept = [k for k, w in zip(a["kept"], a["weights"]) if w > 0] + [k for k, w in zip(b["kept"], b["weights"])
                                                                     if w > 0]
        assert sorted(kept) == sorted(top.tolist())

    # 3 keys on 2 ranks, batch size 1, keep 50 %: at every step one rank holds nothing that was chosen (and at the
    # second step of each epoch rank 1 holds only DDP padding). That rank still takes the step, on one row of
    # weight 0, with a finite loss and a backward pass seeded with 0: it adds nothing to the update.
    pad0, pad1 = ranks[0]["padding_steps"], ranks[1]["padding_steps"]
    assert len(pad0) == len(pad1) == 6  # 2 steps per epoch, 3 epochs, on both ranks
    empty = 0
    for a, b in zip(pad0, pad1):
        for step in (a, b):
            assert step["rows"] == 1 and np.isfinite(step["loss"])
        chosen = [s for s in (a, b) if s["weights"][0] > 0]
        assert len(chosen) == 1  # one of the two valid samples of the step is kept, by exactly one rank
        assert chosen[0]["seed_grad"] == 1.0
        other = b if chosen[0] is a else a
        assert other["weights"] == [0.0] and other["seed_grad"] == 0.0
        empty += 1
    assert ranks[0]["padding_stats"]["steps_without_samples"] + ranks[1]["padding_stats"]["steps_without_samples"] \
        == empty
