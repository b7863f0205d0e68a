"""ModynDataModule: an unchanged LightningModule trains on a weighted subset of store keys."""

from __future__ import annotations


import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_modyn import KeyedBatch, ModynDataModule, SampleStore
from lightning_modyn.data import ArrayMember, SelectionSampler
from lightning_modyn.datasets import synthetic_criteo_rows
from lightning_modyn.store import DeletedKeyError, UnknownKeyError


class PlainClickModel(L.LightningModule):
    """Written for plain Lightning: knows nothing about keys, weights or stores."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(13, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.linear(x["dense"]), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.linear(x["dense"]), y), batch_size=len(y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class RecordKeys(L.Callback):
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.weights: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        assert isinstance(batch, KeyedBatch)
        self.batches.append(batch.keys.tolist())
        self.weights.append(batch.weights.tolist())


def trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    defaults.update(kwargs)
    return L.Trainer(**defaults)


@pytest.fixture
def click_store(tmp_path):
    store = SampleStore.create(tmp_path / "clicks")
    rows = synthetic_criteo_rows(3000, seed=5)
    keys = store.append_records(rows, timestamps=np.arange(3000) // 100, labels="label")
    yield store, keys, rows
    store.close()


def test_unchanged_module_trains_on_a_weighted_subset(click_store):
    store, keys, rows = click_store
    subset = keys[::3]
    weights = np.linspace(0.5, 2.0, len(subset))
    dm = ModynDataModule(store, batch_size=128, seed=1)
    dm.set_training_set(subset, weights)
    recorder = RecordKeys()
    model = PlainClickModel()
    before = model.linear.weight.detach().clone()
    trainer(max_epochs=2, callbacks=[recorder]).fit(model, datamodule=dm)
    assert not torch.equal(before, model.linear.weight)
    epoch = [k for b in recorder.batches[: len(recorder.batches) // 2] for k in b]
    assert sorted(epoch) == sorted(subset.tolist())  # every key once per epoch
    assert recorder.batches[0] != recorder.batches[len(recorder.batches) // 2]  # reshuffled each epoch
    by_key = dict(zip(subset.tolist(), weights.astype(np.float32).tolist()))
    assert all(w == by_key[k] for b, ws in zip(recorder.batches, recorder.weights) for k, w in zip(b, ws))


def test_batches_hold_the_rows_of_their_keys(click_store):
    store, keys, rows = click_store
    dm = ModynDataModule(store, batch_size=100)
    dm.set_training_set(keys[500:1500])
    for batch in dm.train_dataloader():
        x, y = batch
        idx = batch.keys.numpy() - keys[0]
        np.testing.assert_array_equal(x["dense"].numpy(), rows["dense"][idx])
        np.testing.assert_array_equal(x["cat"].numpy(), rows["cat"][idx])
        np.testing.assert_array_equal(y.numpy(), rows["label"][idx])


def test_training_batches_come_in_read_order_with_the_samplers_samples(tmp_path):
    store = SampleStore.create(tmp_path / "clicks")
    rows = synthetic_criteo_rows(2000, seed=6)
    keys = np.concatenate([store.append_records(rows[i : i + 500], labels="label") for i in range(0, 2000, 500)])
    weights = np.arange(2000, dtype=np.float32)
    dm = ModynDataModule(store, batch_size=256, seed=1)
    dm.set_training_set(keys, weights)
    loader = dm.train_dataloader()
    requested = list(loader.sampler)
    got = list(loader)
    assert len(got) == len(requested) == 8
    for req, batch in zip(requested, got):
        assert sorted(batch.keys.tolist()) == sorted(req.keys.tolist())  # the same samples...
        shard = (batch.keys.numpy() - keys[0]) // 500
        assert (np.diff(shard) >= 0).all()  # ...grouped by shard, so each byte is copied once
        np.testing.assert_array_equal(batch.weights.numpy(), weights[batch.keys.numpy() - keys[0]])
        np.testing.assert_array_equal(batch[1].numpy(), rows["label"][batch.keys.numpy() - keys[0]])
    in_order = list(dm.batches(keys[::-1][:300], batch_size=300))[0]  # batches() keeps the order given
    assert in_order.keys.tolist() == keys[::-1][:300].tolist()
    store.close()


def test_shuffle_is_deterministic_in_seed_epoch_and_set(click_store):
    store, keys, _ = click_store

    def order(seed, epoch, subset):
        dm = ModynDataModule(store, batch_size=64, seed=seed)
        dm.set_training_set(subset)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [k for b in loader for k in b.keys.tolist()]

    assert order(3, 0, keys[:1000]) == order(3, 0, keys[:1000])
    assert order(3, 0, keys[:1000]) != order(3, 1, keys[:1000])
    assert order(3, 0, keys[:1000]) != order(4, 0, keys[:1000])
    assert sorted(order(3, 1, keys[:1000])) == keys[:1000].tolist()


@pytest.mark.parametrize("n, world, batch", [(1000, 2, 64), (1001, 3, 50), (7, 4, 2), (5, 8, 3)])
def test_ranks_disjoint_equal_batches_union_is_the_set(n, world, batch):
    keys = np.arange(10_000, 10_000 + n, dtype=np.int64)
    per_rank = []
    for rank in range(world):
        s = SelectionSampler(keys, np.ones(n, np.float32), batch, num_replicas=world, rank=rank, seed=9)
        s.set_epoch(2)
        batches = list(s)
        assert len(batches) == len(s)
        per_rank.append(batches)
    assert len({len(b) for b in per_rank}) == 1  # every rank the same number of batches
    real = [k for batches in per_rank for b in batches for k in b.keys[b.weights > 0].tolist()]
    assert sorted(real) == keys.tolist()  # disjoint, union = the training set
    padding = [k for batches in per_rank for b in batches for k in b.keys[b.weights == 0].tolist()]
    assert len(padding) == (-n) % world and set(padding) <= set(keys.tolist())


def test_locality_window_keeps_neighbours_together():
    keys = np.arange(1000, dtype=np.int64)
    s = SelectionSampler(keys, np.ones(1000, np.float32), 100, seed=0, locality_window=100)
    order = np.concatenate([b.keys for b in s])
    assert sorted(order.tolist()) == keys.tolist()
    windows = [set((order[i : i + 100] // 100).tolist()) for i in range(0, 1000, 100)]
    assert all(len(w) == 1 for w in windows)  # each window of the epoch comes from one key neighbourhood
    assert not np.array_equal(order, keys)


def test_drop_last_and_len():
    keys = np.arange(105, dtype=np.int64)
    assert len(SelectionSampler(keys, np.ones(105, np.float32), 10)) == 11
    s = SelectionSampler(keys, np.ones(105, np.float32), 10, drop_last=True)
    assert len(s) == 10 and all(len(b) == 10 for b in s)


def _reference_share(keys, weights, batch, world, rank, seed, epoch):
    """Each rank's (keys, weights) straight from the definition: the epoch's permutation, padded, strided."""
    from lightning_modyn.data.sampler import epoch_permutation

    n = len(keys)
    order = epoch_permutation(n, seed, epoch)
    total = -(-n // world) * world
    order = np.concatenate([order, order[: total - n]])
    w = weights[order].copy()
    w[n:] = 0
    return keys[order][rank:total:world], w[rank:total:world]


@pytest.mark.parametrize("key_range", [True, False])
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("world", [1, 3])
def test_batches_follow_the_epoch_permutation_for_any_keys_and_weights(key_range, uniform, world):
    rng = np.random.default_rng(5)
    n = 1001
    keys = (np.arange(n) + 500 if key_range else np.sort(rng.choice(10 * n, n, replace=False))).astype(np.int64)
    weights = (np.full(n, 0.5) if uniform else rng.random(n)).astype(np.float32)
    for rank in range(world):
        s = SelectionSampler(keys, weights, 64, num_replicas=world, rank=rank, seed=11)
        for epoch in (0, 1, 2, 7):  # 0 and 1, 2 were computed ahead; 7 is a jump, computed on the spot
            s.set_epoch(epoch)
            got = list(s)
            want_k, want_w = _reference_share(keys, weights, 64, world, rank, 11, epoch)
            assert [b.index for b in got] == list(range(len(s))) and all(b.epoch == epoch for b in got)
            np.testing.assert_array_equal(np.concatenate([b.keys for b in got]), want_k)
            np.testing.assert_array_equal(np.concatenate([b.weights for b in got]), want_w)
            assert {b.keys.dtype for b in got} == {np.dtype(np.int64)}  # positions are int32: no narrowing


def test_an_epoch_computed_ahead_equals_one_computed_on_the_spot_and_the_sampler_pickles():
    import pickle

    keys = np.arange(0, 20_000, 3, dtype=np.int64)
    weights = np.linspace(0.1, 2.0, len(keys)).astype(np.float32)
    ahead = SelectionSampler(keys, weights, 500, seed=4)
    list(ahead)  # epoch 0; epoch 1 is now being computed on the background thread
    ahead.set_epoch(1)
    fresh = SelectionSampler(keys, weights, 500, seed=4)
    fresh.set_epoch(1)  # its epoch 0, computed ahead at construction, is discarded
    copy = pickle.loads(pickle.dumps(ahead))  # the pending computation is not pickled; the copy recomputes
    runs = [[(b.keys.tolist(), b.weights.tolist()) for b in s] for s in (ahead, fresh, copy)]
    assert runs[0] == runs[1] == runs[2]
    # a batch's arrays are its own: changing one does not change the next epoch's or another batch's
    first = next(iter(fresh))
    first.weights[:] = -1
    assert (next(iter(fresh)).weights > 0).all()


def test_settings_changed_after_construction_are_honoured():
    import time

    keys = np.arange(0, 4000, 4, dtype=np.int64)
    s = SelectionSampler(keys, np.ones(1000, np.float32), 100, seed=3)
    time.sleep(0.2)  # epoch 0's share, with seed 3, is computed ahead by now
    s.seed = 7
    got = np.concatenate([b.keys for b in s])
    np.testing.assert_array_equal(got, _reference_share(keys, np.ones(1000, np.float32), 100, 1, 0, 7, 0)[0])


def test_a_sampler_rebuilt_each_epoch_takes_the_order_its_predecessor_computed_ahead():
    from lightning_modyn.data.ahead import AHEAD

    keys = np.arange(50_000, dtype=np.int64) * 3
    weights = np.ones(len(keys), np.float32)
    first = SelectionSampler(keys, weights, 1000, seed=1)
    first_batches = list(first)  # epoch 0; epoch 1 starts on the background thread
    assert first._ahead_key(1) in AHEAD.waiting()
    second = SelectionSampler(keys, weights, 1000, seed=1, epoch=1)  # reload_dataloaders_every_n_epochs
    second.set_epoch(1)  # as Lightning does: nothing new is started
    assert AHEAD.waiting().count(first._ahead_key(1)) == 1 and second._ahead_key(0) not in AHEAD.waiting()
    got = np.concatenate([b.keys for b in second])
    assert first._ahead_key(1) not in AHEAD.waiting()  # taken, not computed again
    np.testing.assert_array_equal(got, _reference_share(keys, weights, 1000, 1, 0, 1, 1)[0])
    assert not np.array_equal(got, np.concatenate([b.keys for b in first_batches]))


def test_each_live_sampler_keeps_one_share_waiting_and_a_collected_one_none():
    import gc

    from lightning_modyn.data.ahead import AHEAD

    samplers = [SelectionSampler(np.arange(i, 30_000, 3, dtype=np.int64), np.ones(len(range(i, 30_000, 3)),
                                 np.float32), 500, seed=i) for i in range(3)]
    [list(s) for s in samplers]  # interleaved epochs (train, val and test loaders; the benchmark) evict nothing
    assert all(s._ahead_key(1) in AHEAD.waiting() for s in samplers)
    samplers[0].set_epoch(5)  # what it started for epoch 1 is dropped; epoch 5 waits instead
    assert samplers[0]._ahead_key(1) not in AHEAD.waiting() and samplers[0]._ahead_key(5) in AHEAD.waiting()
    gone = samplers.pop()._ahead_key(1)
    gc.collect()
    assert gone not in AHEAD.waiting() and all(s._ahead_key(s.epoch + (s.epoch == 0)) in AHEAD.waiting()
                                               for s in samplers)


def test_a_sampler_collected_inside_the_ahead_lock_drops_its_share_without_deadlock():
    import gc
    import threading

    from lightning_modyn.data.ahead import AHEAD

    samplers = [SelectionSampler(np.arange(0, 3_000, dtype=np.int64), np.ones(3_000, np.float32), 100, seed=7)]
    list(samplers[0])
    gone = samplers[0]._ahead_key(1)
    assert gone in AHEAD.waiting()
    done = threading.Event()

    def collect_while_locked():  # as when the collector runs inside AHEAD.start (executor.submit allocates)
        with AHEAD._lock:
            samplers.clear()
            gc.collect()
        done.set()

    worker = threading.Thread(target=collect_while_locked, daemon=True)
    worker.start()
    worker.join(20)
    assert done.is_set(), "the sampler's finalizer waited for the lock its own thread held"
    assert gone not in AHEAD.waiting()


def test_a_fit_rebuilding_its_loader_every_epoch_computes_each_order_once_ahead(click_store, monkeypatch):
    import threading

    from lightning_modyn.data import sampler as sampler_module

    store, keys, _ = click_store
    calls: list[tuple[int, bool]] = []  # (epoch, computed on the training thread)
    real = sampler_module.rank_share

    def counted(*args):
        calls.append((args[2], threading.current_thread() is threading.main_thread()))
        return real(*args)

    monkeypatch.setattr(sampler_module, "rank_share", counted)
    dm = ModynDataModule(store, batch_size=256, seed=6)
    dm.set_training_set(keys[:2000])
    rec = RecordKeys()
    trainer(max_epochs=4, reload_dataloaders_every_n_epochs=1, callbacks=[rec], num_sanity_val_steps=0).fit(
        PlainClickModel(), datamodule=dm)
    per_epoch = len(rec.batches) // 4
    for epoch in range(4):  # each epoch trained the order of its epoch: the batches are right under reloading
        got = sorted(k for b in rec.batches[epoch * per_epoch : (epoch + 1) * per_epoch] for k in b)
        first = [k for b in rec.batches[epoch * per_epoch : epoch * per_epoch + 1] for k in b]
        want = _reference_share(keys[:2000], np.ones(2000, np.float32), 256, 1, 0, 6, epoch)[0]
        assert got == sorted(keys[:2000].tolist()) and sorted(first) == sorted(want[:256].tolist())
    trained = [e for e, _ in calls if e < 4]
    assert sorted(trained) == [0, 1, 2, 3]  # every epoch's order computed once, none twice, none thrown away
    assert not any(on_main for _, on_main in calls)  # and always ahead, on the background thread


def _iterate_in_child(sampler, queue):
    queue.put(np.concatenate([b.keys for b in sampler]).tolist())


def test_a_sampler_made_before_a_fork_is_iterated_in_the_child():
    import multiprocessing as mp
    import time

    from lightning_modyn.data.ahead import AHEAD

    AHEAD.start(("busy", time.time()), time.sleep, 1.0, owner=-1)  # the parent's thread is busy at the fork
    keys = np.arange(0, 3000, 2, dtype=np.int64)
    sampler = SelectionSampler(keys, np.ones(1500, np.float32), 100, seed=5)  # its epoch 0 waits in the parent
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_iterate_in_child, args=(sampler, queue))
    child.start()
    try:
        got = queue.get(timeout=30)
        child.join(timeout=30)
    finally:
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert got == _reference_share(keys, np.ones(1500, np.float32), 100, 1, 0, 5, 0)[0].tolist()


def _epoch_keys_in_child(queue):
    s = SelectionSampler(np.arange(0, 3000, 2, dtype=np.int64), np.ones(1500, np.float32), 100, seed=2)
    queue.put(np.concatenate([b.keys for b in s]).tolist())  # epoch 0: the share computed ahead at construction


def test_a_forked_process_computes_epochs_ahead_with_its_own_thread():
    import multiprocessing as mp

    parent = SelectionSampler(np.arange(0, 3000, 2, dtype=np.int64), np.ones(1500, np.float32), 100, seed=2)
    want = np.concatenate([b.keys for b in parent]).tolist()  # the parent's background thread now exists
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_epoch_keys_in_child, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=30)  # with the parent's executor (and no thread behind it) this would hang
        child.join(timeout=30)
    finally:
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0 and got == want


def test_resume_mid_epoch_sees_the_same_samples_as_an_uninterrupted_run(click_store, tmp_path):
    store, keys, _ = click_store

    def run(ckpt_path=None, max_steps=-1, checkpoint=None):
        dm = ModynDataModule(store, batch_size=100, seed=4)
        dm.set_training_set(keys[:2000])
        rec = RecordKeys()
        callbacks = [rec] + ([checkpoint] if checkpoint else [])
        t = trainer(max_epochs=2, max_steps=max_steps, callbacks=callbacks,
                    enable_checkpointing=checkpoint is not None)
        t.fit(PlainClickModel(), datamodule=dm, ckpt_path=ckpt_path)
        return rec.batches

    full = run()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=7, save_top_k=-1)
    first = run(max_steps=27, checkpoint=ckpt)  # stops in epoch 1 (20 batches an epoch)
    path = tmp_path / "ckpt" / "epoch=1-step=21.ckpt"
    assert path.exists(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    rest = run(ckpt_path=str(path))
    assert first[:21] + rest == full


def test_resume_with_another_training_set_is_refused(click_store, tmp_path):
    store, keys, _ = click_store
    dm = ModynDataModule(store, batch_size=100)
    dm.set_training_set(keys[:500])
    state = dm.train_dataloader().state_dict()
    dm.set_training_set(keys[:400])
    with pytest.raises(ValueError, match="different training set"):
        dm.train_dataloader().load_state_dict(state)


def test_samples_with_array_member_decode_and_workers(tmp_path):
    store = SampleStore.create(tmp_path / "images")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 300)
    keys = store.append([{"raw": im.tobytes(), "cls": int(c)} for im, c in zip(images, labels)], labels="cls")
    dm = ModynDataModule(store.url, decode=ArrayMember("raw", [8, 8, 3], scale=1 / 255, channels_first=True),
                         batch_size=64, num_workers=2)
    dm.set_training_set(keys)
    seen = []
    for batch in dm.train_dataloader():
        x, y = batch
        idx = batch.keys.numpy() - keys[0]
        assert x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32
        np.testing.assert_allclose(x.numpy(), images[idx].transpose(0, 3, 1, 2) / 255, rtol=1e-6)
        np.testing.assert_array_equal(y.numpy(), labels[idx])
        seen += batch.keys.tolist()
    assert sorted(seen) == keys.tolist()
    store.close()


def test_sample_store_without_decode_is_a_clear_error(tmp_path):
    store = SampleStore.create(tmp_path / "s")
    keys = store.append([{"txt": "a"}])
    dm = ModynDataModule(store)
    dm.set_training_set(keys)
    with pytest.raises(ValueError, match="need a decode function"):
        dm.train_dataloader()


def test_growing_store_and_deleted_keys(tmp_path):
    writer = SampleStore.create(tmp_path / "s")
    first = writer.append_records(synthetic_criteo_rows(500), labels="label")
    dm = ModynDataModule(writer.url, batch_size=100)  # a read-only view of the growing store
    dm.set_training_set(first)
    trainer(max_epochs=1).fit(PlainClickModel(), datamodule=dm)
    more = writer.append_records(synthetic_criteo_rows(300, seed=1), labels="label")
    dm.set_training_set(np.concatenate([first, more]))  # keys appended after setup
    writer.delete(first[:50])
    rec = RecordKeys()
    with pytest.warns(RuntimeWarning, match="50 key\\(s\\) of the train set were deleted"):
        trainer(max_epochs=1, callbacks=[rec]).fit(PlainClickModel(), datamodule=dm)
    seen = sorted(k for b in rec.batches for k in b)
    assert seen == sorted(first[50:].tolist() + more.tolist())
    writer.close()


def test_key_deleted_during_an_epoch_is_skipped_with_a_warning(click_store):
    store, keys, _ = click_store
    dm = ModynDataModule(store.url, batch_size=100, shuffle=False)
    dm.set_training_set(keys[:300])
    loader = iter(dm.train_dataloader())
    next(loader)
    store.delete(keys[150:160])
    with pytest.warns(RuntimeWarning, match="10 key\\(s\\) of batch 1 were deleted"):
        batch = next(loader)
    assert len(batch.keys) == 90


def test_image_key_deleted_during_an_epoch_is_skipped_with_a_warning(tmp_path):
    store = SampleStore.create(tmp_path / "images")
    images = np.arange(200 * 12, dtype=np.uint8).reshape(200, 2, 2, 3)
    keys = store.append([{"raw": im.tobytes(), "cls": i % 3} for i, im in enumerate(images)], labels="cls")
    dm = ModynDataModule(store.url, decode=ArrayMember("raw", [2, 2, 3]), batch_size=50, shuffle=False)
    dm.set_training_set(keys)
    loader = iter(dm.train_dataloader())
    next(loader)
    store.delete(keys[[60, 70, 99]])
    with pytest.warns(RuntimeWarning, match="3 key\\(s\\) of batch 1 were deleted"):
        x, y = batch = next(loader)
    kept = np.setdiff1d(keys[50:100], keys[[60, 70, 99]])
    assert sorted(batch.keys.tolist()) == kept.tolist()
    idx = batch.keys.numpy() - keys[0]
    np.testing.assert_array_equal(x.numpy(), images[idx])
    np.testing.assert_array_equal(y.numpy(), idx % 3)
    store.close()


@pytest.mark.parametrize(
    "keys, weights, error, match",
    [
        ([10**9], None, UnknownKeyError, "unknown key 1000000000"),
        ([0, 1], [1.0, -1.0], ValueError, "key 1 is negative"),
        ([0, 1], [1.0, float("nan")], ValueError, "key 1 is nan"),
        ([0, 1], [float("inf"), 1.0], ValueError, "key 0 is inf"),
        ([0, 1], [1.0], ValueError, "one value per key"),
        ([], None, ValueError, "training set is empty"),
        ([0.5], None, TypeError, "must be integers"),
    ],
)
def test_bad_training_sets(click_store, keys, weights, error, match):
    store, _, _ = click_store
    dm = ModynDataModule(store)
    with pytest.raises(error, match=match):
        dm.set_training_set(keys, weights)
    assert dm.training_set is None


def test_deleted_key_in_training_set_is_refused_at_set_time(click_store):
    store, keys, _ = click_store
    store.delete(keys[:1])
    with pytest.raises(DeletedKeyError, match=f"key {keys[0]} was deleted"):
        ModynDataModule(store).set_training_set(keys[:5])


def test_decode_error_names_key_and_store(click_store):
    store, keys, _ = click_store

    def broken(batch):
        raise ValueError("bad bytes")

    dm = ModynDataModule(store, decode=broken, batch_size=10, shuffle=False)
    dm.set_training_set(keys[:20])
    with pytest.raises(RuntimeError, match=f"keys \\[{keys[0]}, {keys[1]}.*{store.url}: bad bytes"):
        next(iter(dm.train_dataloader()))


def test_store_disappearing_mid_epoch_is_a_clear_error(tmp_path):
    import shutil

    store = SampleStore.create(tmp_path / "gone")
    keys = store.append([{"raw": bytes(12), "cls": 1}] * 50, labels="cls")
    dm = ModynDataModule(store.url, decode=ArrayMember("raw", [12]), batch_size=10, shuffle=False)
    dm.set_training_set(keys)
    loader = iter(dm.train_dataloader())
    next(loader)
    store.close()
    shutil.rmtree(tmp_path / "gone")
    dm.store.files.close()
    dm.store._reader.forget()
    with pytest.raises(Exception, match="shard-000000.tar"):
        next(loader)


def test_validation_and_test_sets_by_time_window(click_store):
    store, keys, rows = click_store
    dm = ModynDataModule(store, batch_size=256)
    dm.set_training_set(keys[:1000])
    dm.set_validation_set(start=20, end=25)
    val_keys = [k for b in dm.val_dataloader() for k in b.keys.tolist()]
    assert val_keys == keys[2000:2500].tolist()  # in key order, not shuffled
    dm.set_test_set(keys[:10])
    assert [k for b in dm.test_dataloader() for k in b.keys.tolist()] == keys[:10].tolist()
    with pytest.raises(ValueError, match="either keys or a time window"):
        dm.set_validation_set(keys[:3], start=1)
    trainer(max_epochs=1, limit_val_batches=2).fit(PlainClickModel(), datamodule=dm)


def test_changing_the_training_set_between_epochs(click_store):
    store, keys, _ = click_store

    class Shrink(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.datamodule.set_training_set(keys[:200])

    rec = RecordKeys()
    dm = ModynDataModule(store, batch_size=100)
    dm.set_training_set(keys[:1000])
    trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, callbacks=[Shrink(), rec]).fit(
        PlainClickModel(), datamodule=dm)
    assert len(rec.batches) == 10 + 2
    assert sorted(k for b in rec.batches[10:] for k in b) == keys[:200].tolist()
    dm.set_training_set(keys[:1000])
    with pytest.raises(RuntimeError, match="reload_dataloaders_every_n_epochs=1"):
        trainer(max_epochs=2, callbacks=[Shrink()]).fit(PlainClickModel(), datamodule=dm)


def test_forked_workers_reopen_the_store_instead_of_sharing_its_connection(click_store):
    import multiprocessing as mp

    store, keys, rows = click_store
    store.get_records(keys[:3])  # the parent has a loaded snapshot and an open SQLite connection
    parent_catalog = store.catalog

    def child(queue):
        got = store.get_records(keys[10:13])
        queue.put((store.catalog is not parent_catalog, store.readonly, got.tobytes() == rows[10:13].tobytes()))

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    proc.join(60)
    assert queue.get(timeout=5) == (True, True, True)
    assert store.catalog is parent_catalog and not store.readonly


def test_batches_decode_any_keys_in_order_outside_a_fit(click_store):
    store, keys, rows = click_store
    dm = ModynDataModule(store, batch_size=64, val_batch_size=100)
    wanted = keys[[5, 2999, 0, 17] * 60]  # 240 keys, any order, repeats allowed
    batches = list(dm.batches(wanted))
    assert [len(b.keys) for b in batches] == [100, 100, 40]
    assert torch.cat([b.keys for b in batches]).tolist() == wanted.tolist()
    x, y = batches[0]
    assert y.tolist() == rows["label"][[5, 2999, 0, 17] * 25].tolist()
    assert [len(b.keys) for b in dm.batches(wanted, batch_size=200)] == [200, 40]
