"""Bad input to SampleStore: every refusal raises a specific error that names the culprit, and leaves the store intact.

Each test checks three things: the exception class, that its message names what is wrong (the shard file, the
member, the key or the field), and that what was stored before is still there afterwards (the store reopens,
``len()`` is unchanged and earlier samples read back byte-exact).
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from lightning_modyn.store import (
    CompressedShardError,
    DeletedKeyError,
    DuplicateKeyError,
    ReadOnlyStoreError,
    RecordDtypeError,
    SampleEncodingError,
    SampleStore,
    ShardFormatError,
    ShardMissingError,
    StoreError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
    TruncatedShardError,
    UnknownKeyError,
    UnsafeMemberError,
    decode_sample,
    decode_value,
)

REC_DTYPE = np.dtype([("x", "<i8"), ("y", "<f4"), ("label", "<i4")])


# ====================================================================== helpers
def write_tar(path, members, fmt=tarfile.PAX_FORMAT, mode="w"):
    """Write ``members`` (name, bytes) with Python's tarfile; integral mtime so short names get no PAX header."""
    path = os.fspath(path)
    with tarfile.open(path, mode, format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(n, prefix="s", size=700):
    """Members of ``n`` WebDataset samples with a 700-byte payload (two blocks) and a class."""
    out = []
    for i in range(n):
        payload = bytes([i % 256]) * size
        out.append((f"{prefix}{i:03d}.bin", payload))
        out.append((f"{prefix}{i:03d}.cls", str(i % 3).encode()))
    return out


def member_offsets(path):
    """(name, header offset, data offset, size) of every member, as Python's tarfile sees them."""
    with tarfile.open(path, "r:") as tar:
        return [(m.name, m.offset, m.offset_data, m.size) for m in tar.getmembers()]


def shard_files(store_dir):
    return sorted(os.listdir(os.path.join(store_dir, "shards")))


class Stored:
    """A store with known contents, and the means to check that they survived a refused call."""

    def __init__(self, url, store, keys, expected):
        self.url = url
        self.store = store
        self.keys = keys
        self.expected = expected
        self.n = len(store)
        self.files = shard_files(url)

    def assert_intact(self, store=None):
        """The given (or held) store and a fresh read-only reopen both see exactly the original contents."""
        stores = [store or self.store]
        reader = SampleStore.open(self.url, readonly=True)
        stores.append(reader)
        try:
            for s in stores:
                s.refresh()
                assert len(s) == self.n
                got = s.get(self.keys, meta=False)
                assert got == self.expected
                assert s.all().keys.tolist() == sorted(self.keys.tolist())
        finally:
            reader.close()
        assert shard_files(self.url) == self.files  # no orphan shard files, none removed


@pytest.fixture
def stored(tmp_path, catalog):
    url = str(tmp_path / "store")
    store = SampleStore.create(url, catalog=catalog)
    samples = [{"__key__": f"kept{i}", "bin": f"payload-{i}-".encode() * 40, "cls": i % 2} for i in range(4)]
    keys = store.append(samples, timestamps=[100, 101, 102, 103], labels="cls")
    expected = [{"bin": s["bin"], "cls": str(s["cls"]).encode()} for s in samples]
    held = Stored(url, store, keys, expected)
    yield held
    held.store.close()
    store.close()


@pytest.fixture
def records(tmp_path):
    url = str(tmp_path / "rstore")
    store = SampleStore.create(url, block_bytes=64)
    rows = np.zeros(10, REC_DTYPE)
    rows["x"] = np.arange(10) * 1000
    rows["y"] = np.arange(10) / 4
    rows["label"] = np.arange(10) % 3
    keys = store.append_records(rows, timestamps=50, labels="label")
    yield store, keys, rows
    store.close()


# ====================================================================== truncated and corrupted shards
@pytest.mark.parametrize(
    "cut, message",
    [
        ("mid_member", "declares"),  # the second member's data is cut short
        ("member_boundary", "no end-of-archive marker"),  # whole members, but no end-of-archive marker
        ("mid_header", "truncated tar header"),  # a header cut in half
    ],
)
def test_truncated_shard_is_refused_and_nothing_is_indexed(stored, tmp_path, cut, message):
    good = write_tar(tmp_path / "good.tar", sample_members(2, prefix="g"))
    shard = write_tar(tmp_path / "cut.tar", sample_members(3))
    offsets = member_offsets(shard)
    name, header, data, size = offsets[2]  # s001.bin: 700 bytes
    boundary = data + tarfile.BLOCKSIZE * 2  # end of s001.bin (700 bytes -> two blocks)
    length = {"mid_member": data + 100, "member_boundary": boundary, "mid_header": boundary + 100}[cut]
    with open(shard, "r+b") as f:
        f.truncate(length)

    with pytest.raises(TruncatedShardError) as err:
        stored.store.ingest([good, shard])  # the good shard listed first must not be indexed either
    text = str(err.value)
    assert shard in text and message in text
    expected_offset = {"mid_member": header, "member_boundary": boundary, "mid_header": boundary}[cut]
    assert f"offset {expected_offset}" in text
    assert isinstance(err.value, ShardFormatError) and isinstance(err.value, ValueError)
    stored.assert_intact()
    # the good shard was not registered: it can still be ingested on its own
    assert len(stored.store.ingest([good])) == 2


def test_empty_file_is_a_truncated_shard(stored, tmp_path):
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(TruncatedShardError, match="empty.tar"):
        stored.store.ingest([empty])
    stored.assert_intact()


@pytest.mark.parametrize("field, pos", [("name", 0), ("size", 124 + 5), ("checksum", 150), ("magic", 258)])
def test_corrupted_header_checksum_names_file_and_offset(stored, tmp_path, field, pos):
    shard = write_tar(tmp_path / "corrupt.tar", sample_members(3))
    _, header, _, _ = member_offsets(shard)[3]  # s001.cls, not the first header
    with open(shard, "r+b") as f:
        f.seek(header + pos)
        byte = f.read(1)[0]
        f.seek(header + pos)
        f.write(bytes([byte ^ 0x01]))

    with pytest.raises(ShardFormatError) as err:
        stored.store.ingest([shard])
    assert shard in str(err.value)
    assert f"offset {header}" in str(err.value) and "checksum" in str(err.value)
    stored.assert_intact()


def test_file_that_is_not_a_tar_is_refused(stored, tmp_path):
    text = tmp_path / "notes.tar"
    text.write_bytes(b"hello, this is not a tar archive\n" * 40)
    with pytest.raises(ShardFormatError) as err:
        stored.store.ingest([text])
    assert str(text) in str(err.value) and "offset 0" in str(err.value)
    stored.assert_intact()


def test_missing_shard_file_is_named(stored, tmp_path):
    missing = tmp_path / "nowhere" / "shard.tar"
    with pytest.raises(ShardMissingError) as err:
        stored.store.ingest([missing])
    assert isinstance(err.value, FileNotFoundError)
    assert str(missing) in str(err.value)
    stored.assert_intact()


# ====================================================================== compressed shards
@pytest.mark.parametrize(
    "kind, mode, filename",
    [
        ("gzip", "w:gz", "shard.tar.gz"),
        ("gzip", "w:gz", "disguised.tar"),  # detected by content, not by name
        ("bzip2", "w:bz2", "shard.tar.bz2"),
        ("xz", "w:xz", "shard.tar.xz"),
    ],
)
def test_compressed_shard_is_refused_with_the_reason(stored, tmp_path, kind, mode, filename):
    shard = write_tar(tmp_path / filename, sample_members(2), mode=mode)
    with pytest.raises(CompressedShardError) as err:
        stored.store.ingest([shard])
    text = str(err.value)
    assert shard in text and kind in text
    assert "random access" in text and "uncompressed" in text
    assert isinstance(err.value, ShardFormatError)
    stored.assert_intact()


def test_zstd_magic_is_recognised(stored, tmp_path):
    shard = tmp_path / "shard.tar.zst"
    shard.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 2000)
    with pytest.raises(CompressedShardError, match="zstd"):
        stored.store.ingest([shard])
    stored.assert_intact()


def test_webdataset_gzip_shard_is_refused(stored, tmp_path):
    wds = pytest.importorskip("webdataset")
    path = str(tmp_path / "wds.tar.gz")
    with wds.TarWriter(path) as sink:
        sink.write({"__key__": "a", "txt": "hello"})
    with pytest.raises(CompressedShardError, match="gzip"):
        stored.store.ingest([path])
    stored.assert_intact()


# ====================================================================== unsafe member names
@pytest.mark.parametrize(
    "name, fmt",
    [
        ("../x.txt", tarfile.PAX_FORMAT),
        ("/abs/x.txt", tarfile.PAX_FORMAT),
        ("a/../../x.txt", tarfile.PAX_FORMAT),
        ("../" + "d" * 120 + "/x.txt", tarfile.PAX_FORMAT),  # long name: in a PAX 'path' record
        ("../" + "d" * 120 + "/x.txt", tarfile.GNU_FORMAT),  # long name: in a GNU ././@LongLink member
        ("/abs/" + "d" * 120 + "/x.txt", tarfile.GNU_FORMAT),
    ],
)
def test_member_name_escaping_the_root_is_refused(stored, tmp_path, name, fmt):
    members = sample_members(2) + [(name, b"evil")] + sample_members(1, prefix="t")
    shard = write_tar(tmp_path / "unsafe.tar", members, fmt=fmt)
    with tarfile.open(shard) as tar:  # the name really is in the archive
        assert name in tar.getnames()
    with pytest.raises(UnsafeMemberError) as err:
        stored.store.ingest([shard])
    assert shard in str(err.value) and repr(name) in str(err.value)
    stored.assert_intact()


@pytest.mark.parametrize("key", ["../evil", "/abs/evil", "a/../../evil"])
def test_append_key_escaping_the_root_is_refused(stored, key):
    with pytest.raises(UnsafeMemberError) as err:
        stored.store.append([{"txt": "fine"}, {"__key__": key, "txt": "evil"}])
    assert "sample 1" in str(err.value) and key in str(err.value)
    stored.assert_intact()


@pytest.mark.parametrize("key, culprit", [(5, "5"), ("", "''"), ("name.with.dot", "name.with.dot"), (b"k", "b'k'")])
def test_append_malformed_key_is_refused(stored, key, culprit):
    with pytest.raises(SampleEncodingError) as err:
        stored.store.append([{"txt": "fine"}, {"txt": "fine"}, {"__key__": key, "txt": "x"}])
    assert "sample 2" in str(err.value) and "__key__" in str(err.value) and culprit in str(err.value)
    stored.assert_intact()


# ====================================================================== duplicate __key__
def test_duplicate_key_within_one_append(stored):
    samples = [{"__key__": "a", "txt": "1"}, {"__key__": "b", "txt": "2"}, {"__key__": "a", "txt": "3"}]
    with pytest.raises(DuplicateKeyError) as err:
        stored.store.append(samples)
    text = str(err.value)
    assert "'a'" in text and "sample 0" in text and "sample 2" in text
    assert isinstance(err.value, ValueError)
    stored.assert_intact()


def test_duplicate_key_against_the_store(stored):
    with pytest.raises(DuplicateKeyError) as err:
        stored.store.append([{"__key__": "fresh", "txt": "1"}, {"__key__": "kept2", "txt": "2"}])
    text = str(err.value)
    assert "'kept2'" in text and "sample 1" in text and "already in the store" in text
    stored.assert_intact()
    # the refused call did not register "fresh" either
    assert len(stored.store.append([{"__key__": "fresh", "txt": "1"}])) == 1


def test_deleted_key_can_be_reused_after_delete(stored):
    # a design choice worth pinning: __key__ uniqueness is over live samples
    stored.store.delete(stored.keys[:1])
    (new,) = stored.store.append([{"__key__": "kept0", "txt": "again"}])
    assert stored.store.get([new])[0]["__key__"] == "kept0"


def test_duplicate_key_within_one_shard(stored, tmp_path):
    members = [("a.txt", b"1"), ("b.txt", b"2"), ("a.txt", b"3")]  # 'a' twice, not consecutive
    shard = write_tar(tmp_path / "dup.tar", members)
    offs = member_offsets(shard)
    with pytest.raises(DuplicateKeyError) as err:
        stored.store.ingest([shard])
    text = str(err.value)
    assert shard in text and "'a'" in text
    assert f"offsets {offs[0][1]} and {offs[2][1]}" in text
    stored.assert_intact()


def test_same_extension_twice_in_one_sample(stored, tmp_path):
    shard = write_tar(tmp_path / "twice.tar", [("a.txt", b"1"), ("a.txt", b"2")])
    with pytest.raises(ShardFormatError) as err:
        stored.store.ingest([shard])
    assert shard in str(err.value) and "'a'" in str(err.value) and "'txt'" in str(err.value)
    stored.assert_intact()


def test_duplicate_key_across_two_shards_in_one_ingest(stored, tmp_path):
    one = write_tar(tmp_path / "one.tar", [("x.txt", b"1"), ("same.txt", b"2")])
    two = write_tar(tmp_path / "two.tar", [("same.txt", b"3"), ("y.txt", b"4")])
    with pytest.raises(DuplicateKeyError) as err:
        stored.store.ingest([one, two])
    text = str(err.value)
    assert "'same'" in text and one in text and two in text
    stored.assert_intact()


def test_duplicate_key_across_two_ingests(stored, tmp_path):
    one = write_tar(tmp_path / "one.tar", [("x.txt", b"1"), ("same.txt", b"2")])
    two = write_tar(tmp_path / "two.tar", [("y.txt", b"3"), ("same.txt", b"4")])
    first = stored.store.ingest([one])
    stored.keys = np.concatenate([stored.keys, first])
    stored.expected += [{"txt": b"1"}, {"txt": b"2"}]
    stored.n += 2
    with pytest.raises(DuplicateKeyError) as err:
        stored.store.ingest([two])
    text = str(err.value)
    assert "'same'" in text and two in text and "already in the store" in text
    stored.assert_intact()


def test_ingested_key_clashing_with_appended_key(stored, tmp_path):
    shard = write_tar(tmp_path / "clash.tar", [("new.txt", b"1"), ("kept1.txt", b"2")])
    with pytest.raises(DuplicateKeyError) as err:
        stored.store.ingest([shard])
    assert "'kept1'" in str(err.value) and shard in str(err.value)
    stored.assert_intact()


def test_ingesting_the_same_shard_twice(stored, tmp_path, monkeypatch):
    shard = write_tar(tmp_path / "once.tar", sample_members(2))
    first = stored.store.ingest([shard])
    stored.keys = np.concatenate([stored.keys, first])
    stored.expected += [{"bin": m[0][1], "cls": m[1][1]} for m in zip(sample_members(2)[::2], sample_members(2)[1::2])]
    stored.n += 2
    # same absolute path, a relative spelling, and a spelling with '..'
    monkeypatch.chdir(tmp_path)
    for spelling in (shard, "once.tar", str(tmp_path / "sub" / ".." / "once.tar")):
        with pytest.raises(ShardFormatError) as err:
            stored.store.ingest([spelling])
        assert shard in str(err.value) and "already part of the store" in str(err.value)
    stored.assert_intact()


def test_ingesting_the_same_shard_through_a_symlink(stored, tmp_path):
    shard = write_tar(tmp_path / "real.tar", sample_members(2))
    link = tmp_path / "link.tar"
    link.symlink_to(shard)
    stored.store.ingest([shard])
    n = len(stored.store)
    with pytest.raises((ShardFormatError, DuplicateKeyError)):  # the keys clash even if the path differs
        stored.store.ingest([link])
    assert len(stored.store) == n


def test_same_shard_listed_twice_in_one_ingest(stored, tmp_path):
    shard = write_tar(tmp_path / "twice.tar", sample_members(2))
    with pytest.raises(ShardFormatError) as err:
        stored.store.ingest([shard, shard])
    assert "twice" in str(err.value)
    assert shard in str(err.value)  # errors name the shard file (errors.py contract)
    stored.assert_intact()


# ====================================================================== unknown and deleted keys
@pytest.mark.parametrize("bad", [999, -1, 2**62])
def test_get_unknown_key(stored, bad):
    with pytest.raises(UnknownKeyError) as err:
        stored.store.get([int(stored.keys[0]), bad])
    assert type(err.value) is UnknownKeyError
    assert isinstance(err.value, KeyError) and isinstance(err.value, StoreError)
    assert str(bad) in str(err.value) and stored.url in str(err.value)
    stored.assert_intact()


def test_get_deleted_key(stored):
    victim = int(stored.keys[1])
    assert stored.store.delete([victim]) == 1
    for call in (lambda: stored.store.get([victim]), lambda: stored.store.get([int(stored.keys[0]), victim])):
        with pytest.raises(DeletedKeyError) as err:
            call()
        assert isinstance(err.value, KeyError) and isinstance(err.value, UnknownKeyError)
        assert f"key {victim}" in str(err.value) and "deleted" in str(err.value)
    # still deleted after a compaction, and the other samples are untouched
    stored.store.compact()
    with pytest.raises(DeletedKeyError, match=f"key {victim} "):
        stored.store.get([victim])
    survivors = [k for k in stored.keys.tolist() if k != victim]
    assert stored.store.get(survivors, meta=False) == [e for k, e in zip(stored.keys.tolist(), stored.expected)
                                                       if k != victim]
    # deleting it again does nothing; deleting an unknown key deletes nothing
    assert stored.store.delete([victim]) == 0
    with pytest.raises(UnknownKeyError, match="unknown key 12345"):
        stored.store.delete([survivors[0], 12345])
    assert len(stored.store.get(survivors)) == 3 and len(stored.store) == 3


def test_get_records_unknown_and_deleted_keys(records):
    store, keys, rows = records
    with pytest.raises(UnknownKeyError) as err:
        store.get_records([int(keys[0]), 777])
    assert type(err.value) is UnknownKeyError and isinstance(err.value, KeyError) and "777" in str(err.value)
    store.delete([int(keys[3])])
    with pytest.raises(DeletedKeyError) as err:
        store.get_records(keys)
    assert isinstance(err.value, KeyError) and f"key {int(keys[3])}" in str(err.value)
    live = np.delete(keys, 3)
    np.testing.assert_array_equal(store.get_records(live), np.delete(rows, 3))
    assert len(store) == 9


def test_get_records_on_a_sample_key_and_on_a_store_without_records(stored, records):
    with pytest.raises(StoreError, match="holds no records"):
        stored.store.get_records(stored.keys[:1])
    store, keys, rows = records
    (sample,) = store.append([{"txt": "not a record"}])
    with pytest.raises(StoreError) as err:
        store.get_records([int(keys[0]), int(sample)])
    assert f"key {int(sample)}" in str(err.value) and "get()" in str(err.value)
    np.testing.assert_array_equal(store.get_records(keys), rows)
    stored.assert_intact()


@pytest.mark.parametrize("bad", [[0.0], np.array([1.5]), [True], ["0"], [[0, 1.0]]])
def test_keys_that_are_not_integers_are_refused(stored, records, bad):
    for call in (stored.store.get, stored.store.delete):
        with pytest.raises(TypeError) as err:
            call(bad)
        assert "keys must be integers" in str(err.value)
    rstore, rkeys, rows = records
    with pytest.raises(TypeError, match="keys must be integers"):
        rstore.get_records(bad)
    np.testing.assert_array_equal(rstore.get_records(rkeys), rows)
    stored.assert_intact()


# ====================================================================== open / create / readonly / lock
def test_open_missing_path(tmp_path):
    url = str(tmp_path / "no-such-store")
    with pytest.raises(StoreNotFoundError) as err:
        SampleStore.open(url)
    assert isinstance(err.value, FileNotFoundError) and url in str(err.value)
    assert not os.path.exists(url)  # opening does not create anything
    with pytest.raises(StoreNotFoundError):
        SampleStore.open(url, readonly=True)


def test_open_directory_that_is_not_a_store(tmp_path):
    url = tmp_path / "plain-dir"
    url.mkdir()
    (url / "data.txt").write_text("mine")
    with pytest.raises(StoreNotFoundError) as err:
        SampleStore.open(url)
    assert str(url) in str(err.value) and "not a lightning-modyn store" in str(err.value)
    assert sorted(os.listdir(url)) == ["data.txt"]  # nothing was added to the directory


def test_open_directory_with_a_foreign_store_json(tmp_path):
    url = tmp_path / "foreign"
    url.mkdir()
    (url / "store.json").write_text('{"format": "something-else"}')
    with pytest.raises(StoreNotFoundError, match="store.json"):
        SampleStore.open(url)
    (url / "store.json").write_text("{not json")
    with pytest.raises(StoreNotFoundError, match="store.json"):
        SampleStore.open(url)


def test_create_on_existing_store(stored):
    with pytest.raises(StoreExistsError) as err:
        SampleStore.create(stored.url)
    assert isinstance(err.value, FileExistsError) and stored.url in str(err.value)
    assert "already exists" in str(err.value)
    stored.assert_intact()


def test_create_in_non_empty_directory(tmp_path):
    url = tmp_path / "busy"
    url.mkdir()
    (url / "keep.txt").write_text("keep me")
    with pytest.raises(StoreExistsError) as err:
        SampleStore.create(url)
    assert str(url) in str(err.value) and "not empty" in str(err.value)
    assert sorted(os.listdir(url)) == ["keep.txt"] and (url / "keep.txt").read_text() == "keep me"


def test_create_on_an_existing_file(tmp_path):
    url = tmp_path / "a-file"
    url.write_text("keep me")
    with pytest.raises(StoreExistsError) as err:  # "a URL that already holds a store or other files"
        SampleStore.create(url)
    assert str(url) in str(err.value)
    assert url.read_text() == "keep me"


def test_create_in_empty_directory_is_fine(tmp_path):
    url = tmp_path / "empty"
    url.mkdir()
    with SampleStore.create(url) as store:
        assert len(store) == 0


@pytest.mark.parametrize("op", ["append", "append_records", "ingest", "delete", "compact"])
def test_mutations_on_readonly_store(stored, tmp_path, op):
    shard = write_tar(tmp_path / "ro.tar", sample_members(2))
    rows = np.zeros(2, REC_DTYPE)
    calls = {
        "append": lambda s: s.append([{"txt": "x"}]),
        "append_records": lambda s: s.append_records(rows),
        "ingest": lambda s: s.ingest([shard]),
        "delete": lambda s: s.delete(stored.keys[:1]),
        "compact": lambda s: s.compact(),
    }
    stored.store.delete(stored.keys[3:])  # something for compact to do
    stored.n -= 1
    stored.keys, stored.expected = stored.keys[:3], stored.expected[:3]
    reader = SampleStore.open(stored.url, readonly=True)
    try:
        with pytest.raises(ReadOnlyStoreError) as err:
            calls[op](reader)
        assert isinstance(err.value, PermissionError)
        assert str(err.value).startswith(f"{op} on ") and stored.url in str(err.value)
        assert "readonly=True" in str(err.value)
        stored.assert_intact(reader)
    finally:
        reader.close()
    assert stored.store.record_dtype is None


def test_second_writer_is_refused_while_the_first_holds_the_lock(stored, catalog):
    if catalog is not None:  # a PostgreSQL catalog takes many writers: the second one writes beside the first
        with SampleStore.open(stored.url) as second:
            (key,) = second.append([{"txt": "beside"}])
        assert stored.store.get([key], meta=False) == [{"txt": b"beside"}]
        return
    with pytest.raises(StoreLockedError) as err:
        SampleStore.open(stored.url)
    assert stored.url in str(err.value) and "readonly=True" in str(err.value) and "PostgreSQL" in str(err.value)
    assert isinstance(err.value, StoreError)
    # readers are welcome, and the writer keeps writing
    stored.assert_intact()
    more = stored.store.append([{"txt": "after"}])
    assert stored.store.get(more, meta=False) == [{"txt": b"after"}]
    # once the writer closes, another may open
    stored.store.close()
    with SampleStore.open(stored.url) as second:
        assert len(second) == stored.n + 1
    stored.store = SampleStore.open(stored.url, readonly=True)


# ====================================================================== sample encoding
@pytest.mark.parametrize(
    "value, hint",
    [
        (object(), "object"),
        ({1, 2}, "set"),
        (None, "NoneType"),
        (complex(1, 2), "complex"),
        (np.array([1, "a"], dtype=object), "object"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (np.float32("nan"), "nan"),
        ({"a": {1, 2}}, "JSON"),
        ({"a": float("nan")}, "JSON"),
        ([1, object()], "JSON"),
    ],
    ids=["object", "set", "none", "complex", "numpy-object", "nan", "inf", "np-nan", "dict-set", "dict-nan", "list-obj"],
)
def test_unencodable_value_names_sample_and_field(stored, value, hint):
    samples = [{"txt": "ok"}, {"txt": "ok"}, {"txt": "ok", "bad": value}]
    with pytest.raises(SampleEncodingError) as err:
        stored.store.append(samples)
    text = str(err.value)
    assert "sample 2" in text and "field 'bad'" in text and hint in text
    assert isinstance(err.value, TypeError)
    stored.assert_intact()
    # nothing was half-written: the next append gets the next key
    (k,) = stored.store.append([{"txt": "next"}])
    assert k == int(stored.keys[-1]) + 1


@pytest.mark.parametrize(
    "sample, hint",
    [
        (b"raw bytes", "must be a dict"),
        (["txt", "x"], "must be a dict"),
        ({"__key__": "only-meta"}, "no data fields"),
        ({"a/b": b"x"}, "'a/b'"),
        ({".hidden": b"x"}, "'.hidden'"),
        ({"": b"x"}, "''"),
    ],
)
def test_malformed_sample_names_sample(stored, sample, hint):
    with pytest.raises(SampleEncodingError) as err:
        stored.store.append([{"txt": "ok"}, sample])
    assert "sample 1" in str(err.value) and hint in str(err.value)
    stored.assert_intact()


# ====================================================================== records
def test_records_with_a_different_dtype(records):
    store, keys, rows = records
    for other in (np.dtype([("x", "<i4"), ("y", "<f4"), ("label", "<i4")]),  # a field type differs
                  np.dtype([("a", "<i8"), ("y", "<f4"), ("label", "<i4")]),  # a name differs
                  np.dtype([("y", "<f4"), ("x", "<i8"), ("label", "<i4")])):  # the order differs
        with pytest.raises(RecordDtypeError) as err:
            store.append_records(np.zeros(3, other))
        assert str(other) in str(err.value) and str(REC_DTYPE) in str(err.value)
        assert isinstance(err.value, TypeError)
    assert store.record_dtype == REC_DTYPE and len(store) == 10
    np.testing.assert_array_equal(store.get_records(keys), rows)
    assert store.append_records(rows[:2]).tolist() == [10, 11]  # no key was used up


@pytest.mark.parametrize(
    "bad, hint",
    [
        (np.zeros(3), "float64"),
        (np.arange(3), "int64"),
        ([(1, 2.0, 3)], "list"),
        (np.zeros(2, [("x", "<i8"), ("o", object)]), "object"),
    ],
    ids=["float-array", "int-array", "list", "object-field"],
)
def test_records_that_are_not_plain_structured_arrays(records, bad, hint):
    store, keys, rows = records
    with pytest.raises(RecordDtypeError) as err:
        store.append_records(bad)
    assert hint in str(err.value)
    np.testing.assert_array_equal(store.get_records(keys), rows)
    assert len(store) == 10


def test_create_with_unstructured_record_dtype(tmp_path):
    url = tmp_path / "never"
    with pytest.raises(RecordDtypeError, match="structured"):
        SampleStore.create(url, record_dtype=np.float32)
    assert not url.exists()


def test_first_refused_records_do_not_fix_the_dtype(tmp_path):
    with SampleStore.create(tmp_path / "s") as store:
        with pytest.raises(ValueError, match="timestamps"):
            store.append_records(np.zeros(3, REC_DTYPE), timestamps=[1, 2])
        assert store.record_dtype is None
        other = np.dtype([("z", "<u2")])
        store.append_records(np.zeros(2, other))
        assert store.record_dtype == other


# ====================================================================== timestamps and labels
@pytest.mark.parametrize(
    "kwargs, exc, hint",
    [
        ({"timestamps": [1, 2]}, ValueError, "timestamps must have one value per sample (3)"),
        ({"timestamps": [1, 2, 3, 4]}, ValueError, "timestamps"),
        ({"timestamps": [[1, 2, 3]]}, ValueError, "timestamps"),
        ({"timestamps": [1.5, 2, 3]}, ValueError, "timestamps must be whole numbers"),
        ({"timestamps": [float("nan"), 2, 3]}, ValueError, "timestamps"),
        ({"timestamps": ["a", "b", "c"]}, TypeError, "timestamps must be integers"),
        ({"timestamps": [True, False, True]}, TypeError, "timestamps"),
        ({"labels": [1, 2]}, ValueError, "labels must have one value per sample (3)"),
        ({"labels": [0.5, 1, 2]}, ValueError, "labels must be whole numbers"),
        ({"labels": ["x", "y", "z"]}, TypeError, "labels must be integers"),
        ({"labels": "nope"}, ValueError, "'nope'"),
        ({"labels": "txt"}, ValueError, "'txt'"),
    ],
)
def test_bad_timestamps_or_labels_for_append(stored, kwargs, exc, hint):
    samples = [{"txt": f"t{i}", "cls": i} for i in range(3)]
    with pytest.raises(exc) as err:
        stored.store.append(samples, **kwargs)
    assert hint in str(err.value)
    stored.assert_intact()


def test_label_member_that_is_not_a_whole_number_is_refused(stored):
    # the member says "1.5"; a label of 1 would silently disagree with it (ingest of the same bytes refuses)
    with pytest.raises(ValueError) as err:
        stored.store.append([{"txt": "a", "cls": 0}, {"txt": "b", "cls": 1.5}], labels="cls")
    assert "sample 1" in str(err.value) and "'cls'" in str(err.value)
    stored.assert_intact()


def test_label_member_missing_names_the_sample(stored):
    with pytest.raises(ValueError) as err:
        stored.store.append([{"txt": "a", "cls": 0}, {"txt": "b"}], labels="cls")
    assert "sample 1" in str(err.value) and "'cls'" in str(err.value)
    stored.assert_intact()


@pytest.mark.parametrize(
    "kwargs, exc, hint",
    [
        ({"timestamps": [1, 2]}, ValueError, "timestamps must have one value per sample (3)"),
        ({"timestamps": [0.25, 1, 2]}, ValueError, "timestamps"),
        ({"labels": [1, 2, 3, 4]}, ValueError, "labels"),
        ({"labels": "y"}, ValueError, "'y'"),  # a float field
        ({"labels": "missing"}, ValueError, "'missing'"),
    ],
)
def test_bad_timestamps_or_labels_for_records(records, kwargs, exc, hint):
    store, keys, rows = records
    with pytest.raises(exc) as err:
        store.append_records(rows[:3], **kwargs)
    assert hint in str(err.value)
    assert len(store) == 10
    np.testing.assert_array_equal(store.get_records(keys), rows)


def test_bad_timestamps_or_labels_for_ingest(stored, tmp_path):
    members = [("a.cls", b"1"), ("a.ts", b"100"), ("b.cls", b"x"), ("b.ts", b"200"), ("c.cls", b"2")]
    shard = write_tar(tmp_path / "meta.tar", members)
    with pytest.raises(ValueError, match=r"one value per sample \(3\)"):
        stored.store.ingest([shard], timestamps=[1, 2])
    with pytest.raises(ValueError) as err:
        stored.store.ingest([shard], labels="cls")
    assert shard in str(err.value) and "'b'" in str(err.value) and "b'x'" in str(err.value)
    with pytest.raises(ValueError) as err:
        stored.store.ingest([shard], timestamps="ts")
    assert shard in str(err.value) and "'c'" in str(err.value) and "'ts'" in str(err.value)
    stored.assert_intact()
    # none of the refused calls registered the shard
    assert len(stored.store.ingest([shard], timestamps=7)) == 3


# ====================================================================== decoding never unpickles
class _Payload:
    """Unpickling this runs code: it sets a flag on ``builtins``."""

    def __reduce__(self):
        return (exec, ("import builtins; builtins._lightning_modyn_unpickled = True",))


@pytest.fixture
def pickle_flag():
    yield
    if hasattr(builtins, "_lightning_modyn_unpickled"):
        del builtins._lightning_modyn_unpickled


@pytest.mark.parametrize("ext", ["pyd", "pickle", "pth", "meta.pyd"])
def test_decode_sample_never_unpickles_by_default(stored, pickle_flag, ext):
    data = pickle.dumps(_Payload())
    (key,) = stored.store.append([{ext: data}])
    (got,) = stored.store.get([key])
    decoded = decode_sample(got)
    assert decoded[ext] == data and isinstance(decoded[ext], bytes)
    assert decode_value(ext, data) == data
    assert not hasattr(builtins, "_lightning_modyn_unpickled")
    # the payload is live: opting in does run it
    decode_sample(got, allow_pickle=True)
    assert builtins._lightning_modyn_unpickled is True


def test_decode_npy_object_array_does_not_unpickle():
    buf = io.BytesIO()
    np.save(buf, np.array([_Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        decode_value("npy", buf.getvalue())
    assert not hasattr(builtins, "_lightning_modyn_unpickled")
