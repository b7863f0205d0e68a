"""Live mode: the loop watches a store while a writer appends to it, and refuses samples out of time order."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lightning_modyn import ModynDataModule, SampleStore
from lightning_modyn.pipeline import ContinualLoop, WatchStream
from test_pipeline import DTYPE, Classifier, EveryN


def rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.zeros(n, DTYPE)
    r["x"] = rng.normal(size=(n, 2)).astype(np.float32)
    r["label"] = (r["x"][:, 0] > 0).astype(np.int32)
    return r


def test_live_loop_trains_on_data_appended_while_it_watches(tmp_path):
    writer = SampleStore.create(tmp_path / "store")
    writer.append_records(rows(300, 0), timestamps=np.arange(300), labels="label")  # there before the loop starts

    def append_more() -> None:
        for batch in range(1, 4):
            time.sleep(0.4)
            writer.append_records(rows(300, batch), timestamps=np.arange(300 * batch, 300 * (batch + 1)),
                                  labels="label")

    reader = SampleStore.open(tmp_path / "store", readonly=True)
    dm = ModynDataModule(reader, batch_size=100)
    loop = ContinualLoop(Classifier(), dm, EveryN(300), trainer={"max_epochs": 1}, output_dir=str(tmp_path / "out"),
                         chunk_size=100, progress=False, live=True, poll_seconds=0.1, idle_timeout=3.0)
    thread = threading.Thread(target=append_more)
    thread.start()
    try:
        result = loop.run()
    finally:
        thread.join()
        writer.close()
    assert result.stream_samples == 1200
    assert [t["stream_position"] for t in result.triggers] == [300, 600, 900, 1200]
    assert [t["timestamp"] for t in result.triggers] == [299, 599, 899, 1199]
    assert all(t["samples_trained"] == 300 for t in result.triggers)
    reader.close()


def test_watch_stream_refuses_timestamps_out_of_order(tmp_path):
    store = SampleStore.create(tmp_path / "store")
    store.append_records(rows(5, 0), timestamps=np.array([1, 2, 3, 4, 5]), labels="label")
    store.append_records(rows(3, 1), timestamps=np.array([6, 4, 7]), labels="label")
    stream = WatchStream(store, chunk_size=4, poll_seconds=0.05, idle_timeout=0.1)
    with pytest.raises(ValueError, match="timestamps out of order.*key 6 has timestamp 4, earlier than key 5's 6"):
        list(stream.chunks())
    store.close()


def test_watch_stream_ends_when_idle_and_keeps_a_time_window(tmp_path):
    store = SampleStore.create(tmp_path / "store")
    store.append_records(rows(10, 0), timestamps=np.arange(10), labels="label")
    stream = WatchStream(store, start=3, chunk_size=4, poll_seconds=0.05, idle_timeout=0.2)
    chunks = list(stream.chunks())
    assert [c.keys.tolist() for c in chunks] == [[3, 4, 5, 6], [7, 8, 9]]
    assert [c.start for c in chunks] == [0, 4] and len(stream) == 7
    with pytest.raises(ValueError, match=r"idle_timeout must be a finite number >= 0 \(seconds, or None to watch "
                                         r"forever\), got -1"):
        WatchStream(store, idle_timeout=-1)
    dm = ModynDataModule(store)
    with pytest.raises(ValueError, match="end has no meaning in live mode"):
        ContinualLoop(Classifier(), dm, EveryN(3), live=True, end=5)
    store.close()
