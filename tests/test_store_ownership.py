"""The store removes or changes only files it can prove it wrote, and never forgets an erasure.

* Garbage collection (a writable open) removes shards named in the writer journal that the catalog does not know,
  and the store's own temp files — never a file the user put into ``shards/``.
* Ingested shards stay the user's unless handed over (``ingest(..., hand_over=True)``): ``compact()`` leaves them
  byte-identical and says that deleted bytes are still in them.
* A compaction records the old file's erasure in the same transaction that switches the catalog; a removal that
  fails or is cut short is retried, never forgotten.
* Survivors of a compaction keep every attribute, including when they were appended.
"""

from __future__ import annotations

import hashlib
import os
import signal

import numpy as np
import pytest
import webdataset as wds

from lightning_modyn.store import SampleStore
from lightning_modyn.store.filesystem import StoreFS
from lightning_modyn.store.journal import ShardJournal
from test_store_interop import all_bytes_under


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def user_shard(path, prefix: str, n: int = 4) -> str:
    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            sink.write({"__key__": f"{prefix}{i}", "bin": f"USER-{prefix}-{i}-".encode() * 20})
    return str(path)


def test_writable_open_keeps_a_file_the_user_put_into_shards(tmp_path, catalog):
    url = str(tmp_path / "store")
    store = SampleStore.create(url, catalog=catalog)
    store.append([{"bin": b"x"}])
    store.close()
    foreign = os.path.join(url, "shards", "my-dataset-000.tar")
    with open(foreign, "wb") as fh:
        fh.write(b"the user's bytes")
    lookalike = os.path.join(url, "shards", "shard-999999.tar")  # our naming pattern, but not journaled by us
    with open(lookalike, "wb") as fh:
        fh.write(b"also the user's")
    for _ in range(2):
        SampleStore.open(url).close()
    assert open(foreign, "rb").read() == b"the user's bytes"
    assert open(lookalike, "rb").read() == b"also the user's"


def _crash_after_publishing(url: str) -> None:
    """In a child: append until the shard file has its final name, then die before the catalog commits."""
    from lightning_modyn.store import catalog

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    catalog.Catalog.add_entries = die
    store = SampleStore.open(url)
    store.append([{"bin": b"never committed"}])


def _journaled(url: str) -> list[str]:
    """Every shard in a writer journal: the store's one journal (SQLite), or each writer's own (PostgreSQL)."""
    files = StoreFS(url)
    return ShardJournal(files).pending() + [rel for _, j in ShardJournal.writers(files) for rel in j.pending()]


def test_a_writer_killed_between_shard_and_commit_leaves_garbage_that_the_next_open_removes(tmp_path, catalog):
    import multiprocessing as mp

    url = str(tmp_path / "store")
    SampleStore.create(url, catalog=catalog).close()
    proc = mp.get_context("fork").Process(target=_crash_after_publishing, args=(url,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    shards = os.listdir(os.path.join(url, "shards"))
    assert len(shards) == 1 and _journaled(url) == [f"shards/{shards[0]}"]
    assert b"never committed" in all_bytes_under(os.path.join(url, "shards"))
    store = SampleStore.open(url)  # the writable open proves the file is an abandoned shard of its own
    assert os.listdir(os.path.join(url, "shards")) == []
    assert _journaled(url) == []
    assert len(store) == 0
    store.close()


def test_temp_files_of_the_store_are_collected_and_lookalikes_kept(tmp_path, catalog):
    url = str(tmp_path / "store")
    SampleStore.create(url, catalog=catalog).close()
    ours = os.path.join(url, "shards", ".tmp-" + "ab" * 16 + "-shard-000003.tar")
    theirs = os.path.join(url, "shards", ".tmp-notours-shard.tar")
    for path in (ours, theirs):
        open(path, "wb").close()
    SampleStore.open(url).close()
    assert not os.path.exists(ours) and os.path.exists(theirs)


def test_compact_leaves_ingested_shards_unchanged_and_says_why(tmp_path, catalog):
    external = tmp_path / "external"
    external.mkdir()
    paths = [user_shard(external / f"part-{i}.tar", f"p{i}-") for i in range(3)]
    before = {p: digest(p) for p in paths}
    store = SampleStore.create(tmp_path / "store", catalog=catalog)
    keys = store.ingest(paths)
    store.delete(keys[[1, 5, 6]])
    with pytest.warns(UserWarning, match=r"3 deleted samples are still in 2 shard\(s\).*part-0\.tar.*hand_over=True"):
        stats = store.compact()
    assert stats == {"shards_rewritten": 0, "shards_removed": 0, "shards_merged": 0, "bytes_freed": 0,
                     "shards_not_owned": 2, "deleted_kept": 3, "erasures_pending": 0, "groups_left_busy": 0}
    assert {p: digest(p) for p in paths} == before  # the user's files: not removed, not changed
    assert store.get(keys[[0, 2]], meta=False)[1]["bin"] == b"USER-p0--2-" * 20
    store.close()


def test_compact_rewrites_and_removes_a_handed_over_shard(tmp_path, catalog):
    path = user_shard(tmp_path / "given.tar", "g")
    store = SampleStore.create(tmp_path / "store", catalog=catalog)
    keys = store.ingest([path], hand_over=True)
    store.delete(keys[:1])
    stats = store.compact()
    assert stats["shards_rewritten"] == 1 and stats["shards_not_owned"] == 0
    assert not os.path.exists(path)
    assert b"USER-g-0-" not in all_bytes_under(tmp_path)
    assert [s["bin"] for s in store.get(keys[1:], meta=False)] == [f"USER-g-{i}-".encode() * 20 for i in range(1, 4)]
    store.close()


def test_survivors_of_a_compaction_keep_when_they_were_appended(tmp_path, monkeypatch, catalog):
    from lightning_modyn.store import store as store_module

    clock = iter(range(1_000, 10_000, 100))
    monkeypatch.setattr(store_module, "_now", lambda: next(clock))
    store = SampleStore.create(tmp_path / "store", shard_max_samples=4, block_bytes=64, catalog=catalog)
    old = store.append([{"bin": b"%d" % i} for i in range(4)], timestamps=5)
    rows = np.zeros(10, [("v", "<i8")])
    old_rows = store.append_records(rows, timestamps=5)
    cut = store_module._now()
    new = store.append([{"bin": b"new"}], timestamps=5)
    store.delete(np.concatenate([old[:1], old_rows[3:5]]))  # splits a record run in two
    assert store.compact()["shards_rewritten"] == 2
    assert store.appended_since(cut).keys.tolist() == new.tolist()
    assert sorted(store.appended_since(0).keys.tolist()) == sorted(
        old[1:].tolist() + old_rows[:3].tolist() + old_rows[5:].tolist() + new.tolist())
    store.close()


def test_an_erasure_that_fails_stays_recorded_and_is_finished_later(tmp_path, monkeypatch, catalog):
    store = SampleStore.create(tmp_path / "store", catalog=catalog)
    keys = store.append([{"bin": b"SECRET-%d" % i} for i in range(3)])
    old_shard = store.catalog.shards()[0]["path"]
    store.delete(keys[:1])
    real_remove = StoreFS.remove

    def refuse(self, rel):
        if rel == old_shard:
            raise PermissionError(13, "Permission denied")
        real_remove(self, rel)

    monkeypatch.setattr(StoreFS, "remove", refuse)
    with pytest.warns(UserWarning, match="could not remove .*shard-000000.tar.*deleted samples' bytes"):
        stats = store.compact()
    assert stats["shards_rewritten"] == 1 and stats["erasures_pending"] == 1
    assert store.catalog.pending_erasures() == [old_shard]
    assert b"SECRET-0" in all_bytes_under(tmp_path / "store" / "shards")
    monkeypatch.setattr(StoreFS, "remove", real_remove)
    stats = store.compact()  # nothing left to rewrite, but the recorded erasure is finished
    assert stats["erasures_pending"] == 0 and store.catalog.pending_erasures() == []
    assert b"SECRET-0" not in all_bytes_under(tmp_path / "store" / "shards")
    assert [s["bin"] for s in store.get(keys[1:], meta=False)] == [b"SECRET-1", b"SECRET-2"]
    store.close()


def _crash_before_removing_the_old_shard(url: str) -> None:
    def die(self, rel):
        os.kill(os.getpid(), signal.SIGKILL)

    StoreFS.remove = die
    SampleStore.open(url).compact()


def test_a_compaction_killed_after_its_commit_has_its_erasure_finished_by_the_next_open(tmp_path, catalog):
    import multiprocessing as mp

    url = str(tmp_path / "store")
    store = SampleStore.create(url, catalog=catalog)
    keys = store.append([{"bin": b"SECRET-%d" % i} for i in range(3)])
    store.delete(keys[:1])
    store.close()
    proc = mp.get_context("fork").Process(target=_crash_before_removing_the_old_shard, args=(url,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    reader = SampleStore.open(url, readonly=True)
    assert reader.catalog.pending_erasures() == ["shards/shard-000000.tar"]  # committed, not yet removed
    reader.close()
    assert b"SECRET-0" in all_bytes_under(os.path.join(url, "shards"))
    store = SampleStore.open(url)
    assert store.catalog.pending_erasures() == []
    assert b"SECRET-0" not in all_bytes_under(os.path.join(url, "shards"))
    assert [s["bin"] for s in store.get(keys[1:], meta=False)] == [b"SECRET-1", b"SECRET-2"]
    store.close()
