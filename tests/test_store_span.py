"""Shards side by side in one address range (``spanmap``): exact bytes, lifetimes, and the store's reads through it."""

from __future__ import annotations

import gc
import io
import tarfile
import os

import numpy as np
import pytest

from lightning_modyn.store import SampleStore, ShardMissingError, TruncatedShardError, spanmap

pytestmark = pytest.mark.skipif(not spanmap.supported(), reason="spanning needs 64-bit Linux or macOS")


def _files(tmp_path, sizes):
    rng = np.random.default_rng(0)
    out = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i}"
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        path.write_bytes(data)
        out.append((str(path), data))
    return out


def test_files_are_mapped_back_to_back_from_page_boundaries_with_their_exact_bytes(tmp_path):
    files = _files(tmp_path, [1, 4095, 4096, 10_000, 0, 7])
    span = spanmap.SpanMap(reserve=1 << 20)
    where = [span.add(path) for path, _ in files]
    arr = span.array()
    starts = [w[0] for w in where]
    assert [w[1] for w in where] == [len(d) for _, d in files]
    assert all(s % os.sysconf("SC_PAGE_SIZE") == 0 for s in starts) and starts == sorted(starts)
    for (start, size), (_, data) in zip(where, files):
        assert arr[start : start + size].tobytes() == data
    assert not arr.flags.writeable
    with pytest.raises(ValueError):
        arr[0] = 1
    # gather: rows of any size from anywhere in any file, in the order asked, one copy
    pos = np.array([starts[3] + 9_000, starts[2] + 4093, starts[1] + 5, starts[3] + 3], np.int64)
    got = spanmap.gather(arr, pos, 3)
    assert got.shape == (4, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
    assert [bytes(r) for r in got] == [files[3][1][9_000:9_003], files[2][1][4093:], files[1][1][5:8],
                                      files[3][1][3:6]]


def test_a_full_span_and_a_missing_file_are_reported(tmp_path):
    (path, _), = _files(tmp_path, [3 * 4096])
    span = spanmap.SpanMap(reserve=4 * 4096)
    span.add(path)
    with pytest.raises(spanmap.SpanFullError, match="no room"):
        span.add(path)
    with pytest.raises(ShardMissingError, match="missing"):
        span.add(str(tmp_path / "nope"))


def test_arrays_keep_the_mapping_alive_and_it_is_released_after_the_last(tmp_path):
    (path, data), = _files(tmp_path, [9000])
    span = spanmap.SpanMap(reserve=1 << 20)
    span.add(path)
    arr = span.array()
    rows = spanmap.gather(arr, np.array([10]), 5)  # a copy: owns its memory
    released = span._finalizer
    del span
    gc.collect()
    assert released.alive and arr[:9000].tobytes() == data  # the array still reads the file
    del arr
    gc.collect()
    assert not released.alive and rows.tobytes() == data[10:15]


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("LIGHTNING_MODYN_SPANMAP", "0")
    assert not spanmap.supported()
    with pytest.raises(OSError, match="needs 64-bit"):
        spanmap.SpanMap()


@pytest.fixture(params=[True, False], ids=["span", "map-per-shard"])
def span_on(request, monkeypatch):
    """Run a test with shards spanned (the default) and with one map per shard (``LIGHTNING_MODYN_SPANMAP=0``)."""
    if not request.param:
        monkeypatch.setenv("LIGHTNING_MODYN_SPANMAP", "0")
    return request.param


def _sample_store(tmp_path, n=40, per_shard=6):
    store = SampleStore.create(tmp_path / "s", shard_max_samples=per_shard)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 48), dtype=np.uint8)
    keys = store.append([{"bin": im.tobytes(), "cls": i % 3} for i, im in enumerate(images)])
    return store, keys, images


def test_member_batches_over_many_shards_read_in_request_order(tmp_path, span_on):
    store, keys, images = _sample_store(tmp_path)
    order = np.random.default_rng(2).permutation(len(keys))
    batch = store.get_member(keys[order], "bin")
    np.testing.assert_array_equal(batch.array(), images[order])
    assert (store.files._span is not None) == span_on  # which path read it
    store.close()


def test_appended_shards_join_the_span_and_a_compaction_starts_a_new_one(tmp_path):
    store, keys, images = _sample_store(tmp_path, n=18)
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    reader.get_member(keys[::-1], "bin")
    span, spanned = reader.files._span, set(reader.files._spanned)
    more = np.random.default_rng(5).integers(0, 256, (13, 48), dtype=np.uint8)
    new_keys = store.append([{"bin": im.tobytes()} for im in more])
    both = np.concatenate([new_keys, keys])[::-1]
    np.testing.assert_array_equal(reader.get_member(both, "bin").array(), np.concatenate([more, images])[::-1])
    assert reader.files._span is span and spanned < set(reader.files._spanned)  # added, nothing moved
    # a compaction in the writer replaces shards: the reader unmaps the old ones (their disk space is freed)
    store.delete(keys[:7])
    store.compact()
    live = both[np.isin(both, keys[:7], invert=True)]
    expect = {int(k): im for k, im in zip(np.concatenate([keys, new_keys]), np.concatenate([images, more]))}
    np.testing.assert_array_equal(reader.get_member(live, "bin").array(), np.stack([expect[int(k)] for k in live]))
    shards_now = {s["path"] for s in reader.catalog.shards()}
    assert reader.files._span is not span and set(reader.files._spanned) <= shards_now
    assert set(reader.files._maps) <= shards_now
    # and the writer, which removed the files itself, dropped its span too
    np.testing.assert_array_equal(store.get_member(live, "bin").array(), np.stack([expect[int(k)] for k in live]))
    assert set(store.files._spanned) <= shards_now
    reader.close()
    store.close()


def _read_bin(store, keys):
    return store.get_member(keys, "bin").array().tobytes()


def test_a_forked_child_reads_with_its_own_span(tmp_path, in_forked_child):
    store, keys, images = _sample_store(tmp_path)
    order = np.random.default_rng(6).permutation(len(keys))
    store.get_member(keys[order], "bin")  # the parent's span exists before the fork
    assert in_forked_child(_read_bin, store, keys[order[::-1]]) == ("ok", images[order[::-1]].tobytes())
    store.close()


def test_a_shard_shorter_than_the_catalog_says_is_an_error_naming_it(tmp_path, span_on):
    store, keys, images = _sample_store(tmp_path)
    store.close()
    last = sorted((tmp_path / "s").rglob("*.tar"))[-1]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    order = np.random.default_rng(7).permutation(len(keys))
    for batch in (keys[order], keys[-2:]):  # many shards; the truncated one alone
        with pytest.raises(TruncatedShardError, match=f"{last.name}.* has {len(data) // 2} bytes, fewer than"):
            reader.get_member(batch, "bin")
    np.testing.assert_array_equal(reader.get_member(keys[:6], "bin").array(), images[:6])  # the others still read
    reader.close()


def test_batches_in_read_order_read_the_same_bytes(tmp_path, span_on):
    store, keys, images = _sample_store(tmp_path)
    batch = keys[np.random.default_rng(8).permutation(len(keys))]
    order = store.read_order(batch)
    np.testing.assert_array_equal(store.get_member(batch[order], "bin").array(), images[batch[order]])
    store.close()


def test_a_full_span_is_replaced_by_a_larger_one_and_reads_stay_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(spanmap, "RESERVE_BYTES", 4096 * 2)
    store, keys, images = _sample_store(tmp_path, n=12, per_shard=3)  # 4 shards
    store.get_member(keys[[0, 3]], "bin")  # two of them
    first = store.files._span
    assert first.reserve == 4 * first.end and len(store.files._spanned) == 2  # room for 3x as much again
    for n_more in (3, 3, 3, 3, 3):
        more = np.random.default_rng(n_more).integers(0, 256, (n_more, 48), dtype=np.uint8)
        keys = np.concatenate([keys, store.append([{"bin": im.tobytes(), "cls": 1} for im in more])])
        images = np.concatenate([images, more])
        order = np.random.default_rng(len(keys)).permutation(len(keys))
        np.testing.assert_array_equal(store.get_member(keys[order], "bin").array(), images[order])
    last = store.files._span
    assert last is not first and last.reserve > first.reserve and len(store.files._spanned) == 9
    store.close()


def test_where_no_span_can_be_made_reads_go_shard_by_shard(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(spanmap, "SpanMap", refuse)
    store, keys, images = _sample_store(tmp_path)
    order = np.random.default_rng(9).permutation(len(keys))
    for _ in range(2):
        np.testing.assert_array_equal(store.get_member(keys[order], "bin").array(), images[order])
        assert [s["bin"] for s in store.get(keys[order])] == [im.tobytes() for im in images[order]]
    assert store.files._span is None and store.files._span_refused
    store.close()


def test_a_shard_path_used_again_for_another_file_is_read_anew(tmp_path, span_on):

    def shard(payload: bytes) -> str:
        with tarfile.open(tmp_path / "ext.tar", "w", format=tarfile.GNU_FORMAT) as tf:
            for i in range(3):
                info = tarfile.TarInfo(f"s{i}.bin")
                info.size = 100
                tf.addfile(info, io.BytesIO(payload * 100))
        return str(tmp_path / "ext.tar")

    writer = SampleStore.create(tmp_path / "s")
    old = writer.ingest([shard(b"O")], hand_over=True)
    reader = SampleStore.open(tmp_path / "s", readonly=True)
    assert reader.get_member(old[::-1], "bin").array()[:, 0].tobytes() == b"OOO"
    writer.delete(old)
    writer.compact()  # no survivors: the ingested file is removed
    new = writer.ingest([shard(b"N")])  # another file at the same path, as another shard
    assert reader.get_member(new[::-1], "bin").array()[:, 0].tobytes() == b"NNN"
    assert [s["bin"][:1] for s in reader.get(new)] == [b"N"] * 3
    reader.close()
    writer.close()
