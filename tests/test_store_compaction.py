"""Compaction at scale: small shards merged, survivors read in batches on remote stores, and compaction beside
other writers (PostgreSQL) never bringing back a sample deleted meanwhile."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from lightning_modyn.store import DeletedKeyError, SampleStore
from lightning_modyn.store import compaction as compaction_module
from lightning_modyn.store.filesystem import StoreFS

RECORD = np.dtype([("x", "<i8"), ("label", "<i8")])


def _shard_files(root) -> list[str]:
    return sorted(os.listdir(os.path.join(root, "shards")))


def test_many_small_appends_are_merged_into_few_shards_keeping_every_attribute(tmp_path, catalog):
    root = tmp_path / "s"
    store = SampleStore.create(root, catalog=catalog, shard_max_samples=40)
    keys = np.concatenate([store.append([{"bin": bytes([i]) * (20 + i), "__key__": f"user-{i}"}], timestamps=100 + i,
                                        labels=[i % 3]) for i in range(25)])
    def rows(c):
        out = np.zeros(10, RECORD)
        out["x"], out["label"] = 10 * c, c % 2
        return out

    rkeys = np.concatenate([store.append_records(rows(c), timestamps=c, labels="label") for c in range(8)])
    store.delete(keys[3:4])
    before = {g["__store_key__"]: g for g in store.get(np.delete(keys, 3))}
    meta = store.lookup(np.delete(keys, 3)), store.lookup(rkeys)
    appended = store.appended_since(0)
    assert len(_shard_files(root)) == 33
    stats = store.compact()
    assert stats["shards_merged"] == 33 and stats["shards_rewritten"] == stats["shards_removed"] == 0
    # 24 samples: one shard (limit 40); 8 record shards: one; no old file left
    assert len(_shard_files(root)) == 2 and stats["erasures_pending"] == 0
    after = store.get(np.delete(keys, 3))
    for got in after:
        want = before[got["__store_key__"]]
        assert {k: v for k, v in got.items() if k != "__url__"} == {k: v for k, v in want.items() if k != "__url__"}
    assert store.get_records(rkeys)["x"].tolist() == [10 * c for c in range(8) for _ in range(10)]
    for old, new in zip(meta, (store.lookup(np.delete(keys, 3)), store.lookup(rkeys))):
        assert old.timestamps.tolist() == new.timestamps.tolist() and old.labels.tolist() == new.labels.tolist()
    again = store.appended_since(0)
    assert again.keys.tolist() == appended.keys.tolist()
    with pytest.raises(DeletedKeyError):
        store.get(keys[3:4])
    assert store.compact()["shards_merged"] == 0  # nothing small left to merge
    store.close()


def test_merging_can_be_switched_off_and_stops_at_the_shard_limits(tmp_path):
    root = tmp_path / "s"
    store = SampleStore.create(root, shard_max_samples=8)
    keys = np.concatenate([store.append([{"bin": b"x" * 10}]) for _ in range(10)])
    assert store.compact(merge_small=False)["shards_merged"] == 0 and len(_shard_files(root)) == 10
    stats = store.compact()
    # 10 one-sample shards (each small: 1 * 4 < 8) merged in groups of at most 8 samples
    assert stats["shards_merged"] == 10 and len(_shard_files(root)) == 2
    assert store.get_member(keys, "bin").tolist() == [b"x" * 10] * 10
    store.close()


def test_a_remote_compaction_reads_survivors_with_few_requests(monkeypatch):
    url = f"memory://lm-compact-{uuid.uuid4().hex}/s"
    store = SampleStore.create(url)
    keys = store.append([{"bin": bytes([i % 251]) * 300} for i in range(200)])
    store.delete(keys[::7])
    calls = []
    real = StoreFS.read_ranges

    def counting(self, rel, starts, ends):
        calls.append(len(starts))
        return real(self, rel, starts, ends)

    monkeypatch.setattr(StoreFS, "read_ranges", counting)
    assert store.compact()["shards_rewritten"] == 1
    survivors = np.setdiff1d(keys, keys[::7])
    assert len(calls) == 1 and calls[0] == 1  # 171 neighbouring samples: one coalesced request
    monkeypatch.setattr(StoreFS, "read_ranges", real)
    assert store.get_member(survivors, "bin").tolist() == [bytes([int(k) % 251]) * 300 for k in survivors]
    store.close()


def test_a_compaction_beside_a_concurrent_delete_never_brings_it_back(tmp_path, postgres_url, monkeypatch):
    root = tmp_path / "s"
    compactor = SampleStore.create(root, catalog=postgres_url)
    other = SampleStore.open(root)
    keys = compactor.append([{"bin": bytes([i]) * 40} for i in range(10)])
    compactor.delete(keys[:1])
    real = compaction_module.Compaction._write
    copies = []

    def write_then_other_deletes(self, pub, state):
        out = real(self, pub, state)
        copies.append(out[0])
        if len(copies) == 1:  # while the first copy is made, another process deletes a survivor
            other.delete(keys[5:6])
        return out

    monkeypatch.setattr(compaction_module.Compaction, "_write", write_then_other_deletes)
    stats = compactor.compact()
    assert len(copies) == 2 and stats["shards_rewritten"] == 1 and stats["groups_left_busy"] == 0
    assert not os.path.exists(os.path.join(root, "shards", f"shard-{copies[0]:06d}.tar"))  # the stale copy
    for s in (compactor, other):
        assert s.contains(keys).tolist() == [i not in (0, 5) for i in range(10)]
        with pytest.raises(DeletedKeyError):
            s.get(keys[5:6])
    assert _shard_files(root) == [f"shard-{copies[1]:06d}.tar"]
    compactor.close()
    other.close()


def test_a_deleted_single_row_record_is_not_brought_back_by_a_merge(tmp_path, catalog):
    store = SampleStore.create(tmp_path / "s", catalog=catalog, shard_max_samples=1)
    one = np.zeros(1, RECORD)
    first, second = store.append_records(one), store.append_records(one.copy())
    store.delete(first)
    assert store.compact()["shards_merged"] == 2
    assert len(store) == 1 and store.contains(np.concatenate([first, second])).tolist() == [False, True]
    with pytest.raises(DeletedKeyError):
        store.get_records(first)
    store.close()
