"""A store on S3: a real S3 protocol endpoint (moto's server) on loopback, reached through s3fs."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from lightning_modyn.datasets import synthetic_criteo_rows
from lightning_modyn.store import DeletedKeyError, SampleStore, StoreNotFoundError

pytest.importorskip("s3fs", reason="the S3 test needs the [test] extras (s3fs, moto[server])")


@pytest.fixture
def s3_url(s3_endpoint):
    import s3fs

    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint,
                                                                        "region_name": "eu-west-1"}}
    bucket = f"lm-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(bucket)
    fs.invalidate_cache()
    return f"s3://{bucket}/store", options


def test_s3_store_append_read_query_delete_compact(s3_url, catalog):
    url, options = s3_url
    writer = SampleStore.create(url, storage_options=options, shard_max_samples=3, catalog=catalog)
    samples = [{"bin": f"payload-{i}-".encode() * (10 + i), "cls": i % 2} for i in range(8)]
    keys = writer.append(samples, timestamps=np.arange(8), labels="cls")
    rows = synthetic_criteo_rows(5000, seed=2)
    rkeys = writer.append_records(rows, timestamps=np.arange(5000) + 100, labels="label")

    reader = SampleStore.open(url, readonly=True, storage_options=options)  # by URL alone
    got = reader.get(keys[[7, 0, 3]])
    assert [g["bin"] for g in got] == [samples[i]["bin"] for i in (7, 0, 3)]
    assert got[0]["__label__"] == 1 and got[0]["__timestamp__"] == 7
    pick = np.random.default_rng(0).choice(rkeys, 1000)
    assert reader.get_records(pick).tobytes() == rows[pick - rkeys[0]].tobytes()
    assert reader.time_range(2, 5).keys.tolist() == keys[2:5].tolist()
    assert len(reader.keys_after(int(rkeys[4000]))) == 999

    writer.delete(np.concatenate([keys[:4], rkeys[:2500]]))
    writer.compact()
    reader.refresh()
    with pytest.raises(DeletedKeyError):
        reader.get(keys[:1])
    assert reader.get_records(rkeys[2500:2510]).tobytes() == rows[2500:2510].tobytes()
    assert [g["bin"] for g in reader.get(keys[4:])] == [s["bin"] for s in samples[4:]]
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    blobs = b"".join(fs.cat(p) for p in fs.find(url.removeprefix("s3://")) if p.endswith(".tar"))
    assert samples[0]["bin"] not in blobs and rows[0].tobytes() not in blobs
    reader.close()
    writer.close()


def test_s3_open_missing_store_is_clear(s3_url):
    url, options = s3_url
    with pytest.raises(StoreNotFoundError, match="no store at"):
        SampleStore.open(url, storage_options=options)


def test_s3_ingest_remote_shards(s3_url):
    import io
    import tarfile

    import s3fs

    url, options = s3_url
    fs = s3fs.S3FileSystem(**options)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(4):
            for ext, data in (("txt", f"text {i}".encode()), ("cls", str(i).encode())):
                info = tarfile.TarInfo(f"{'d' * 120}/s{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    shard = url.rsplit("/", 1)[0] + "/incoming/shard-0.tar"
    fs.pipe(shard.removeprefix("s3://"), buf.getvalue())
    store = SampleStore.create(url, storage_options=options)
    keys = store.ingest([shard], labels="cls")
    got = store.get(keys[::-1])
    assert [g["txt"] for g in got] == [f"text {i}".encode() for i in (3, 2, 1, 0)]
    assert got[0]["__key__"] == f"{'d' * 120}/s3" and got[0]["__label__"] == 3
    store.close()


def test_s3_create_on_a_prefix_that_holds_objects_is_refused_and_open_keeps_foreign_objects(s3_url):
    import s3fs

    from lightning_modyn.store import StoreExistsError

    url, options = s3_url
    fs = s3fs.S3FileSystem(**options)
    prefix = url.removeprefix("s3://")
    fs.pipe(f"{prefix}/shards/their-data-000.tar", b"someone else's shard")
    with pytest.raises(StoreExistsError, match="prefix already holds objects"):
        SampleStore.create(url, storage_options=options)
    assert fs.cat(f"{prefix}/shards/their-data-000.tar") == b"someone else's shard"

    other = url + "-2"
    store = SampleStore.create(other, storage_options=options)
    store.append([{"bin": b"ours"}])
    store.close()
    fs.pipe(f"{other.removeprefix('s3://')}/shards/their-data-001.tar", b"theirs")
    fs.invalidate_cache()
    for _ in range(2):  # writable opens collect only what the store can prove it wrote
        SampleStore.open(other, storage_options=options).close()
    fs.invalidate_cache()
    assert fs.cat(f"{other.removeprefix('s3://')}/shards/their-data-001.tar") == b"theirs"
    reader = SampleStore.open(other, readonly=True, storage_options=options)
    assert reader.get([0], meta=False)[0]["bin"] == b"ours"
    reader.close()


def test_s3_store_with_a_postgresql_catalog_takes_two_writers_and_ships_no_catalog(s3_url, postgres_url):
    import s3fs

    url, options = s3_url
    first = SampleStore.create(url, storage_options=options, catalog=postgres_url)
    second = SampleStore.open(url, storage_options=options)  # a second writer: no lock to refuse it
    a = first.append([{"bin": b"a" * 50}])
    b = second.append([{"bin": b"b" * 50}])
    a2 = first.append([{"bin": b"c" * 50}])
    reader = SampleStore.open(url, readonly=True, storage_options=options)
    assert reader.get_member(np.concatenate([b, a2, a]), "bin").tolist() == [b"b" * 50, b"c" * 50, b"a" * 50]
    fs = s3fs.S3FileSystem(**options)
    fs.invalidate_cache()
    objects = [p.rsplit("/", 1)[-1] for p in fs.find(url.removeprefix("s3://"))]
    assert "catalog.sqlite" not in objects and sum(o.endswith(".tar") for o in objects) == 3
    second.delete(a)
    assert reader.contains(np.concatenate([a, b])).tolist() == [False, True]  # seen without refresh or download
    for s in (first, second, reader):
        s.close()


def test_a_remote_sqlite_store_takes_one_writer_at_a_time(s3_url, monkeypatch):
    from lightning_modyn.store import StoreLockedError
    from lightning_modyn.store import lease as lease_module

    url, options = s3_url
    first = SampleStore.create(url, storage_options=options)
    keys = first.append([{"bin": b"first"}])
    with pytest.raises(StoreLockedError, match=r"being written by .* \(process \d+\), whose lease was renewed"):
        SampleStore.open(url, storage_options=options)
    with SampleStore.open(url, readonly=True, storage_options=options) as reader:  # readers need no lease
        assert reader.get(keys)[0]["bin"] == b"first"
    # a writer that stays idle past the lease loses it to the next one, and then uploads nothing
    monkeypatch.setattr(lease_module, "LEASE_SECONDS", 0.2)
    import time

    time.sleep(0.3)
    second = SampleStore.open(url, storage_options=options)
    with pytest.raises(StoreLockedError, match="lost its lease"):
        first.append([{"bin": b"late"}])
    more = second.append([{"bin": b"second"}])
    first.close()  # gives back nothing: the lease is the second writer's
    with pytest.raises(StoreLockedError, match="being written by"):
        monkeypatch.setattr(lease_module, "LEASE_SECONDS", 120.0)
        SampleStore.open(url, storage_options=options)
    second.close()
    with SampleStore.open(url, storage_options=options) as third:  # given back at close
        assert [g["bin"] for g in third.get(np.concatenate([keys, more]))] == [b"first", b"second"]
        assert len(third) == 2
