"""Behaviour of SampleStore: append, records, ingest, get, queries, delete, compact, reopen."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from lightning_modyn.datasets import CRITEO_DTYPE, synthetic_criteo_rows
from lightning_modyn.store import (
    NO_LABEL,
    DeletedKeyError,
    ReadOnlyStoreError,
    SampleStore,
    ShardMissingError,
    UnknownKeyError,
    decode_sample,
)


@pytest.fixture
def store(tmp_path, catalog):
    s = SampleStore.create(tmp_path / "store", catalog=catalog)
    yield s
    s.close()


def make_samples(n, start=0, size=100):
    rng = np.random.default_rng(start)
    return [{"bin": rng.integers(0, 256, size, dtype=np.uint8).tobytes(), "cls": (start + i) % 3,
             "json": {"i": start + i}} for i in range(n)]


def test_append_returns_consecutive_stable_keys_and_exact_bytes(store):
    samples = make_samples(5)
    keys = store.append(samples, timestamps=[10, 11, 12, 13, 14], labels="cls")
    assert keys.dtype == np.int64 and keys.tolist() == [0, 1, 2, 3, 4]
    more = store.append(make_samples(3, start=5), timestamps=20)
    assert more.tolist() == [5, 6, 7]
    got = store.get([3, 0, 6])
    assert [g["__store_key__"] for g in got] == [3, 0, 6]
    assert got[0]["bin"] == samples[3]["bin"]
    assert got[0]["cls"] == b"0" and decode_sample(got[0])["json"] == {"i": 3}
    assert got[0]["__timestamp__"] == 13 and got[0]["__label__"] == 0
    assert got[2]["__label__"] is None and got[2]["__timestamp__"] == 20
    assert got[0]["__key__"] == "000000000003"


def test_user_keys_and_value_types_round_trip(store):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    keys = store.append([{"__key__": "dir/sample-a", "txt": "héllo", "npy": arr, "f": 1.5, "list": [1, 2]}])
    (got,) = store.get(keys)
    assert got["__key__"] == "dir/sample-a"
    assert got["txt"] == "héllo".encode()
    decoded = decode_sample(got)
    np.testing.assert_array_equal(np.load(io.BytesIO(got["npy"]), allow_pickle=False), arr)
    assert got["f"] == b"1.5" and got["list"] == b"[1,2]"
    assert decoded["txt"] == "héllo"


def test_default_timestamp_is_append_time(store):
    import time

    before = int(time.time())
    keys = store.append(make_samples(2))
    after = int(time.time())
    ts = [g["__timestamp__"] for g in store.get(keys)]
    assert all(before <= t <= after for t in ts)


def test_shards_roll_over_by_count_and_size(tmp_path, catalog):
    store = SampleStore.create(tmp_path / "s", catalog=catalog, shard_max_samples=4, shard_max_bytes=10**9)
    keys = store.append(make_samples(10))
    assert store.info()["shards"] == 3
    assert [g["__store_key__"] for g in store.get(keys[::-1])] == keys[::-1].tolist()
    store.close()
    small = SampleStore.create(tmp_path / "t", catalog=catalog, shard_max_bytes=2048)
    small.append(make_samples(6, size=1000))
    assert small.info()["shards"] >= 3
    small.close()


def test_records_round_trip_row_exact_in_requested_order(store):
    rows = synthetic_criteo_rows(50_000, seed=3)
    keys = store.append_records(rows, timestamps=np.arange(50_000) // 7, labels="label")
    rng = np.random.default_rng(0)
    pick = rng.choice(keys, 4096, replace=True)
    got = store.get_records(pick)
    assert got.dtype == CRITEO_DTYPE
    assert got.tobytes() == rows[pick - keys[0]].tobytes()
    assert store.record_dtype == CRITEO_DTYPE


def test_records_bytes_per_row_close_to_payload(tmp_path, catalog):
    store = SampleStore.create(tmp_path / "s", catalog=catalog)
    n = 200_000
    store.append_records(synthetic_criteo_rows(n), timestamps=np.arange(n) // 1000, labels="label")
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(tmp_path / "s") for f in fs)
    assert total / n <= 1.1 * CRITEO_DTYPE.itemsize


def test_records_get_returns_row_bytes_and_meta(store):
    rows = synthetic_criteo_rows(10)
    keys = store.append_records(rows, timestamps=np.arange(100, 110), labels=np.arange(10) % 4)
    (got,) = store.get([keys[6]])
    assert got["rows"] == rows[6].tobytes()
    assert got["__timestamp__"] == 106 and got["__label__"] == 2


def test_mixed_samples_and_records(store):
    a = store.append(make_samples(3))
    r = store.append_records(synthetic_criteo_rows(5))
    b = store.append(make_samples(2, start=3))
    got = store.get([int(r[1]), int(a[2]), int(b[0])])
    assert "rows" in got[0] and "bin" in got[1] and got[2]["__store_key__"] == b[0]
    with pytest.raises(Exception, match="is a sample, not a record"):
        store.get_records([a[0]])


def test_time_range_after_key_and_label_counts(store):
    k1 = store.append(make_samples(6), timestamps=[0, 5, 10, 15, 20, 25], labels=[0, 1, 1, 2, 2, 2])
    rows = synthetic_criteo_rows(100)
    k2 = store.append_records(rows, timestamps=np.arange(100) + 12, labels="label")
    window = store.time_range(10, 20)
    expected = set(k1[[2, 3]].tolist()) | set(k2[:8].tolist())
    assert set(window.keys.tolist()) == expected
    assert np.all((window.timestamps >= 10) & (window.timestamps < 20))
    assert np.all(np.diff(window.keys) > 0)
    after = store.keys_after(int(k1[4]))
    assert after.keys.tolist() == [int(k1[5])] + k2.tolist()
    assert store.keys_after(int(k2[49])).keys.tolist() == k2[50:].tolist()
    counts = store.label_counts()
    rec = np.bincount(rows["label"], minlength=3)
    assert counts[0] == 1 + rec[0] and counts[1] == 2 + rec[1] and counts[2] == 3
    assert store.all().labels[:6].tolist() == [0, 1, 1, 2, 2, 2]


def test_unlabeled_samples_have_no_label_in_arrays(store):
    store.append(make_samples(2))
    assert store.all().labels.tolist() == [NO_LABEL, NO_LABEL]
    assert store.label_counts() == {}


def test_appended_since(store):
    import time

    store.append(make_samples(2))
    t = int(time.time()) + 1
    assert len(store.appended_since(t)) == 0
    assert len(store.appended_since(t - 5)) == 2


def test_delete_hides_at_once_and_compact_removes_bytes(store, tmp_path):
    marker = b"UNIQUE-MARKER-" * 4
    keys = store.append([{"bin": marker + bytes([i])} for i in range(4)], labels=[0, 1, 0, 1])
    rows = synthetic_criteo_rows(1000)
    rkeys = store.append_records(rows, labels="label")
    assert store.delete([keys[1], rkeys[10], rkeys[11], rkeys[500]]) == 4
    assert store.delete([keys[1]]) == 0  # already deleted: no-op
    for k in (keys[1], rkeys[11]):
        with pytest.raises(DeletedKeyError, match=f"key {k} was deleted"):
            store.get([k])
    with pytest.raises(DeletedKeyError):
        store.get_records([rkeys[500]])
    assert len(store) == 3 + 997
    assert store.label_counts()[1] == 1 + int(rows["label"].sum()) - int(rows["label"][[10, 11, 500]].sum())
    stats = store.compact()
    assert stats["shards_rewritten"] == 2  # bytes_freed may be ~0: split record runs add headers
    raw = b"".join(open(os.path.join(dp, f), "rb").read()
                   for dp, _, fs in os.walk(tmp_path / "store") for f in fs if f.endswith(".tar"))
    assert marker + bytes([1]) not in raw and marker + bytes([0]) in raw
    assert rows[11].tobytes() not in raw
    live = np.setdiff1d(rkeys, rkeys[[10, 11, 500]])
    assert store.get_records(live).tobytes() == rows[live - rkeys[0]].tobytes()
    assert [g["bin"] for g in store.get(keys[[0, 2, 3]])] == [marker + bytes([i]) for i in (0, 2, 3)]
    with pytest.raises(DeletedKeyError):
        store.get([keys[1]])
    assert len(store.time_range(None, None)) == 1000
    assert store.info()["awaiting_compaction"] == 0


def test_delete_unknown_key_deletes_nothing(store):
    keys = store.append(make_samples(3))
    with pytest.raises(UnknownKeyError, match="unknown key 99"):
        store.delete([keys[0], 99])
    assert len(store) == 3
    assert store.get([keys[0]])[0]["__store_key__"] == keys[0]


def test_compact_removes_fully_deleted_shard(tmp_path, catalog):
    store = SampleStore.create(tmp_path / "s", catalog=catalog, shard_max_samples=2)
    keys = store.append(make_samples(4))
    store.delete(keys[:2])
    stats = store.compact()
    assert stats["shards_removed"] == 1
    assert len(os.listdir(tmp_path / "s" / "shards")) == 1
    assert [g["__store_key__"] for g in store.get(keys[2:])] == keys[2:].tolist()
    store.close()


def test_reopen_sees_everything_and_keys_never_reused(tmp_path, catalog):
    url = tmp_path / "s"
    store = SampleStore.create(url, catalog=catalog)
    keys = store.append(make_samples(3))
    store.delete(keys[2:])
    store.compact()
    store.close()
    store = SampleStore.open(url)
    new = store.append(make_samples(1, start=9))
    assert new.tolist() == [3]
    assert store.get(keys[:2])[1]["__store_key__"] == 1
    store.close()


def test_reader_sees_writer_commits(tmp_path, catalog):
    writer = SampleStore.create(tmp_path / "s", catalog=catalog)
    keys = writer.append(make_samples(2))
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    assert len(reader.get(keys)) == 2
    more = writer.append(make_samples(2, start=2))
    assert [g["__store_key__"] for g in reader.get(more)] == more.tolist()
    writer.delete(keys[:1])
    with pytest.raises(DeletedKeyError):
        reader.get(keys[:1])
    reader.close()
    writer.close()


def test_pinned_reads_see_one_snapshot_on_their_thread_and_own_writes(tmp_path, catalog):
    import threading

    writer = SampleStore.create(tmp_path / "s", catalog=catalog)
    samples = make_samples(4)
    keys = writer.append(samples)
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    seen_elsewhere = []
    with reader.pinned():
        order = reader.read_order(keys)
        writer.delete(keys[:1])  # another process's commit, made while the reader is pinned
        with reader.pinned():  # nested: the same snapshot, in which key 0 is still live
            assert reader.get(keys[:1])[0]["bin"] == samples[0]["bin"]
        assert reader.lookup(keys).keys.tolist() == keys.tolist()
        got = reader.get_member(keys[order][1:], "bin")
        assert [got[i] for i in range(3)] == [samples[int(j)]["bin"] for j in order[1:]]
        # a member layout loaded after the delete no longer has key 0: a clear error, never wrong bytes
        with pytest.raises(DeletedKeyError, match=f"key {int(keys[0])} was deleted"):
            reader.get_member(keys, "bin")
        # another thread is not pinned: it sees the delete at once
        t = threading.Thread(target=lambda: seen_elsewhere.append(bool(reader.contains(keys[:1])[0])))
        t.start()
        t.join()
    assert seen_elsewhere == [False]
    with pytest.raises(DeletedKeyError, match=f"key {int(keys[0])} was deleted"):
        reader.get(keys[:1])  # unpinned again: the delete is seen
    with writer.pinned():
        assert writer.get(keys[1:2])[0]["bin"] == samples[1]["bin"]
        writer.delete(keys[1:2])  # this store's own write inside its pin is seen at once
        with pytest.raises(DeletedKeyError):
            writer.get(keys[1:2])
        more = writer.append(make_samples(1, start=9))
        assert writer.get(more)[0]["__store_key__"] == int(more[0])
    reader.close()
    writer.close()


def test_repeated_lookups_of_a_batch_stay_right_after_the_caller_changes_its_array(store):
    samples = make_samples(6)
    keys = store.append(samples)
    store.delete(keys[2:3])
    live = store.contains(keys)
    live |= True  # the caller's own array: changing it must not change what the store finds next
    with pytest.raises(DeletedKeyError, match=f"key {int(keys[2])} was deleted"):
        store.get(keys)
    assert store.contains(keys).tolist() == [True, True, False, True, True, True]
    keys = store.append(samples)
    ask = keys[::-1].copy()
    first = store.lookup(ask).keys.tolist()
    ask[:] = keys  # the same array object, new contents: must not be answered from the previous lookup
    assert store.lookup(ask).keys.tolist() == keys.tolist() and first == keys[::-1].tolist()
    order = store.read_order(keys)
    store.delete(keys[order[:1]])
    with pytest.raises(DeletedKeyError):
        store.get_member(keys[order], "bin")


def _writer_and_reader(tmp_path, n, per_shard, catalog=None):
    """A store of ``n`` samples in shards of ``per_shard``: its writer, the samples, their keys, and a reader."""
    writer = SampleStore.create(tmp_path / "s", shard_max_samples=per_shard, catalog=catalog)
    samples = make_samples(n)
    keys = writer.append(samples)
    return writer, samples, keys, SampleStore.open(tmp_path / "s", readonly=True)


def _read_bin(store, keys):
    """In a child: the members read, and whether the store still had the snapshot its parent marked."""
    got = store.get_member(keys, "bin")
    return getattr(store._reader.snapshot(), "made_by", None) == "parent", [got[i] for i in range(len(keys))]


def test_a_forked_child_keeps_its_parents_snapshot_only_while_the_catalog_is_unchanged(tmp_path, in_forked_child, catalog):
    writer, samples, keys, reader = _writer_and_reader(tmp_path, 12, per_shard=5, catalog=catalog)
    assert reader.contains(keys).all()  # the parent locates the keys (the DataModule does, for its training set)
    reader.get_member(keys[:2], "bin")  # and has their member layout
    reader._reader.snapshot().made_by = "parent"
    # nothing changed: the child reads with the parent's snapshot instead of rebuilding it
    status, result = in_forked_child(_read_bin, reader, keys[[3, 11, 0]])
    assert (status, result) == ("ok", (True, [samples[3]["bin"], samples[11]["bin"], samples[0]["bin"]]))
    more = make_samples(3, start=12)
    new_keys = writer.append(more)  # committed after the parent's snapshot: the child must see it
    status, result = in_forked_child(_read_bin, reader, np.concatenate([new_keys, keys[:1]]))
    assert (status, result) == ("ok", (False, [m["bin"] for m in more] + [samples[0]["bin"]]))
    writer.delete(keys[4:5])  # and a delete, which the parent's snapshot does not know of yet
    status, message = in_forked_child(_read_bin, reader, keys[4:6])
    assert status == "DeletedKeyError" and f"key {int(keys[4])} was deleted" in message
    reader.close()
    writer.close()


def test_member_layouts_grow_with_the_keys_read_and_reload_after_a_delete(tmp_path, catalog):
    writer, samples, keys, reader = _writer_and_reader(tmp_path, 6, per_shard=4, catalog=catalog)
    assert reader.get_member(keys[::-1], "bin").tolist() == [s["bin"] for s in samples[::-1]]
    asked = []
    real = reader.catalog.member_layout
    reader.catalog.member_layout = lambda ext, keys: asked.append((ext, keys.tolist())) or real(ext, keys)
    more = make_samples(5, start=6)
    new_keys = writer.append(more)
    both = np.concatenate([new_keys, keys])
    assert reader.get_member(both, "bin").tolist() == [s["bin"] for s in more + samples]
    assert asked == [("bin", new_keys.tolist())]  # only the appended samples' layouts were read
    writer.delete(keys[1:2])
    with pytest.raises(DeletedKeyError):
        reader.get_member(keys[:2], "bin")
    assert reader.get_member(both[both != keys[1]], "bin").tolist() == [
        s["bin"] for s in more + samples[:1] + samples[2:]]
    # a delete moves keys: the layouts of the samples the reader held are loaded again, once
    assert asked[1:] == [("bin", sorted(set(both.tolist()) - {int(keys[1])}))]
    reader.close()
    writer.close()


def test_new_since_returns_each_commit_once(tmp_path, catalog):
    writer = SampleStore.create(tmp_path / "s", catalog=catalog)
    first = writer.append(make_samples(3))
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    got, cursor = reader.new_since()
    assert got.keys.tolist() == first.tolist()
    assert len(reader.new_since(cursor)[0]) == 0
    rows = np.zeros(4, np.dtype([("x", "<i8")]))
    second = np.concatenate([writer.append(make_samples(2, start=3)), writer.append_records(rows, timestamps=7)])
    writer.delete(second[3:4])  # one record row of the run, deleted before anyone saw it
    got, cursor = reader.new_since(cursor)
    assert got.keys.tolist() == [k for k in second.tolist() if k != second[3]]
    assert got.timestamps[-1] == 7 and len(reader.new_since(cursor)[0]) == 0
    with pytest.raises(TypeError, match="cursor must be None or the"):
        reader.new_since(5)
    reader.close()
    writer.close()


def test_a_reader_holds_the_keys_it_reads_not_the_store(tmp_path, catalog):
    writer = SampleStore.create(tmp_path / "s", catalog=catalog, shard_max_samples=100)
    keys = writer.append(make_samples(1000, size=8))
    rows = np.zeros(5000, np.dtype([("x", "<i8")]))
    rows["x"] = np.arange(5000)
    rkeys = writer.append_records(rows)
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    picked = keys[[5, 500, 999]]
    assert reader.contains(picked).all() and reader.get_records(rkeys[[7, 4000]])["x"].tolist() == [7, 4000]
    snap = reader._reader.snapshot()
    record_entries = int((snap.kind == 1).sum())
    assert sorted(snap.first[snap.kind == 0].tolist()) == picked.tolist() and record_entries >= 1
    training = keys[100:300]
    assert reader.contains(training).all()  # one query locates a training set
    assert len(reader._reader.snapshot().first) == record_entries + 3 + 200
    writer.delete(keys[150:160])
    assert reader.contains(training).tolist() == [not 150 <= i < 160 for i in range(100, 300)]
    snap = reader._reader.snapshot()  # rebuilt after the delete, with what it held, less what was deleted
    assert len(snap.first) == record_entries + 3 + 190
    assert reader.get_member(keys[[999, 100]], "bin").tolist() == [make_samples(1000, size=8)[i]["bin"]
                                                                  for i in (999, 100)]
    reader.close()
    writer.close()


def test_reader_after_compaction_gets_right_bytes_or_clear_error(tmp_path, catalog):
    writer = SampleStore.create(tmp_path / "s", catalog=catalog)
    keys = writer.append(make_samples(4))
    expected = {int(k): g["bin"] for k, g in zip(keys, writer.get(keys))}
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    reader.get(keys)  # caches the snapshot
    writer.delete(keys[:1])
    writer.compact()
    # the reader refreshes its snapshot on the next call and reads the new shard
    assert [g["bin"] for g in reader.get(keys[1:])] == [expected[int(k)] for k in keys[1:]]
    reader.close()
    writer.close()


def test_missing_shard_file_is_a_clear_error(store):
    keys = store.append(make_samples(2))
    path = store.get(keys[:1])[0]["__url__"]
    store.files.forget(path)
    os.remove(os.path.join(store.files.root, path))
    with pytest.raises(ShardMissingError, match="shard-000000.tar"):
        store.get(keys[:1])


def test_pickled_store_reopens_read_only(store):
    keys = store.append(make_samples(2))
    clone = pickle.loads(pickle.dumps(store))
    assert clone.readonly
    assert clone.get(keys)[0]["bin"] == store.get(keys)[0]["bin"]
    clone.close()


def test_memory_filesystem_store_round_trip():
    """A non-local fsspec URL exercises the range-request path and the uploaded catalog."""
    import uuid

    url = f"memory://lm-test-{uuid.uuid4().hex}/store"
    store = SampleStore.create(url)
    keys = store.append(make_samples(5), labels="cls")
    rows = synthetic_criteo_rows(3000)
    rkeys = store.append_records(rows, timestamps=np.arange(3000), labels="label")
    reader = SampleStore.open(url, readonly=True)
    assert [g["bin"] for g in reader.get(keys[[4, 0]])] == [g["bin"] for g in store.get(keys[[4, 0]])]
    pick = np.random.default_rng(1).choice(rkeys, 500)
    assert reader.get_records(pick).tobytes() == rows[pick - rkeys[0]].tobytes()
    store.delete(rkeys[:1000])
    store.compact()
    reader.refresh()
    assert reader.get_records(rkeys[1000:1010]).tobytes() == rows[1000:1010].tobytes()
    with pytest.raises(DeletedKeyError):
        reader.get_records(rkeys[:1])
    reader.close()
    store.close()


def test_get_member_fixed_size_is_one_array_in_request_order(tmp_path, catalog):
    store = SampleStore.create(tmp_path / "s", catalog=catalog, shard_max_samples=300)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (1000, 3072), dtype=np.uint8)
    keys = store.append([{"raw": img.tobytes(), "cls": i % 10} for i, img in enumerate(images)])
    pick = rng.choice(len(keys), 257)
    batch = store.get_member(keys[pick], "raw")  # spans several shards
    assert len(batch) == 257 and batch.fixed_size == 3072
    np.testing.assert_array_equal(batch.array(), images[pick])
    one_shard = np.arange(10, 60)[::-1]
    from_one = store.get_member(keys[one_shard], "raw").array()
    np.testing.assert_array_equal(from_one, images[one_shard])
    assert from_one.flags.c_contiguous  # one copy of the member's bytes, no strided view of whole samples
    assert store.get_member(keys[:3], "cls").tolist() == [b"0", b"1", b"2"]
    assert batch[5] == images[pick[5]].tobytes()
    assert len(store.get_member([], "raw")) == 0


def test_get_member_variable_size_and_after_compaction(store):
    payloads = [bytes([i]) * (10 + 37 * i) for i in range(20)]
    keys = store.append([{"bin": p, "txt": str(i)} for i, p in enumerate(payloads)])
    batch = store.get_member(keys[::-1], "bin")
    assert batch.fixed_size is None
    assert batch.tolist() == payloads[::-1]
    assert batch.data[batch.offsets[1]:batch.offsets[2]].tobytes() == payloads[18]
    with pytest.raises(ValueError, match="differ in size"):
        batch.array()
    store.delete(keys[:5])
    store.compact()
    assert store.get_member(keys[5:], "bin").tolist() == payloads[5:]
    with pytest.raises(DeletedKeyError):
        store.get_member(keys[:1], "bin")


def test_get_member_errors_name_key_and_member(store):
    keys = store.append([{"bin": b"x"}, {"txt": "y"}])
    rkeys = store.append_records(synthetic_criteo_rows(2))
    with pytest.raises(Exception, match=f"sample {keys[1]} has no 'bin' member"):
        store.get_member(keys, "bin")
    with pytest.raises(Exception, match=f"key {rkeys[0]} is a record"):
        store.get_member(rkeys, "bin")


def test_get_member_on_ingested_and_remote_shards(tmp_path):
    import uuid

    import webdataset as wds

    shard = str(tmp_path / "in.tar")
    with wds.TarWriter(shard) as sink:
        for i in range(30):
            sink.write({"__key__": f"k{i}", "raw": bytes([i]) * 100, "cls": i})
    for url in (str(tmp_path / "local"), f"memory://lm-{uuid.uuid4().hex}/s"):
        store = SampleStore.create(url)
        if url.startswith("memory://"):
            import fsspec

            fsspec.filesystem("memory").pipe(url + "-in.tar", open(shard, "rb").read())
            keys = store.ingest([url + "-in.tar"])
        else:
            keys = store.ingest([shard])
        got = store.get_member(keys[[29, 0, 7]], "raw")
        np.testing.assert_array_equal(got.array(), np.array([[29] * 100, [0] * 100, [7] * 100], np.uint8))
        store.close()


def test_read_order_groups_keys_by_shard_and_reads_them_back_exactly(tmp_path, catalog):
    store = SampleStore.create(tmp_path / "s", catalog=catalog, shard_max_samples=300)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (1000, 3072), dtype=np.uint8)
    keys = store.append([{"raw": img.tobytes(), "cls": i % 10} for i, img in enumerate(images)])
    rows = synthetic_criteo_rows(900, seed=2)
    rkeys = np.concatenate([store.append_records(rows[i : i + 300]) for i in range(0, 900, 300)])
    pick = rng.permutation(len(keys))[:400]
    order = store.read_order(keys[pick])
    assert sorted(order.tolist()) == list(range(400))
    shard_of = pick[order] // 300  # shards hold 300 samples each, in key order
    assert (np.diff(shard_of) >= 0).all() and len(np.unique(shard_of)) == 4
    for g in np.unique(shard_of):  # stable: request order kept inside each shard
        inside = order[shard_of == g]
        assert (np.diff(inside) > 0).all()
    regrouped = store.get_member(keys[pick][order], "raw")
    np.testing.assert_array_equal(regrouped.array(), images[pick[order]])
    assert store.get_member(keys[pick][order], "cls").tolist() == [str(i % 10).encode() for i in pick[order]]
    rpick = rng.permutation(900)[:500]
    rorder = store.read_order(rkeys[rpick])
    assert (np.diff(rpick[rorder] // 300) >= 0).all()
    assert store.get_records(rkeys[rpick][rorder]).tobytes() == rows[rpick[rorder]].tobytes()
    mixed = np.concatenate([rkeys[:5], keys[:5], rkeys[-5:]])
    assert store.read_order(mixed).tolist() == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    assert store.read_order([]).tolist() == []
    store.delete(keys[:1])
    with pytest.raises(DeletedKeyError, match=f"key {int(keys[0])} was deleted"):
        store.read_order(keys[:3])
    with pytest.raises(UnknownKeyError):
        store.read_order([10**9])
    store.close()


def test_get_member_last_sample_of_shard_shorter_than_a_row(tmp_path, catalog):
    """Regression: the stride view must not be used when the last sample does not fill a whole row."""
    import webdataset as wds

    shard = str(tmp_path / "in.tar")
    with wds.TarWriter(shard) as sink:
        for i in range(2):
            sink.write({"__key__": f"k{i}", "bin": bytes([i + 1]) * 37})
    store = SampleStore.create(tmp_path / "s", catalog=catalog)
    keys = store.ingest([shard], hand_over=True)
    store.delete(keys[:1])
    assert store.compact()["shards_rewritten"] == 1
    assert store.get_member(keys[1:], "bin").tolist() == [bytes([2]) * 37]
    store.close()


def test_create_finishes_a_create_that_was_killed_before_its_marker(tmp_path):
    from lightning_modyn.store.catalog_sqlite import SQLiteCatalog

    root = tmp_path / "s"
    (root / "shards").mkdir(parents=True)
    SQLiteCatalog(str(root / "catalog.sqlite"), create=True).initialise({})
    store = SampleStore.create(root)
    assert store.append(make_samples(1)).tolist() == [0]
    store.close()
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "user-file.txt").write_text("keep me")
    with pytest.raises(Exception, match="not empty"):
        SampleStore.create(tmp_path / "t")
    assert (tmp_path / "t" / "user-file.txt").read_text() == "keep me"


def test_remote_records_only_store_reads_rows():
    import uuid

    url = f"memory://lm-rec-{uuid.uuid4().hex}/s"
    store = SampleStore.create(url)
    rows = synthetic_criteo_rows(5000, seed=9)
    keys = store.append_records(rows)
    pick = np.random.default_rng(2).choice(keys, 300)
    assert store.get_records(pick).tobytes() == rows[pick - keys[0]].tobytes()
    store.close()


def test_attributes_are_json_values_kept_with_the_store(tmp_path, catalog):
    store = SampleStore.create(tmp_path / "s", catalog=catalog)
    assert store.attributes == {}
    store.set_attribute("stream", {"class_path": "x.Y", "init_args": {"seed": 3, "shifts": [7, 14]}})
    store.set_attribute("note", "hello")
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    assert reader.attributes == {"stream": {"class_path": "x.Y", "init_args": {"seed": 3, "shifts": [7, 14]}},
                                 "note": "hello"}
    with pytest.raises(TypeError, match="attribute 'bad' of .*not JSON-able"):
        store.set_attribute("bad", object())
    with pytest.raises(ValueError, match="non-empty strings"):
        store.set_attribute("", 1)
    with pytest.raises(ReadOnlyStoreError):
        reader.set_attribute("note", "changed")
    reader.close()
    store.close()
    with SampleStore.open(tmp_path / "s") as again:
        assert again.attributes["note"] == "hello"


def test_threads_sharing_one_store_read_exact_bytes_while_another_process_commits(tmp_path, catalog):
    import sys
    import threading
    import time

    writer = SampleStore.create(tmp_path / "s", catalog=catalog, shard_max_samples=2)
    value = {}  # key -> first byte of its member, for the keys that are never deleted
    keys = writer.append([{"bin": bytes([k % 251]) * 64} for k in range(40)])
    value.update((int(k), k % 251) for k in keys.tolist())
    reader = SampleStore.open(tmp_path / "s", readonly=True)  # one object, shared by the threads below
    stop = time.monotonic() + 3.0
    errors: list[BaseException] = []
    wrong: list[int] = []
    lock = threading.Lock()

    def write():  # commits from another connection: appends, deletes and compactions that replace shards
        count = 0
        while time.monotonic() < stop:
            count += 1
            new = writer.append([{"bin": bytes([(count + j) % 251]) * 64} for j in range(4)])
            with lock:
                value.update((int(k), (count + j) % 251) for j, k in enumerate(new[:2].tolist()))
            writer.delete(new[2:])
            writer.compact()

    def read(seed):
        rng = np.random.default_rng(seed)
        while time.monotonic() < stop:
            with lock:
                live = np.array(list(value))
            batch = live[rng.integers(0, len(live), 8)]
            expect = [value[k] for k in batch.tolist()]
            try:
                got = reader.get_member(batch, "bin").array()[:, 0].tolist()
                samples = reader.get(batch[:3])
                reader.time_range(None, None)
            except Exception as err:  # noqa: BLE001 - any error is a failure here
                errors.append(err)
                continue
            if got != expect or [s["bin"][0] for s in samples] != expect[:3]:
                wrong.append(1)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, inside store calls
    threads = [threading.Thread(target=write)] + [threading.Thread(target=read, args=(i,)) for i in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(old_interval)
    assert not errors, f"{len(errors)} errors, first: {errors[0]!r}"
    assert not wrong
    reader.close()
    writer.close()
