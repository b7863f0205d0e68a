"""Crash safety: a writer killed with SIGKILL at random points leaves a store that opens with every acknowledged
sample intact, no half-written shard visible and no garbage left after the next writable open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from lightning_modyn.store import DeletedKeyError, SampleStore

WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from lightning_modyn.store import SampleStore, StoreNotFoundError

    def payload(key):
        return (b"k%d-" % key) * (40 + key % 50)

    url, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    try:
        store = SampleStore.open(url)
    except StoreNotFoundError:
        store = SampleStore.create(url, shard_max_samples=7, block_bytes=1024)
    print("READY", flush=True)
    while True:
        op = rng.random()
        nxt = int(store.catalog.get_meta("next_key"))
        if op < 0.5:
            n = int(rng.integers(1, 40))
            keys = store.append([{"bin": payload(k)} for k in range(nxt, nxt + n)])
            print("ACK", keys[0], len(keys), flush=True)
        elif op < 0.75:
            n = int(rng.integers(1, 300))
            rows = np.zeros(n, [("k", "<i8"), ("v", "<f4", (4,))])
            rows["k"] = np.arange(nxt, nxt + n)
            rows["v"] = rows["k"][:, None] * 0.5
            keys = store.append_records(rows)
            print("ACK", keys[0], len(keys), flush=True)
        elif op < 0.9:
            live = store.all().keys
            if len(live):
                victims = rng.choice(live, size=min(len(live), int(rng.integers(1, 20))), replace=False)
                print("DELETING", ",".join(map(str, victims.tolist())), flush=True)
                store.delete(victims)
                print("DEL", ",".join(map(str, victims.tolist())), flush=True)
        else:
            store.compact()
            print("COMPACT", flush=True)
    """
)


def payload(key: int) -> bytes:
    return (b"k%d-" % key) * (40 + key % 50)


@pytest.mark.slow
def test_sigkill_during_append_delete_compact_keeps_acknowledged_data(tmp_path):
    url = str(tmp_path / "store")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    acked: set[int] = set()
    deleted: set[int] = set()
    maybe_deleted: set[int] = set()  # a delete the kill interrupted may or may not have committed
    rng = np.random.default_rng(1234)
    kills = 0
    for attempt in range(10):
        proc = subprocess.Popen([sys.executable, str(script), url, str(attempt)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        ready = proc.stdout.readline()  # the kill lands in the writing loop, not in interpreter start-up
        assert ready.strip() == "READY", proc.stderr.read()
        time.sleep(float(rng.uniform(0.05, 1.5)))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err
        kills += 1
        pending: set[int] = set()
        for line in out.splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "ACK":
                first, n = int(parts[1]), int(parts[2])
                acked.update(range(first, first + n))
            elif parts[0] == "DELETING":
                pending = {int(k) for k in parts[1].split(",")}
            elif parts[0] == "DEL":
                deleted.update(int(k) for k in parts[1].split(","))
                pending = set()
        maybe_deleted |= pending

        store = SampleStore.open(url)  # the writable open collects a crashed writer's garbage
        try:
            shard_dir = os.path.join(url, "shards")
            on_disk = sorted(os.listdir(shard_dir))
            assert not [f for f in on_disk if f.startswith(".tmp-")], on_disk
            known = {os.path.basename(s["path"]) for s in store.catalog.shards()}
            assert set(on_disk) == known
            live = store.all().keys
            # every acknowledged, not-deleted key is live; deletes that were acknowledged stay deleted
            assert not (acked - deleted - maybe_deleted) - set(live.tolist())
            # the interrupted delete (if any) committed whole or not at all
            interrupted = pending - deleted
            assert not interrupted or interrupted <= set(live.tolist()) or not interrupted & set(live.tolist())
            assert not deleted & set(live.tolist())
            # every live key (acknowledged or committed just before the kill) has exactly its bytes
            dtype = store.record_dtype
            rec_keys = []
            for key, got in zip(live.tolist(), store.get(live)):
                if "bin" in got:
                    assert got["bin"] == payload(key)
                else:
                    rec_keys.append(key)
            if rec_keys:
                rows = store.get_records(rec_keys)
                assert dtype is not None
                np.testing.assert_array_equal(rows["k"], rec_keys)
                expected = (np.asarray(rec_keys)[:, None] * 0.5).astype(np.float32)
                np.testing.assert_array_equal(rows["v"], np.repeat(expected, 4, axis=1))
            for key in list(deleted)[:20]:
                with pytest.raises(DeletedKeyError):
                    store.get([key])
        finally:
            store.close()
    assert kills == 10 and len(acked) > 50
