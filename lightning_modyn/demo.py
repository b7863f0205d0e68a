"""The store walk-through behind ``lightning-modyn demo``: the main job until the continual pipeline lands.

It writes image samples as ordinary WebDataset shards (as a user's existing dataset would be), ingests them in
place, appends Criteo-format records, reads random batches by key, deletes and compacts, and prints what the
store holds at each step.
"""

from __future__ import annotations

import os
import time

import numpy as np

from lightning_modyn.cli import format_info
from lightning_modyn.datasets.criteo import synthetic_criteo_rows
from lightning_modyn.store import DeletedKeyError, SampleStore


def _write_image_shards(folder: str, samples: int, seed: int, per_shard: int = 5000) -> list[str]:
    import webdataset as wds

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    pattern = os.path.join(folder, "images-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as sink:
        for i in range(samples):
            label = int(rng.integers(10))
            image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            sink.write({"__key__": f"img{i:07d}", "raw": image.tobytes(), "cls": label, "ts": str(i // 100)})
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".tar"))


def run_demo(url: str, samples: int = 20_000, rows: int = 1_000_000, seed: int = 0) -> SampleStore:
    """Run the walk-through into a new store at ``url`` and return it (open for writing)."""
    t0 = time.perf_counter()
    store = SampleStore.create(url)
    print(f"created store at {store.url}")

    shard_dir = os.path.join(store.files.root, "incoming")
    shards = _write_image_shards(shard_dir, samples, seed)
    # the demo made these files, so it hands them over: compact() may then rewrite them (files ingested without
    # hand_over=True stay the user's: compact() never changes them and says where deleted bytes remain)
    keys = store.ingest(shards, timestamps="ts", labels="cls", progress=True, hand_over=True)
    print(f"ingested {len(keys):,} image samples from {len(shards)} WebDataset shards in place, handed over to the store")

    records = synthetic_criteo_rows(rows, seed=seed)
    t = time.perf_counter()
    row_keys = store.append_records(records, timestamps=np.arange(rows) // 10_000 + 1000, labels="label")
    print(f"appended {rows:,} Criteo-format records in {time.perf_counter() - t:.2f}s")

    rng = np.random.default_rng(seed)
    batch = rng.choice(row_keys, 4096, replace=False)
    t = time.perf_counter()
    got = store.get_records(batch)
    dt = time.perf_counter() - t
    assert np.array_equal(got, records[batch - row_keys[0]]), "records read back differ"
    print(f"read 4,096 random records by key in {dt * 1e3:.1f} ms, byte-exact")

    image_batch = rng.choice(keys, 256, replace=False)
    images = store.get(image_batch)
    print(f"read 256 random images by key; first has key {images[0]['__key__']!r}, label {images[0]['__label__']}")

    window = store.time_range(1000, 1010)
    print(f"time range [1000, 1010): {len(window):,} keys; new after key {keys[-1]}: "
          f"{len(store.keys_after(int(keys[-1]))):,} keys")

    store.delete(keys[: len(keys) // 2])
    try:
        store.get(keys[:1])
    except DeletedKeyError as err:
        print(f"deleted {len(keys) // 2:,} images; reading one now says: {err}")
    stats = store.compact(progress=True)
    print(f"compacted: {stats}")
    print()
    print(format_info(store.info()))
    print(f"\ndone in {time.perf_counter() - t0:.1f}s; store at {store.url}")
    return store
