"""WebDataset interop, both ways: shards written by webdataset and GNU tar are ingested byte-exact, shards written by
the store are read by webdataset, GNU tar and Python's tarfile, and compaction leaves valid shards without the
deleted bytes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid

import numpy as np
import pytest

from lightning_modyn.store import DeletedKeyError, SampleStore

wds = pytest.importorskip("webdataset")
from webdataset.tariterators import base_plus_ext  # noqa: E402

TAR = shutil.which("tar")
TAR_ENV = {**os.environ, "LC_ALL": "C.UTF-8"}  # list non-ASCII names as UTF-8, not as octal escapes
needs_tar = pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")


# ====================================================================== helpers
def tar_samples(path):
    """{key: {ext: bytes}} of a tar read with Python's tarfile, grouped the way webdataset groups members."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar.getmembers():
            if not member.isreg():
                continue
            key, ext = base_plus_ext(member.name)
            if key is None:
                continue
            out.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return out


def wds_samples(paths):
    """{key: {ext: bytes}} of shards read with ``webdataset.WebDataset`` (no decoding, no shuffling)."""
    out: dict[str, dict[str, bytes]] = {}
    for sample in wds.WebDataset([os.fspath(p) for p in paths], shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        assert key not in out, f"webdataset saw {key!r} twice"
        out[key] = {k: v for k, v in sample.items() if not k.startswith("__")}
    return out


def store_samples(store, keys):
    """{__key__: {ext: bytes}} of ``store.get(keys)``."""
    out = {}
    for sample in store.get(keys):
        out[sample["__key__"]] = {k: v for k, v in sample.items() if not k.startswith("__")}
    return out


def shard_paths(store):
    """Absolute paths of every shard file the store's catalog refers to."""
    return sorted(os.path.join(store.url, s["path"]) if not os.path.isabs(s["path"]) else s["path"]
                  for s in store.catalog.shards())


def tar_list(path):
    """Names listed by GNU ``tar -tf``; GNU tar must not complain (e.g. about a missing end-of-archive marker)."""
    done = subprocess.run([TAR, "-tf", path], capture_output=True, encoding="utf-8", check=True, env=TAR_ENV)
    assert done.stderr == "", done.stderr
    return done.stdout.splitlines()


def all_bytes_under(*folders):
    """Concatenated raw bytes of every file under ``folders`` (the catalog included)."""
    chunks = []
    for folder in folders:
        for root, _dirs, files in os.walk(folder):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    chunks.append(f.read())
    return b"\0".join(chunks)


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def wds_source_samples(n, rng):
    """Samples for webdataset writers: many extensions, nested keys, a two-part extension."""
    samples = []
    for i in range(n):
        key = f"sample{i:04d}" if i % 4 else f"dir/sub-{i % 3}/sample{i:04d}"
        samples.append({
            "__key__": key,
            "cls": i % 5,
            "json": {"i": i, "name": f"n{i}", "tags": ["a", "b"][: i % 3]},
            "npy": rng.standard_normal((i % 3 + 1, 4)).astype(np.float32),
            "jpg": b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 300 + 97 * i, dtype=np.uint8).tobytes(),
            "txt": f"caption {i} ünïcödé",
            "seg.png": rng.integers(0, 256, 50, dtype=np.uint8).tobytes(),
        })
    return samples


# ====================================================================== (a) webdataset -> store
def test_ingest_shards_written_by_webdataset_shardwriter(tmp_path, catalog):
    rng = np.random.default_rng(0)
    src = tmp_path / "wds"
    src.mkdir()
    samples = wds_source_samples(13, rng)
    with wds.ShardWriter(str(src / "shard-%06d.tar"), maxcount=5, verbose=0) as sink:
        for s in samples:
            sink.write(s)
    shards = sorted(str(p) for p in src.glob("shard-*.tar"))
    assert len(shards) == 3

    with SampleStore.create(tmp_path / "store", catalog=catalog) as store:
        keys = store.ingest(shards, labels="cls", timestamps=1000)
        assert keys.tolist() == list(range(13)) and len(store) == 13

        expected = {}
        for shard in shards:
            expected.update(tar_samples(shard))
        got = store.get(keys)
        assert [g["__key__"] for g in got] == [s["__key__"] for s in samples]  # shard order, then tar order
        assert store_samples(store, keys) == expected
        for sample, g in zip(samples, got):
            assert g["__label__"] == sample["cls"] and g["__timestamp__"] == 1000
            assert g["jpg"] == sample["jpg"] and g["seg.png"] == sample["seg.png"]
            assert g["cls"] == str(sample["cls"]).encode()
            assert json.loads(g["json"]) == sample["json"]
            np.testing.assert_array_equal(np.load(io.BytesIO(g["npy"]), allow_pickle=False), sample["npy"])
            assert g["__url__"] in shards  # an ingested shard stays where it is
        assert store.label_counts() == {c: sum(1 for s in samples if s["cls"] == c) for c in range(5)}
        # random access in any order, across shards
        order = np.array([12, 0, 7, 3, 7])
        assert [g["__key__"] for g in store.get(order)] == [samples[i]["__key__"] for i in order]
        # webdataset agrees with the store about the same shards
        assert wds_samples(shards) == expected


def test_ingest_shard_written_by_webdataset_tarwriter_with_fixed_mtime(tmp_path, catalog):
    rng = np.random.default_rng(1)
    path = str(tmp_path / "one.tar")
    samples = wds_source_samples(6, rng)
    with wds.TarWriter(path, mtime=1_700_000_000) as sink:
        for s in samples:
            sink.write(s)
    with SampleStore.create(tmp_path / "store", catalog=catalog) as store:
        keys = store.ingest([path], labels="cls")
        assert store_samples(store, keys) == tar_samples(path)
        assert [g["__label__"] for g in store.get(keys)] == [s["cls"] for s in samples]


# ====================================================================== (b) GNU tar -> store
def _make_tree(root, long):
    """A tree with long nested names, an empty directory, a symlink and a file without extension."""
    rng = np.random.default_rng(2)
    if long:
        deep = "/".join([f"level-{i}-" + "x" * 40 for i in range(5)])  # > 250 characters
    else:
        deep = "level-0-" + "x" * 60 + "/level-1-" + "y" * 60  # 130 characters: ustar prefix + name
    files = {}
    for i in range(4):
        for folder in (deep, "short"):
            base = f"top/{folder}/sample{i:03d}"
            files[f"{base}.cls"] = str(i).encode()
            files[f"{base}.jpg"] = b"\xff\xd8" + rng.integers(0, 256, 200 + 300 * i, dtype=np.uint8).tobytes()
            files[f"{base}.json"] = json.dumps({"i": i, "folder": folder[:10]}).encode()
    if long:
        long_file = "top/short/" + "z" * 150 + ".txt"  # a long last component (> 100 characters)
        files[long_file] = b"long last component"
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "top" / "empty-dir").mkdir()
    (root / "top" / "README").write_bytes(b"no extension: not a sample")
    (root / "top" / "zz-link.txt").symlink_to("README")
    return files, deep


@needs_tar
@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar", "oldgnu"])
def test_ingest_shard_written_by_gnu_tar(tmp_path, fmt, catalog):
    src = tmp_path / "src"
    files, deep = _make_tree(src, long=fmt != "ustar")
    shard = str(tmp_path / f"{fmt}.tar")
    subprocess.run([TAR, f"--format={fmt}", "--sort=name", "-cf", shard, "-C", str(src), "top"], check=True,
                   env=TAR_ENV)

    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    assert any(m.isdir() for m in members) and any(m.issym() for m in members)
    assert max(len(m.name) for m in members if m.isreg()) > 100
    if fmt == "ustar":  # the long names really sit in the ustar prefix field
        with open(shard, "rb") as f:
            raw = f.read()
        long_member = next(m for m in members if len(m.name) > 100)
        assert raw[long_member.offset + 345] != 0

    expected = tar_samples(shard)
    assert {f"{k}.{e}" for k, exts in expected.items() for e in exts} == set(files)  # no dir, link or README
    with SampleStore.create(tmp_path / "store", catalog=catalog) as store:
        keys = store.ingest([shard])
        assert len(keys) == len(expected)
        got = store_samples(store, keys)
        assert got == expected
        assert f"top/{deep}/sample003" in got and got[f"top/{deep}/sample003"]["jpg"] == files[
            f"top/{deep}/sample003.jpg"]
        # the store and webdataset agree
        assert wds_samples([shard]) == got
        # a reopened reader sees the same
        with SampleStore.open(store.url, readonly=True) as reader:
            assert store_samples(reader, keys) == expected


@needs_tar
def test_ingest_gnu_tar_with_a_sample_split_by_a_directory_entry(tmp_path, catalog):
    # "s0.cls" < "s0.d/" < "s0.jpg": the directory entry lies inside the sample's byte range
    src = tmp_path / "src"
    (src / "top" / "s0.d").mkdir(parents=True)
    (src / "top" / "s0.cls").write_bytes(b"1")
    (src / "top" / "s0.jpg").write_bytes(b"\xff\xd8jpeg")
    (src / "top" / "s1.cls").write_bytes(b"2")
    shard = str(tmp_path / "split.tar")
    subprocess.run([TAR, "--format=gnu", "--sort=name", "-cf", shard, "-C", str(src), "top"], check=True, env=TAR_ENV)
    with SampleStore.create(tmp_path / "store", catalog=catalog) as store:
        keys = store.ingest([shard], labels="cls")
        got = store_samples(store, keys)
        assert got == tar_samples(shard) == wds_samples([shard])
        assert got["top/s0"] == {"cls": b"1", "jpg": b"\xff\xd8jpeg"}


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_ingest_python_tarfile_long_and_non_ascii_names(tmp_path, fmt, catalog):
    names = {
        "dïr/ünïcödé-sample.txt": b"unicode",
        "dïr/ünïcödé-sample.cls": b"3",
        ("n" * 120) + "/" + ("m" * 120) + ".bin": b"\x00\x01" * 300,
        "plain.bin": b"plain",
    }
    shard = str(tmp_path / "py.tar")
    with tarfile.open(shard, "w", format=fmt, encoding="utf-8") as tar:
        for name, data in names.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000.25  # fractional: PAX adds an mtime record without a path
            tar.addfile(info, io.BytesIO(data))
    with SampleStore.create(tmp_path / "store", catalog=catalog) as store:
        keys = store.ingest([shard])
        got = store_samples(store, keys)
        assert got == tar_samples(shard)
        assert got["dïr/ünïcödé-sample"] == {"txt": b"unicode", "cls": b"3"}


# ====================================================================== (c) store -> webdataset / tar
def _store_source_samples(n):
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        s = {"bin": rng.integers(0, 256, 100 + 211 * i, dtype=np.uint8).tobytes(), "cls": i % 4,
             "json": {"i": i}, "txt": f"text {i}", "npy": np.arange(i + 1, dtype=np.int16)}
        if i == 2:
            s["__key__"] = "nested/dir/" + "k" * 130  # long name: PAX header in the store's shard
        if i == 3:
            s["__key__"] = "dïr/ünïcödé"
        out.append(s)
    return out


@needs_tar
def test_store_sample_shards_are_read_by_webdataset_tar_and_tarfile(tmp_path, catalog):
    with SampleStore.create(tmp_path / "store", shard_max_samples=3, catalog=catalog) as store:
        keys = store.append(_store_source_samples(8), labels="cls")
        shards = shard_paths(store)
        assert len(shards) == 3
        from_store = store_samples(store, keys)

        assert wds_samples(shards) == from_store
        from_tarfile = {}
        listed = []
        for shard in shards:
            from_tarfile.update(tar_samples(shard))
            listed += tar_list(shard)
            with tarfile.open(shard) as tar:
                assert tar.getnames() == tar_list(shard)
        assert from_tarfile == from_store
        assert sorted(listed) == sorted(f"{k}.{e}" for k, exts in from_store.items() for e in exts)
        assert "nested/dir/" + "k" * 130 + ".bin" in listed and "dïr/ünïcödé.txt" in listed

        # GNU tar extracts the same bytes
        out = tmp_path / "extracted"
        out.mkdir()
        for shard in shards:
            subprocess.run([TAR, "-xf", shard, "-C", str(out)], check=True, env=TAR_ENV)
        for key, exts in from_store.items():
            for ext, data in exts.items():
                assert (out / f"{key}.{ext}").read_bytes() == data


@needs_tar
def test_store_record_shards_are_read_by_webdataset_tar_and_tarfile(tmp_path, catalog):
    dtype = np.dtype([("id", "<i8"), ("value", "<f4"), ("label", "u1"), ("tag", "S5")])
    rows = np.zeros(50, dtype)
    rows["id"] = np.arange(50) * 7
    rows["value"] = np.linspace(0, 1, 50)
    rows["label"] = np.arange(50) % 2
    rows["tag"] = [f"t{i}".encode() for i in range(50)]
    with SampleStore.create(tmp_path / "store", block_bytes=10 * dtype.itemsize, shard_max_samples=2, catalog=catalog) as store:
        keys = store.append_records(rows, labels="label")
        more = store.append_records(rows[:7])
        shards = shard_paths(store)
        assert len(shards) > 2
        assert store.record_dtype == dtype

        read = []
        for shard in shards:
            with tarfile.open(shard) as tar:
                names = tar.getnames()
                assert names == tar_list(shard)
                for member in tar.getmembers():
                    assert member.name.endswith(".rows")
                    block = np.frombuffer(tar.extractfile(member).read(), dtype=store.record_dtype)
                    first = int(member.name.split(".")[0])
                    read.append((first, block))
        read.sort(key=lambda t: t[0])
        firsts = [f for f, _ in read]
        all_rows = np.concatenate([b for _, b in read])
        np.testing.assert_array_equal(all_rows, np.concatenate([rows, rows[:7]]))
        np.testing.assert_array_equal(np.concatenate([keys, more])[np.cumsum([0] + [len(b) for _, b in read[:-1]])],
                                      firsts)

        # webdataset sees one sample per block, with the same bytes
        via_wds = wds_samples(shards)
        assert sorted(via_wds) == [f"{f:012d}" for f in firsts]
        for first, block in read:
            assert via_wds[f"{first:012d}"]["rows"] == block.tobytes()
        np.testing.assert_array_equal(store.get_records(keys), rows)


def test_store_mixed_shards_with_user_keys_read_back_by_webdataset(tmp_path, catalog):
    with SampleStore.create(tmp_path / "store", catalog=catalog) as store:
        a = store.append([{"__key__": f"user/{i}", "txt": f"t{i}", "cls": i} for i in range(3)])
        rows = np.zeros(4, [("v", "<i4")])
        rows["v"] = np.arange(4)
        r = store.append_records(rows)
        b = store.append([{"bin": b"\x00" * 513}])  # a payload that ends exactly past a block boundary
        samples = store_samples(store, np.concatenate([a, b]))
        via_wds = wds_samples(shard_paths(store))
        for key, exts in samples.items():
            assert via_wds[key] == exts
        assert via_wds[f"{int(r[0]):012d}"] == {"rows": rows.tobytes()}
        assert len(via_wds) == len(samples) + 1


# ====================================================================== (d) delete + compact
@needs_tar
def test_compact_physically_removes_deleted_bytes_and_keeps_valid_shards(tmp_path, catalog):
    tag = uuid.uuid4().hex.encode()
    dead_marker = b"DEADPAYLOAD-" + tag
    live_marker = b"LIVEPAYLOAD-" + tag
    rdtype = np.dtype([("tag", "S40"), ("v", "<i8")])

    # an external shard written by webdataset, to be ingested
    external = tmp_path / "external"
    external.mkdir()
    ext_shard = str(external / "ext.tar")
    with wds.TarWriter(ext_shard) as sink:
        for i in range(6):
            sink.write({"__key__": f"ext{i}", "bin": (dead_marker if i in (1, 4) else live_marker) + b"-%d" % i,
                        "cls": i})

    url = str(tmp_path / "store")
    store = SampleStore.create(url, shard_max_samples=4, block_bytes=5 * rdtype.itemsize, catalog=catalog)
    samples = []
    for i in range(12):
        marker = dead_marker if i % 3 == 0 or 8 <= i < 12 else live_marker  # shard 3 (keys 8..11) dies whole
        samples.append({"bin": marker + b"-sample-%d-" % i + bytes(range(256)), "txt": f"caption {i}",
                        "cls": i % 2})
    skeys = store.append(samples, labels="cls")
    rows = np.zeros(20, rdtype)
    dead_rows = {2, 3, 7, 15, 16, 17, 18, 19}
    rows["tag"] = [(dead_marker if i in dead_rows else live_marker)[:33] + b"-r%02d" % i for i in range(20)]
    rows["v"] = np.arange(20)
    rkeys = store.append_records(rows)
    ekeys = store.ingest([ext_shard], labels="cls", hand_over=True)  # compact() may rewrite and remove it

    dead = ([int(k) for k, s in zip(skeys, samples) if s["bin"].startswith(dead_marker)]
            + [int(rkeys[i]) for i in sorted(dead_rows)] + [int(ekeys[1]), int(ekeys[4])])
    survivors_s = [int(k) for k in np.concatenate([skeys, ekeys]) if int(k) not in dead]
    survivors_r = [int(rkeys[i]) for i in range(20) if i not in dead_rows]
    before = [{k: v for k, v in g.items() if k != "__url__"} for g in store.get(survivors_s)]
    before_rows = store.get_records(survivors_r)
    assert all_bytes_under(url, external).count(dead_marker[:33]) > 0

    assert store.delete(dead) == len(dead)
    stats = store.compact()
    assert stats["shards_removed"] >= 1 and stats["shards_rewritten"] >= 3 and stats["bytes_freed"] > 0

    # the deleted bytes are physically gone from every file of the store (and the ingested file was replaced)
    assert not os.path.exists(ext_shard)
    raw = all_bytes_under(url, external)
    assert dead_marker[:33] not in raw
    assert raw.count(live_marker[:33]) >= len(survivors_s) + len(survivors_r)
    assert not [n for n in os.listdir(os.path.join(url, "shards")) if n.startswith(".tmp")]

    # survivors keep their keys and bytes; the dead stay dead
    assert [{k: v for k, v in g.items() if k != "__url__"} for g in store.get(survivors_s)] == before
    np.testing.assert_array_equal(store.get_records(survivors_r), before_rows)
    assert len(store) == len(survivors_s) + len(survivors_r)
    for k in dead[:: max(1, len(dead) // 5)]:
        with pytest.raises(DeletedKeyError):
            store.get([k])

    # every remaining shard is a valid tar that webdataset, GNU tar and tarfile read back to exactly the survivors
    shards = shard_paths(store)
    assert all(p.startswith(url) for p in shards)
    via_wds = wds_samples(shards)
    expected = {g["__key__"]: {k: v for k, v in g.items() if not k.startswith("__")} for g in before}
    sample_part = {k: v for k, v in via_wds.items() if "rows" not in v}
    assert sample_part == expected
    record_blocks = [v["rows"] for v in via_wds.values() if "rows" in v]
    compacted_rows = np.frombuffer(b"".join(record_blocks), dtype=rdtype)
    np.testing.assert_array_equal(np.sort(compacted_rows, order="v"), before_rows)
    for shard in shards:
        names = tar_list(shard)
        with tarfile.open(shard) as tar:
            assert tar.getnames() == names

    # a reopened store agrees
    store.close()
    with SampleStore.open(url, readonly=True) as reader:
        assert [{k: v for k, v in g.items() if k != "__url__"} for g in reader.get(survivors_s)] == before
        np.testing.assert_array_equal(reader.get_records(survivors_r), before_rows)
        with pytest.raises(DeletedKeyError):
            reader.get(dead[:1])
