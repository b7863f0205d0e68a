"""A store on read-only media (a read-only mount, a snapshot) opens with ``readonly=True`` and reads everything.

SQLite's WAL mode needs a ``-shm`` file beside the catalog, which cannot be made on such media: the catalog is
then opened ``immutable`` — or, where its WAL still holds commits (the writer was killed before it closed), from a
private copy — so no commit is missed. The tests mount a small tmpfs and remount it read-only (root, as in CI).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess

import numpy as np
import pytest

from lightning_modyn.store import ReadOnlyStoreError, SampleStore


@pytest.fixture
def mount(tmp_path):
    """A fresh tmpfs at a temp folder, and a function that remounts it read-only."""
    point = tmp_path / "media"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "none", str(point)], check=True)
    try:
        yield point, lambda: subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


def _write_and_die(url: str) -> None:
    store = SampleStore.create(url)
    store.append([{"bin": b"sample-%d" % i} for i in range(5)], labels=list(range(5)))
    store.append_records(np.arange(7).astype([("v", "<i8")]))
    os.kill(os.getpid(), signal.SIGKILL)  # no close: the commits stay in the WAL


@pytest.mark.parametrize("closed", [True, False], ids=["writer-closed", "writer-killed"])
def test_a_store_on_read_only_media_opens_read_only(mount, closed):
    point, remount_ro = mount
    url = str(point / "store")
    if closed:
        store = SampleStore.create(url)
        store.append([{"bin": b"sample-%d" % i} for i in range(5)], labels=list(range(5)))
        store.append_records(np.arange(7).astype([("v", "<i8")]))
        store.close()
    else:
        proc = mp.get_context("fork").Process(target=_write_and_die, args=(url,))
        proc.start()
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL
        assert os.path.getsize(os.path.join(url, "catalog.sqlite-wal")) > 0
    remount_ro()
    with pytest.raises(OSError):  # the media really is read-only
        open(os.path.join(url, "probe"), "wb")
    reader = SampleStore.open(url, readonly=True)
    try:
        assert len(reader) == 12
        assert [s["bin"] for s in reader.get(np.arange(5), meta=False)] == [b"sample-%d" % i for i in range(5)]
        assert reader.get_records(np.arange(5, 12))["v"].tolist() == list(range(7))
        assert reader.label_counts() == {i: 1 for i in range(5)}
        with pytest.raises(ReadOnlyStoreError, match="readonly=True"):
            reader.append([{"bin": b"x"}])
    finally:
        reader.close()
