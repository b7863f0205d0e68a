"""A store with its catalog in PostgreSQL: many writers at once, their crashes, and the bad inputs of a catalog URL.

Backend-independent behaviour is tested against both catalogs in test_store.py (the ``catalog`` fixture); here is
what only the PostgreSQL catalog does.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import signal
import threading

import numpy as np
import pytest

from lightning_modyn.store import SampleStore
from lightning_modyn.store.catalog_postgres import PostgresCatalog
from lightning_modyn.store.errors import (
    CatalogError,
    DuplicateKeyError,
    StoreNotFoundError,
    StoreVersionError,
)

RECORD = np.dtype([("writer", "<i4"), ("i", "<i4"), ("label", "<i8")])


def _sample(writer: int, i: int) -> dict:
    return {"bin": f"w{writer}-{i}".encode() * 3, "__key__": f"w{writer}-{i:05d}"}


def _write_many(url: str, writer: int, batches: int, queue) -> None:
    """A writer process: ``batches`` appends of samples and of records; reports every key with what it holds."""
    try:
        store = SampleStore.open(url)
        got = []
        for b in range(batches):
            keys = store.append([_sample(writer, b * 4 + j) for j in range(4)], labels=[writer] * 4)
            got += [(int(k), "s", writer, b * 4 + j) for j, k in enumerate(keys.tolist())]
            rows = np.zeros(3, RECORD)
            rows["writer"], rows["i"], rows["label"] = writer, np.arange(3) + b * 3, writer
            keys = store.append_records(rows, labels="label")
            got += [(int(k), "r", writer, b * 3 + j) for j, k in enumerate(keys.tolist())]
        store.close()
        queue.put(("ok", got))
    except Exception as err:  # noqa: BLE001 - reported to the parent
        queue.put((type(err).__name__, str(err)))


@pytest.mark.slow
def test_writer_processes_append_at_once_and_a_reader_sees_every_commit(tmp_path, postgres_url):
    url = str(tmp_path / "s")
    SampleStore.create(url, catalog=postgres_url, record_dtype=RECORD, shard_max_samples=8).close()
    reader = SampleStore.open(url, readonly=True)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_write_many, args=(url, w, 12, queue)) for w in range(3)]
    for p in procs:
        p.start()
    seen_while_writing = 0
    results = []
    while len(results) < len(procs):
        # meanwhile the reader's snapshot follows commits whose keys arrive out of key order
        live = reader.all().keys
        if len(live):
            assert reader.contains(live).all()
            seen_while_writing = max(seen_while_writing, len(live))
        try:
            results.append(queue.get(timeout=0.2))
        except Exception:  # noqa: BLE001 - queue.Empty: nothing finished yet
            pass
    for p in procs:
        p.join(60)
    assert all(status == "ok" for status, _ in results), results
    acked = [row for _, rows in results for row in rows]
    keys = np.array([k for k, *_ in acked])
    assert len(np.unique(keys)) == len(keys) == 3 * 12 * 7  # unique, stable int64 keys from the database
    assert 0 < seen_while_writing
    reader.refresh()
    assert len(reader) == len(keys)
    samples = [(k, w, i) for k, kind, w, i in acked if kind == "s"]
    got = reader.get_member(np.array([k for k, _, _ in samples]), "bin").tolist()
    assert got == [_sample(w, i)["bin"] for _, w, i in samples]
    records = [(k, w, i) for k, kind, w, i in acked if kind == "r"]
    rows = reader.get_records(np.array([k for k, _, _ in records]))
    assert rows["writer"].tolist() == [w for _, w, _ in records] and rows["i"].tolist() == [i for _, _, i in records]
    assert reader.label_counts() == {0: 12 * 7, 1: 12 * 7, 2: 12 * 7}
    names = [s["path"] for s in reader.catalog.shards()]
    assert len(set(names)) == len(names)
    reader.close()


def test_keys_committed_out_of_key_order_are_seen_by_a_reader_holding_a_snapshot(tmp_path, postgres_url):
    url = str(tmp_path / "s")
    first = SampleStore.create(url, catalog=postgres_url)
    second = SampleStore.open(url)
    reader = SampleStore.open(url, readonly=True)
    base = second.append([_sample(9, i) for i in range(2)])
    assert reader.get_member(base, "bin").tolist() == [_sample(9, i)["bin"] for i in range(2)]
    cursor = reader.new_since()[1]
    entered, release = threading.Event(), threading.Event()
    real = first.catalog.transaction

    def held_transaction(*args, **kwargs):  # the first writer has its keys and files, and waits to commit
        entered.set()
        release.wait(30)
        return real(*args, **kwargs)

    first.catalog.transaction = held_transaction
    out = {}
    thread = threading.Thread(target=lambda: out.update(keys=first.append([_sample(1, i) for i in range(3)])))
    thread.start()
    assert entered.wait(30)
    later = second.append([_sample(2, i) for i in range(2)])  # reserved later, committed first
    assert reader.get_member(later, "bin").tolist() == [_sample(2, i)["bin"] for i in range(2)]
    release.set()
    thread.join(30)
    early = out["keys"]
    assert early.max() < later.min()
    both = np.concatenate([later, early, base])
    assert reader.get_member(both, "bin").tolist() == (
        [_sample(2, i)["bin"] for i in range(2)] + [_sample(1, i)["bin"] for i in range(3)]
        + [_sample(9, i)["bin"] for i in range(2)])
    assert reader.all().keys.tolist() == sorted(both.tolist())
    # a watcher following commits gets the late commit of the earlier keys too (keys_after would skip them)
    arrived, cursor = reader.new_since(cursor)
    assert arrived.keys.tolist() == sorted(np.concatenate([later, early]).tolist())
    assert len(reader.keys_after(int(later.max()))) == 0
    for s in (first, second, reader):
        s.close()


def _append_then_die(url: str, writer: int, die_before_commit: bool, wait_on, queue) -> None:
    """A writer that reports its journaled shard, then waits for ``wait_on`` and commits, or is killed. ``queue``:
    the sending end of a pipe (sent at once, so that the report precedes the kill)."""
    store = SampleStore.open(url)
    real = store.catalog.transaction

    def transaction(*args, **kwargs):
        queue.send(("files written", store._journal.pending()))
        if wait_on is not None:
            wait_on.wait(60)
        if die_before_commit:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    store.catalog.transaction = transaction
    keys = store.append([_sample(writer, i) for i in range(3)])
    queue.send(("committed", keys.tolist()))
    store.close()


def test_a_live_writers_files_are_kept_and_a_dead_writers_are_collected(tmp_path, postgres_url):
    url = str(tmp_path / "s")
    SampleStore.create(url, catalog=postgres_url).close()
    ctx = mp.get_context("fork")
    receiver, queue = ctx.Pipe(duplex=False)
    go_on = ctx.Event()
    live = ctx.Process(target=_append_then_die, args=(url, 5, False, go_on, queue))
    live.start()
    assert receiver.poll(60)
    status, pending = receiver.recv()
    assert status == "files written" and len(pending) == 1
    # another writer opens while the first has written its shard but not committed: the shard is not garbage
    other = SampleStore.open(url)
    assert os.path.exists(os.path.join(url, pending[0]))
    go_on.set()
    assert receiver.poll(60)
    status, keys = receiver.recv()
    live.join(30)
    assert status == "committed" and other.get_member(keys, "bin").tolist() == [_sample(5, i)["bin"] for i in range(3)]
    other.close()

    dead = ctx.Process(target=_append_then_die, args=(url, 6, True, None, queue))
    dead.start()
    assert receiver.poll(60)
    status, pending = receiver.recv()
    dead.join(30)
    assert dead.exitcode == -signal.SIGKILL and os.path.exists(os.path.join(url, pending[0]))
    before = sorted(os.listdir(os.path.join(url, "journal")))
    with SampleStore.open(url) as again:  # the dead writer's lock is free: its unreferenced shard is collected
        assert not os.path.exists(os.path.join(url, pending[0]))
        assert len(again) == 3
    assert len(os.listdir(os.path.join(url, "journal"))) < len(before) + 1


def _cut(postgres_url: str, conn) -> None:
    """End the PostgreSQL session behind ``conn`` from outside, as a server restart or a network cut would."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


def test_a_connection_dropped_before_the_commit_is_a_clear_error_and_the_next_call_reconnects(tmp_path, postgres_url):
    url = str(tmp_path / "s")
    store = SampleStore.create(url, catalog=postgres_url)
    store.append([_sample(0, 0)])
    committed = {os.path.basename(s["path"]) for s in store.catalog.shards()}
    first_writer = store.catalog.writer_id
    real = store.catalog.transaction

    def cut_then_commit(*args, **kwargs):
        _cut(postgres_url, store.catalog.conn)
        return real(*args, **kwargs)

    store.catalog.transaction = cut_then_commit
    with pytest.raises(CatalogError, match="cannot reach PostgreSQL.*Nothing of the call.*next call connects again"):
        store.append([_sample(0, 1), _sample(0, 2)])
    assert set(os.listdir(os.path.join(url, "shards"))) == committed  # the failed call removed its shard file
    del store.catalog.transaction
    # the next call gets a new session, and with it a new writer number (the old one's lock went with the session)
    keys = store.append([_sample(0, 3)])
    assert store.catalog.writer_id not in (None, first_writer)
    assert store.get(keys)[0]["bin"] == _sample(0, 3)["bin"]
    store.close()
    with SampleStore.open(url) as again:
        assert len(again) == 2
        assert [s["bin"] for s in again.get(again.all().keys)] == [_sample(0, 0)["bin"], _sample(0, 3)["bin"]]
        assert set(os.listdir(os.path.join(url, "shards"))) == {
            os.path.basename(s["path"]) for s in again.catalog.shards()}


def test_a_connection_lost_while_committing_says_the_outcome_is_unknown(tmp_path, postgres_url):
    url = str(tmp_path / "s")
    store = SampleStore.create(url, catalog=postgres_url)
    real = store.catalog._commit

    def cut_then_commit():
        _cut(postgres_url, store.catalog.conn)
        real()

    store.catalog._commit = cut_then_commit
    with pytest.raises(CatalogError, match="lost while committing.*whether this call was committed is unknown"):
        store.append([_sample(0, 0)])
    del store.catalog._commit
    assert len(store) == 0  # here the cut came first, so nothing was committed; the store works on
    store.append([_sample(0, 1)])
    assert len(store) == 1
    store.close()


def test_a_read_that_loses_its_connection_is_read_again_on_a_new_one(tmp_path, postgres_url, caplog):
    url = str(tmp_path / "s")
    with SampleStore.create(url, catalog=postgres_url) as writer:
        keys = writer.append([_sample(0, i) for i in range(5)], labels=[1, 2, 1, 2, 1])
    reader = SampleStore.open(url, readonly=True)
    assert len(reader) == 5
    _cut(postgres_url, reader.catalog.conn)
    with caplog.at_level("WARNING", logger="lightning_modyn.store.lifecycle"):
        got = reader.get(keys[::-1])
    assert [g["bin"] for g in got] == [_sample(0, i)["bin"] for i in reversed(range(5))]
    assert any("connection was lost during get" in r.getMessage() for r in caplog.records)
    _cut(postgres_url, reader.catalog.conn)
    assert reader.label_counts() == {1: 3, 2: 2}
    reader.close()
    with pytest.raises(CatalogError):  # a store closed on purpose does not reconnect behind the user's back
        len(reader)


def test_store_json_names_the_catalog_without_its_password(tmp_path, postgres_url):
    url = str(tmp_path / "s")
    with_password = postgres_url.replace("postgres@", "postgres:secret@")  # trust auth: any password is accepted
    store = SampleStore.create(url, catalog=with_password)
    marker = json.loads(open(os.path.join(url, "store.json")).read())
    assert marker["version"] == 2 and marker["catalog"]["url"] == postgres_url
    assert "secret" not in json.dumps(marker) and store.catalog_url == postgres_url
    assert not os.path.exists(os.path.join(url, "catalog.sqlite"))
    store.close()
    with SampleStore.open(url) as again:
        assert again.catalog_url == postgres_url
    other = str(tmp_path / "t")  # a password in the query string is left out too
    SampleStore.create(other, catalog=postgres_url + "?password=secret&connect_timeout=5").close()
    marker = json.loads(open(os.path.join(other, "store.json")).read())
    assert marker["catalog"]["url"] == postgres_url + "?connect_timeout=5"


@pytest.mark.parametrize("url, kept", [
    ("postgresql://u:pw@h:5432/db", "postgresql://u@h:5432/db"),
    ("postgresql:///db?host=/tmp&password=x", "postgresql:///db?host=/tmp"),
    ("postgres://h/db?password=a&sslmode=require", "postgres://h/db?sslmode=require"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_the_url_a_store_remembers_has_no_password(url, kept):
    from lightning_modyn.store.catalog_postgres import redacted

    assert redacted(url) == kept


def test_an_unreachable_catalog_is_a_clear_error_and_create_can_be_retried(tmp_path, postgres_url):
    from services import free_port

    url = str(tmp_path / "s")
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/lightning_modyn"
    with pytest.raises(CatalogError, match=r"127\.0\.0\.1:\d+/lightning_modyn.*cannot reach PostgreSQL"):
        SampleStore.create(url, catalog=nowhere)
    assert not os.path.exists(os.path.join(url, "store.json"))
    SampleStore.create(url, catalog=postgres_url).close()
    with pytest.raises(CatalogError, match="cannot reach PostgreSQL"):
        SampleStore.open(url, catalog=nowhere)
    with pytest.raises(ValueError, match="postgresql:// URL"):
        SampleStore.create(str(tmp_path / "t"), catalog="mysql://x@y/z")


def test_a_catalog_database_without_this_store_is_refused(tmp_path, postgres_url):
    import psycopg

    url = str(tmp_path / "s")
    SampleStore.create(url, catalog=postgres_url).close()
    other_db = postgres_url.rsplit("/", 1)[0] + "/other"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE other")
    try:
        with pytest.raises(StoreNotFoundError, match="holds no catalog of store .* did the catalog move"):
            SampleStore.open(url, catalog=other_db)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE other")
    sqlite_store = str(tmp_path / "t")
    SampleStore.create(sqlite_store).close()
    with pytest.raises(CatalogError, match="has no PostgreSQL catalog"):
        SampleStore.open(sqlite_store, catalog=postgres_url)


def test_a_catalog_of_another_store_or_a_newer_format_is_refused(tmp_path, postgres_url):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    SampleStore.create(a, catalog=postgres_url).close()
    SampleStore.create(b, catalog=postgres_url).close()
    marker_b = json.loads(open(os.path.join(b, "store.json")).read())
    id_a = json.loads(open(os.path.join(a, "store.json")).read())["store_id"]
    catalog_a = PostgresCatalog(postgres_url, id_a)
    with catalog_a.transaction():
        catalog_a.set_meta("store_id", marker_b["store_id"])  # as if the schema were B's, renamed
    with pytest.raises(CatalogError, match=f"belongs to store '{marker_b['store_id']}', not to store '{id_a}'"):
        SampleStore.open(a)
    with catalog_a.transaction():
        catalog_a.set_meta("store_id", id_a)
        catalog_a.set_meta("format_version", 99)
    with pytest.raises(StoreVersionError, match="format_version 99"):
        SampleStore.open(a, readonly=True)
    catalog_a.close()


def test_a_duplicate_webdataset_key_from_another_writer_is_refused_at_commit(tmp_path, postgres_url):
    url = str(tmp_path / "s")
    first = SampleStore.create(url, catalog=postgres_url)
    second = SampleStore.open(url)
    real = second.catalog.transaction

    def first_appends_meanwhile(*args, **kwargs):  # the same __key__ commits between our check and our commit
        second.catalog.transaction = real
        first.append([_sample(7, 1)])
        return real(*args, **kwargs)

    second.catalog.transaction = first_appends_meanwhile
    with pytest.raises(DuplicateKeyError, match="w7-00001"):
        second.append([_sample(7, 1)])
    assert len(second) == 1 and sorted(os.listdir(os.path.join(url, "shards"))) == [
        os.path.basename(s["path"]) for s in second.catalog.shards()]
    first.close()
    second.close()


def _crash_writer(url: str, writer: int, start: int, sender) -> None:
    """Append 3 samples at a time for ever; each acknowledged append is reported at once (before any kill)."""
    store = SampleStore.open(url)
    seq = start
    while True:
        names = [f"w{writer}-{seq + j:06d}" for j in range(3)]
        keys = store.append([{"__key__": n, "bin": n.encode() * 3} for n in names])
        sender.send([(int(k), n) for k, n in zip(keys.tolist(), names)])
        seq += 3


def _crash_compactor(url: str, sender) -> None:
    """Delete every live key divisible by 5 and compact, for ever (deletes and compactions beside the writers)."""
    store = SampleStore.open(url)
    while True:
        live = store.all().keys
        store.delete(live[live % 5 == 0])
        store.compact()
        sender.send("compacted")


def crash_campaign(url: str, kills: int, seed: int = 0) -> dict:
    """3 writer processes and a deleting, compacting one on one store; one of them SIGKILLed at a random moment and
    restarted, ``kills`` times. Then: every acknowledged sample not meant to be deleted is readable with its bytes,
    every visible sample is whole, and no file is left that the catalog does not know. Returns the counts."""
    import random
    import time

    rng = random.Random(seed)
    ctx = mp.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    acked: dict[int, str] = {}
    compactions = 0
    spawned = itertools.count()

    def spawn(role):  # each writer process names its samples from a range of its own
        target, args = (_crash_compactor, (url, sender)) if role == "c" else (
            _crash_writer, (url, role, 1_000_000 * next(spawned), sender))
        proc = ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        return proc

    def drain(until):
        nonlocal compactions
        while True:
            left = until - time.monotonic()
            if not receiver.poll(max(0.0, left)):
                return
            msg = receiver.recv()
            if msg == "compacted":
                compactions += 1
            else:
                acked.update(msg)

    procs = {role: spawn(role) for role in (0, 1, 2, "c")}
    for _ in range(kills):
        drain(time.monotonic() + rng.uniform(0.05, 0.4))
        role = rng.choice(list(procs))
        os.kill(procs[role].pid, signal.SIGKILL)
        procs[role].join(10)
        procs[role] = spawn(role)
    drain(time.monotonic() + 0.3)
    for proc in procs.values():
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    drain(time.monotonic() + 0.1)
    with SampleStore.open(url) as store:  # a writable open collects what the killed writers left
        visible = store.all().keys
        wanted = np.array(sorted(k for k in acked if k % 5), np.int64)
        lost = wanted[~store.contains(wanted)] if len(wanted) else wanted
        got = store.get(visible) if len(visible) else []
        half = [s["__store_key__"] for s in got if s["bin"] != s["__key__"].encode() * 3
                or (s["__store_key__"] in acked and acked[s["__store_key__"]] != s["__key__"])]
        known = {os.path.basename(s["path"]) for s in store.catalog.shards()}
        on_disk = set(os.listdir(os.path.join(url, "shards")))
        return {"kills": kills, "acknowledged": len(acked), "visible": len(visible), "compactions": compactions,
                "lost": len(lost), "half_visible": len(half), "unique_keys": len(set(visible.tolist())) == len(visible),
                "stray_files": sorted(on_disk - known), "missing_files": sorted(known - on_disk)}


@pytest.mark.slow
def test_sigkills_among_concurrent_writers_and_a_compaction_lose_nothing_acknowledged(tmp_path, postgres_url):
    url = str(tmp_path / "s")
    SampleStore.create(url, catalog=postgres_url, shard_max_samples=6).close()
    report = crash_campaign(url, kills=50)
    print(report)
    assert report["acknowledged"] > 100 and report["compactions"] > 0, report
    assert report["lost"] == 0 and report["half_visible"] == 0 and report["unique_keys"], report
    assert report["stray_files"] == [] and report["missing_files"] == [], report


if __name__ == "__main__":  # the figures in docs/store.md: python tests/test_store_postgres.py --kills 50
    import argparse
    import sys
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from services import PostgresServer

    parser = argparse.ArgumentParser(description="SIGKILLs among concurrent writers and a compaction on PostgreSQL")
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    with PostgresServer() as server, tempfile.TemporaryDirectory() as folder:
        store_url = os.path.join(folder, "s")
        SampleStore.create(store_url, catalog=server.url, shard_max_samples=6).close()
        r = crash_campaign(store_url, options.kills, options.seed)
    print("| kills | acknowledged samples | visible at the end | compactions finished | lost | half-visible | "
          "duplicate keys | stray files | missing files |\n|---|---|---|---|---|---|---|---|---|\n"
          f"| {r['kills']} | {r['acknowledged']} | {r['visible']} | {r['compactions']} | {r['lost']} | "
          f"{r['half_visible']} | {0 if r['unique_keys'] else 'yes'} | {len(r['stray_files'])} | "
          f"{len(r['missing_files'])} |")
