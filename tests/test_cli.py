"""The ``lightning-modyn`` command: ingest, info, demo, and the errors it prints."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import webdataset as wds

from lightning_modyn.cli import main
from lightning_modyn.store import SampleStore


def write_shard(path, n, prefix="s"):
    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            sink.write({"__key__": f"{prefix}{i:04d}", "txt": f"sample {i}", "cls": i % 3, "ts": str(100 + i)})
    return str(path)


def test_ingest_creates_store_and_info_reports_it(tmp_path, capsys):
    a = write_shard(tmp_path / "a.tar", 5, "a")
    b = write_shard(tmp_path / "b.tar", 4, "b")
    url = str(tmp_path / "store")
    assert main(["ingest", a, b, "--store", url, "--create", "--labels", "cls", "--timestamps", "ts", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "indexed 9 samples from 2 shard(s)" in out
    assert main(["info", url]) == 0
    table = capsys.readouterr().out
    assert "samples        9 live" in table and "time range     100 .. 104" in table
    assert "labels         0: 4, 1: 3, 2: 2" in table
    assert main(["info", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["samples"] == 9 and info["shards"] == 2 and info["label_counts"] == {"0": 4, "1": 3, "2": 2}
    with SampleStore.open(url, readonly=True) as store:
        assert store.get([5])[0]["txt"] == b"sample 0"


@pytest.mark.parametrize("hand_over", [False, True])
def test_ingest_hands_files_over_only_when_asked(tmp_path, capsys, hand_over):
    a = write_shard(tmp_path / "a.tar", 3, "a")
    original = open(a, "rb").read()
    url = str(tmp_path / "store")
    argv = ["ingest", a, "--store", url, "--create", "--quiet"] + (["--hand-over"] if hand_over else [])
    assert main(argv) == 0
    assert ("the files are the store's now" if hand_over else "the files stay yours") in capsys.readouterr().out
    with SampleStore.open(url) as store:
        store.delete([0])
        with pytest.warns(UserWarning, match="a.tar") if not hand_over else contextlib.nullcontext():
            stats = store.compact()
    assert stats["shards_not_owned"] == (0 if hand_over else 1)
    assert os.path.exists(a) != hand_over  # handed over: rewritten into the store and removed
    if not hand_over:
        assert open(a, "rb").read() == original


def test_ingest_without_create_on_missing_store_fails_clearly(tmp_path, capsys):
    a = write_shard(tmp_path / "a.tar", 2)
    assert main(["ingest", a, "--store", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "no store at" in capsys.readouterr().err


def test_ingest_bad_shard_reports_file_and_stores_nothing(tmp_path, capsys):
    good = write_shard(tmp_path / "good.tar", 3)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(open(good, "rb").read()[:700])
    url = str(tmp_path / "store")
    assert main(["ingest", good, str(bad), "--store", url, "--create", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.tar" in err and "truncated" in err
    with SampleStore.open(url, readonly=True) as store:
        assert len(store) == 0


def test_info_on_non_store_directory(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("hi")
    assert main(["info", str(tmp_path / "x")]) == 2
    assert "not a lightning-modyn store" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_command_runs_end_to_end(tmp_path):
    url = str(tmp_path / "demo")
    result = subprocess.run(
        [sys.executable, "-m", "lightning_modyn.cli", "demo", url, "--samples", "500", "--rows", "20000"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "byte-exact" in result.stdout and "compacted" in result.stdout
    with SampleStore.open(url, readonly=True) as store:
        info = store.info()
        assert info["samples"] == 250 + 20_000 and info["awaiting_compaction"] == 0
        keys = store.all().keys
        assert np.all(np.diff(keys) > 0)
