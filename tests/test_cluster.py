"""A cluster on one machine, end to end: a store on S3 (moto) with a PostgreSQL catalog, three writer processes
appending at once, one of them SIGKILLed midway, while a live ContinualLoop runs under DDP on two "nodes" started by
torchrun (``--nnodes 2``, gloo on loopback) and retrains on the new data."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from lightning_modyn import SampleStore
from services import free_port
from test_pipeline import DTYPE

pytest.importorskip("s3fs", reason="the cluster test needs the [test] extras (s3fs, moto[server])")

NODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cluster_node.py")
EVERY = 100
BATCH = 25


def _rows(writer: int, seq: int) -> np.ndarray:
    """A writer's batch ``seq``: every row says who wrote it and when (x = [writer, seq]), so a torn or mixed-up
    row cannot pass for a whole one."""
    rows = np.zeros(BATCH, DTYPE)
    rows["x"][:, 0], rows["x"][:, 1], rows["label"] = writer, seq, seq % 2
    return rows


def _write(url: str, options: dict, writer: int, batches: int, sender) -> None:
    store = SampleStore.open(url, storage_options=options)
    for seq in range(batches):
        keys = store.append_records(_rows(writer, seq), timestamps=1, labels="label")
        sender.send((writer, seq, keys.tolist()))
        time.sleep(0.25)
    store.close()


@pytest.mark.slow
def test_writers_and_a_live_ddp_loop_on_two_nodes_with_a_writer_killed(tmp_path, s3_endpoint, postgres_url):
    import s3fs

    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint,
                                                                        "region_name": "eu-west-1"}}
    bucket = f"lm-cluster-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    url = f"s3://{bucket}/store"
    SampleStore.create(url, catalog=postgres_url, storage_options=options).close()
    out = str(tmp_path / "out")
    os.makedirs(out)

    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
         str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port), NODE, url, json.dumps(options), out,
         str(EVERY)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(out, "run")):  # rank 0's loop has started watching
        assert time.monotonic() < deadline and all(n.poll() is None for n in nodes), nodes[0].communicate()[0][-3000:]
        time.sleep(0.2)

    ctx = mp.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    writers = [ctx.Process(target=_write, args=(url, options, w, 16, sender)) for w in range(3)]
    for w in writers:
        w.start()
    acked: dict[int, tuple[int, int]] = {}
    killed = False
    while any(w.is_alive() for w in writers) or receiver.poll(0):
        if receiver.poll(0.1):
            writer, seq, keys = receiver.recv()
            acked.update((k, (writer, seq)) for k in keys)
            if writer == 1 and seq == 5 and not killed:  # midway: writer 1 is killed
                os.kill(writers[1].pid, signal.SIGKILL)
                killed = True
    for w in writers:
        w.join(30)
    assert killed and writers[1].exitcode == -signal.SIGKILL and writers[0].exitcode == writers[2].exitcode == 0

    logs = []
    for node in nodes:
        try:
            logs.append(node.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            node.kill()
            logs.append(node.communicate()[0])
    assert all(n.returncode == 0 for n in nodes), "\n---\n".join(log[-3000:] for log in logs)

    with SampleStore.open(url, readonly=True, storage_options=options) as store:
        # every acknowledged sample reads back by key, whole; keys are unique; nothing else is half there
        visible = store.all().keys
        assert len(np.unique(visible)) == len(visible)
        keys = np.array(sorted(acked), np.int64)
        assert store.contains(keys).all()
        rows = store.get_records(keys)
        assert [tuple(map(int, r)) for r in rows["x"]] == [acked[k] for k in keys.tolist()]
        every = store.get_records(visible)
        for (writer, seq), label in zip(every["x"].astype(int).tolist(), every["label"].tolist()):
            assert writer in (0, 1, 2) and 0 <= seq < 16 and label == seq % 2
        assert len(visible) % BATCH == 0  # whole commits only
        assert len(visible) >= len(acked) >= 2 * 16 * BATCH + 6 * BATCH
    results = [json.load(open(os.path.join(out, f"result-rank{r}.json"))) for r in (0, 1)]
    total = len(visible)
    # the loop saw every committed sample, and fired exactly where the data warranted: every 100 samples
    assert results[0]["stream_samples"] == total
    assert [t["stream_position"] for t in results[0]["triggers"]] == list(range(EVERY, total + 1, EVERY))
    assert results[1]["triggers"] == results[0]["triggers"]
    fits = [[json.loads(line) for line in open(os.path.join(out, f"fits-rank{r}.jsonl"))] for r in (0, 1)]
    assert fits[0] == fits[1] and [f["trigger_id"] for f in fits[0]] == list(range(total // EVERY))
    assert all(f["world"] == 2 and f["nodes"] == 2 and len(f["keys"]) == EVERY for f in fits[0])
    trained = [k for f in fits[0] for k in f["keys"]]
    assert len(set(trained)) == len(trained) and set(trained) <= set(visible.tolist())
    print(f"cluster: {len(acked)} samples acknowledged, {total} visible, {len(results[0]['triggers'])} triggers, "
          f"{len(fits[0])} fits on 2 nodes")
