"""A shard cut while a reader has it mapped is a ``TruncatedShardError`` naming it — never zeros, never SIGBUS —
on every read path (span and one map per shard, samples and records), whether inotify tells the reader about the
change or, where no watch can be made, a ``stat`` per read does."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lightning_modyn.store import SampleStore, TruncatedShardError
from lightning_modyn.store import cutwatch


@pytest.fixture(params=["span", "map-per-shard"])
def span_mode(request, monkeypatch):
    monkeypatch.setenv("LIGHTNING_MODYN_SPANMAP", "1" if request.param == "span" else "0")
    return request.param


@pytest.fixture(params=["inotify", "stat"])
def watch_mode(request, monkeypatch):
    if request.param == "stat":  # as where inotify is not available: every read checks by stat
        monkeypatch.setattr(cutwatch.CutWatch, "watch", lambda self, path, fd: False)
    else:
        assert cutwatch.shared().fd >= 0  # Linux: the watch is really used
    return request.param


def test_a_sample_shard_cut_while_mapped_is_an_error_on_every_read_path(tmp_path, span_mode, watch_mode):
    store = SampleStore.create(tmp_path / "s", shard_max_samples=50)
    keys = store.append([{"bin": bytes([i % 250 + 1]) * 3000} for i in range(200)])
    assert store.get_member(keys[::-1], "bin").array()[:, 0].tolist() == [i % 250 + 1 for i in range(199, -1, -1)]
    assert len(store.get(keys[60:70])) == 10
    shard = tmp_path / "s" / "shards" / "shard-000001.tar"  # keys 50..99
    os.truncate(shard, 3 * 4096 + 100)  # inside a page: the rest of that page would read as zeros
    for read in (lambda: store.get_member(keys[::-1], "bin"), lambda: store.get_member(keys[60:70], "bin"),
                 lambda: store.get(keys[60:70]), lambda: store.get(keys[98:99])):
        with pytest.raises(TruncatedShardError, match="shard-000001.tar"):
            read()
    # the other shards read on
    assert store.get_member(keys[150:160], "bin").array()[:, 0].tolist() == list(range(151, 161))
    store.close()


def test_a_records_shard_cut_while_mapped_is_an_error(tmp_path, watch_mode):
    store = SampleStore.create(tmp_path / "s")
    rows = np.zeros(100_000, [("v", "<i8")])
    rows["v"] = np.arange(100_000)
    keys = store.append_records(rows)
    assert store.get_records(keys[-5:])["v"].tolist() == list(range(99_995, 100_000))
    os.truncate(tmp_path / "s" / "shards" / "shard-000000.tar", 100_000)
    with pytest.raises(TruncatedShardError, match="shard-000000.tar"):
        store.get_records(keys[-5:])
    with pytest.raises(TruncatedShardError, match="cut from"):  # the shard is damaged: no read of it goes on
        store.get_records(keys[:5])
    store.close()


def test_a_records_shard_short_when_mapped_is_an_error_not_an_index_error(tmp_path):
    store = SampleStore.create(tmp_path / "s")
    rows = np.zeros(100_000, [("v", "<i8")])
    keys = store.append_records(rows)
    store.close()
    os.truncate(tmp_path / "s" / "shards" / "shard-000000.tar", 100_000)
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    with pytest.raises(TruncatedShardError, match="shard-000000.tar.*fewer than the catalog"):
        reader.get_records(keys[-3:])
    with pytest.raises(TruncatedShardError, match="shard-000000.tar"):
        reader.get_records(keys[[0, -1]])
    reader.close()


def _read_after_cut(store, keys, shard):
    os.truncate(shard, 4096)
    try:
        store.get_member(keys, "bin")
    except TruncatedShardError as err:
        return str(err)
    return "read without error"


def test_a_forked_reader_watches_its_own_maps(tmp_path, in_forked_child):
    store = SampleStore.create(tmp_path / "s", shard_max_samples=50)
    keys = store.append([{"bin": bytes([7]) * 3000} for i in range(100)])
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    reader.get_member(keys[::-1], "bin")  # the parent maps (and watches) the shards
    status, message = in_forked_child(_read_with_child_maps, reader, keys, str(tmp_path / "s" / "shards"))
    assert status == "ok" and "shard-000000.tar" in message, (status, message)
    reader.close()
    store.close()


def _read_with_child_maps(reader, keys, shards):
    reader.get_member(keys[::-1], "bin")  # the child's own maps and watches
    return _read_after_cut(reader, keys[::-1], os.path.join(shards, "shard-000000.tar"))
