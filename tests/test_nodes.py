"""The torchdata path: the DataModule's batches through ``torchdata.nodes``, in its order, resumable mid-epoch."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchdata.nodes import IterableWrapper, Loader, Mapper

from lightning_modyn import KeyedBatch, ModynDataModule, SampleStore
from lightning_modyn.data import ArrayMember, KeyBatchNode, ModynDataLoader, TrainLoader, train_loader, train_node
from lightning_modyn.datasets import synthetic_criteo_rows


@pytest.fixture(scope="module")
def click_store(tmp_path_factory):
    store = SampleStore.create(tmp_path_factory.mktemp("nodes") / "clicks")
    keys = store.append_records(synthetic_criteo_rows(1500, seed=3), labels="label")
    yield store, keys
    store.close()


@pytest.fixture(scope="module")
def image_store(tmp_path_factory):
    store = SampleStore.create(tmp_path_factory.mktemp("nodes") / "images")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
    keys = store.append([{"raw": im.tobytes(), "cls": int(c)} for im, c in zip(images, rng.integers(0, 5, 200))],
                        labels="cls")
    yield store, keys
    store.close()


def clicks(click_store, **kwargs) -> ModynDataModule:
    store, keys = click_store
    dm = ModynDataModule(store, **{"batch_size": 128, "seed": 7, **kwargs})
    dm.set_training_set(keys[::2], weights=np.linspace(0.5, 2, len(keys[::2])))
    return dm


def same(a, b) -> bool:
    """Equal structure, dtypes and values (tensors nested in tuples and dicts)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_batches(got: list, want: list) -> None:
    assert [b.keys.tolist() for b in got] == [b.keys.tolist() for b in want]
    for g, w in zip(got, want):
        assert isinstance(g, KeyedBatch)
        assert same(tuple(g), tuple(w)) and same(g.keys, w.keys) and same(g.weights, w.weights)


def datamodule_epoch(dm: ModynDataModule, epoch: int) -> list:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


@pytest.mark.parametrize("num_workers, method", [(0, "thread"), (2, "thread"), (2, "process")])
def test_the_node_gives_the_datamodules_batches_for_a_seed_and_epoch(click_store, num_workers, method):
    dm = clicks(click_store)
    loader = Loader(train_node(dm, num_workers=num_workers, method=method, epoch=3))
    assert_same_batches(list(loader), datamodule_epoch(dm, 3))
    assert_same_batches(list(loader), datamodule_epoch(dm, 4))  # iterated again: the next epoch


def test_sample_stores_decode_as_in_the_datamodule(image_store):
    store, keys = image_store
    dm = ModynDataModule(store, decode=ArrayMember("raw", [4, 4, 3], scale=1 / 255, channels_first=True),
                         batch_size=32, seed=2, drop_last=True)
    dm.set_training_set(keys)
    got = list(Loader(train_node(dm, num_workers=1)))
    assert len(got) == 200 // 32
    assert_same_batches(got, datamodule_epoch(dm, 0))


def test_a_rank_of_a_ddp_world_reads_what_the_datamodule_gives_that_rank(click_store):
    dm = clicks(click_store, batch_size=64)  # 750 keys over 4 ranks: 188 a rank, two of them padding on rank 2/3
    dm.trainer = SimpleNamespace(world_size=4, global_rank=2, current_epoch=1, training=False)
    want = list(dm.train_dataloader())
    assert float(want[-1].weights[-1]) == 0.0  # the padding repeat
    assert_same_batches(list(Loader(train_node(dm))), want)  # rank and epoch from the trainer
    dm.trainer = None
    assert_same_batches(list(Loader(train_node(dm, num_replicas=4, rank=2, epoch=1))), want)


def test_resume_mid_epoch_from_the_nodes_own_state(click_store):
    dm = clicks(click_store)
    _, sampler = dm.train_parts()
    node = Mapper(KeyBatchNode(sampler), dm.train_parts()[0].read)
    whole = [next(node) for _ in range(len(sampler))]
    node.reset()  # epoch 1
    first = [next(node) for _ in range(2)]
    state = node.state_dict()
    rest = list(node)
    dataset, sampler = dm.train_parts()
    again = Mapper(KeyBatchNode(sampler), dataset.read)
    again.reset(state)
    assert_same_batches(list(again), rest)
    assert_same_batches(first + rest, datamodule_epoch(dm, 1))
    assert_same_batches(whole, datamodule_epoch(dm, 0))


@pytest.mark.parametrize("num_workers, method", [(2, "thread"), (2, "process")])
def test_resume_mid_epoch_through_a_parallel_pipeline(click_store, num_workers, method):
    dm = clicks(click_store)
    loader = Loader(train_node(dm, num_workers=num_workers, method=method, prefetch_factor=2))
    list(loader)  # epoch 0
    it = iter(loader)
    first = [next(it) for _ in range(3)]
    state = loader.state_dict()  # the workers have read ahead: the state is still that of batch 3
    rest = list(it)
    resumed = Loader(train_node(dm, num_workers=num_workers, method=method, prefetch_factor=2))
    resumed.load_state_dict(state)
    assert_same_batches(list(resumed), rest)
    assert_same_batches(first + rest, datamodule_epoch(dm, 1))
    assert_same_batches(list(resumed), datamodule_epoch(dm, 2))  # then on to the next epoch


def test_the_state_is_that_of_the_datamodules_loader_both_ways(click_store):
    dm = clicks(click_store)
    loader = dm.train_dataloader()
    it = iter(loader)
    for _ in range(4):
        next(it)
    state = loader.state_dict()
    rest = [b.keys.tolist() for b in it]
    _, sampler = dm.train_parts()
    node = KeyBatchNode(sampler)
    node.reset(state)
    assert [r.keys.tolist() for r in node] == rest
    node.reset(state)
    next(node)
    back = dm.train_dataloader()
    back.load_state_dict(node.state_dict())
    assert [b.keys.tolist() for b in back] == rest[1:]


def test_a_state_saved_at_the_end_of_an_epoch_goes_on_with_the_next(click_store):
    dm = clicks(click_store)
    node = KeyBatchNode(dm.train_parts()[1])
    list(node)
    state = node.state_dict()
    again = KeyBatchNode(dm.train_parts()[1])
    again.reset(state)
    assert list(again) == []
    again.reset()
    assert [r.keys.tolist() for r in again] == [b.keys.tolist() for b in datamodule_epoch(dm, 1)]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_workers": -1}, ValueError, "num_workers must be an integer >= 0"),
    ({"num_workers": 1.5}, ValueError, "num_workers must be an integer"),
    ({"method": "fiber"}, ValueError, r"method must be one of \('thread', 'process'\), got 'fiber'"),
    ({"multiprocessing_context": "teleport"}, ValueError, "multiprocessing_context must be one of"),
    ({"pin_memory": "yes"}, ValueError, "pin_memory must be True or False"),
    ({"prefetch_factor": -2}, ValueError, "prefetch_factor must be an integer >= 0"),
    ({"num_replicas": 2}, ValueError, "give both num_replicas and rank"),
    ({"num_replicas": 2, "rank": 2}, ValueError, r"rank must be an integer in \[0, 1\]"),
    ({"num_replicas": 0, "rank": 0}, ValueError, "num_replicas must be an integer >= 1"),
    ({"epoch": -1}, ValueError, "epoch must be an integer >= 0"),
])
def test_bad_options_are_clear_errors(click_store, kwargs, error, match):
    with pytest.raises(error, match=match):
        train_node(clicks(click_store), **kwargs)


def test_bad_sources_are_clear_errors(click_store):
    with pytest.raises(TypeError, match="datamodule must be a ModynDataModule"):
        train_node("clicks")
    with pytest.raises(TypeError, match="sampler must be a SelectionSampler"):
        KeyBatchNode(range(3))
    store, _ = click_store
    with pytest.raises(RuntimeError, match=r"no train set: call set_training_set\(keys\)"):
        train_node(ModynDataModule(store))


def test_states_that_do_not_resume_this_order_are_refused(click_store):
    dm = clicks(click_store)
    state = KeyBatchNode(dm.train_parts()[1]).state_dict()

    def reset(state, dm=dm):
        KeyBatchNode(dm.train_parts()[1]).reset(state)

    with pytest.raises(ValueError, match="a dict with epoch, batches_done"):
        reset({"epoch": 0})
    with pytest.raises(ValueError, match=r"batches_done'\] must be an integer in \[0, 6\]"):
        reset({**state, "batches_done": 7})
    with pytest.raises(ValueError, match="saved for 6 batches an epoch, this node has 3"):
        reset(state, clicks(click_store, batch_size=256))
    with pytest.raises(ValueError, match="saved with seed 7, this node's order has seed 8"):
        reset(state, clicks(click_store, seed=8))
    other = clicks(click_store)
    other.set_training_set(click_store[1][1::2])
    with pytest.raises(ValueError, match="different training set"):
        reset(state, other)


def test_a_decode_error_in_a_worker_thread_names_the_batch(click_store):
    store, keys = click_store

    def broken(batch):
        raise ValueError("bad bytes")

    dm = ModynDataModule(store, decode=broken, batch_size=10, shuffle=False)
    dm.set_training_set(keys[:20])
    with pytest.raises(RuntimeError, match=f"keys \\[{keys[0]}, {keys[1]}.*{store.url}: bad bytes"):
        next(iter(Loader(train_node(dm, num_workers=2))))


def test_an_iterator_dropped_before_its_epoch_ended_does_not_skip_an_epoch(click_store):
    dm = clicks(click_store, batch_size=32)  # 24 batches: more than the workers and the prefetcher read ahead
    loader = Loader(train_node(dm, num_workers=2))
    next(iter(loader))  # a probe (Lightning checks that a loader is iterable so); the workers read on
    assert_same_batches(list(loader), datamodule_epoch(dm, 0))
    it = iter(loader)  # epoch 1, left after two batches
    next(it), next(it)
    assert_same_batches(list(loader), datamodule_epoch(dm, 1))  # epoch 1 again, from its start


def test_set_epoch_chooses_the_next_epoch(click_store):
    dm = clicks(click_store)
    loader = TrainLoader(train_node(dm, num_workers=1))
    assert len(loader) == 6 and isinstance(loader.sampler, KeyBatchNode)
    loader.sampler.set_epoch(5)
    assert_same_batches(list(loader), datamodule_epoch(dm, 5))
    assert_same_batches(list(loader), datamodule_epoch(dm, 6))
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        loader.sampler.set_epoch(-1)
    with pytest.raises(TypeError, match="a TrainLoader reads a pipeline over a KeyBatchNode"):
        TrainLoader(Mapper(IterableWrapper(range(3)), str))


class TinyClickModel(L.LightningModule):
    def __init__(self, seen: list) -> None:
        super().__init__()
        self.linear, self.seen = torch.nn.Linear(13, 2), seen

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.keys.tolist())
        x, y = batch
        return F.cross_entropy(self.linear(x["dense"]), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class NodeDataModule(ModynDataModule):
    def train_dataloader(self):
        return train_loader(self, num_workers=2)


def test_a_lightning_fit_on_the_train_loader_has_the_datamodules_epochs_and_resumes_exactly(click_store, tmp_path):
    store, keys = click_store

    def fit(ckpt_path=None, max_steps=-1, checkpoint=None):
        dm = NodeDataModule(store, batch_size=100, seed=4)
        dm.set_training_set(keys[:1000])
        seen: list = []
        L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  max_epochs=2, max_steps=max_steps, enable_checkpointing=checkpoint is not None,
                  callbacks=[checkpoint] if checkpoint else []).fit(TinyClickModel(seen), datamodule=dm,
                                                                    ckpt_path=ckpt_path)
        return seen, dm

    full, dm = fit()
    assert full == [b.keys.tolist() for e in (0, 1) for b in datamodule_epoch(dm, e)]
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1)
    first, _ = fit(max_steps=15, checkpoint=ckpt)
    rest, _ = fit(ckpt_path=str(tmp_path / "epoch=1-step=12.ckpt"))  # 2 batches into epoch 1
    assert first[:12] + rest == full


# ---------------------------------------------------------------- ModynDataModule(worker_mode=...)
def test_worker_mode_must_be_process_or_thread(click_store):
    store, _ = click_store
    for bad in ("fiber", "Thread", 1):
        with pytest.raises(ValueError, match=f"worker_mode must be one of \\('process', 'thread'\\) \\(or None "
                                             f"for 'thread'\\), got {bad!r}"):
            ModynDataModule(store, worker_mode=bad)
    for unhashable in (np.array("thread"), ["thread"]):  # equal to a choice element-wise, still not one of them
        with pytest.raises(ValueError, match=r"worker_mode must be one of \('process', 'thread'\)"):
            ModynDataModule(store, worker_mode=unhashable)
    assert ModynDataModule(store).worker_mode == ModynDataModule(store, worker_mode=None).worker_mode == "thread"
    dm = clicks(click_store)
    dm.worker_mode = "threads"  # changed after construction: refused when a loader is built
    with pytest.raises(ValueError, match="worker_mode must be one of .*, got 'threads'"):
        dm.train_dataloader()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_both_worker_modes_give_the_same_batches_and_states(click_store, num_workers):
    store, keys = click_store
    loaders = {}
    for mode in ("process", "thread"):
        dm = clicks(click_store, num_workers=num_workers, worker_mode=mode, persistent_workers=num_workers > 0)
        dm.set_validation_set(keys[1:300:2])
        dm.set_test_set(keys[:200])
        loaders[mode] = dm, dm.train_dataloader()
    (dm_p, process), (dm_t, thread) = loaders["process"], loaders["thread"]
    assert type(process) is ModynDataLoader and type(thread) is TrainLoader and len(process) == len(thread) == 6
    for epoch in (0, 3):
        process.sampler.set_epoch(epoch)
        thread.sampler.set_epoch(epoch)
        assert_same_batches(list(thread), list(process))
    assert_same_batches(list(dm_t.val_dataloader()), list(dm_p.val_dataloader()))
    assert_same_batches(list(dm_t.test_dataloader()), list(dm_p.test_dataloader()))
    states = {}
    for mode, (_, loader) in loaders.items():  # two batches into epoch 4
        loader.sampler.set_epoch(4)
        it = iter(loader)
        next(it), next(it)
        states[mode] = loader.state_dict()
        del it
    assert states["process"] == states["thread"] and states["thread"]["batches_done"] == 2


def test_a_thread_mode_state_before_any_batch_is_the_start_of_the_loaders_epoch(click_store):
    dm = clicks(click_store, worker_mode="thread")
    dm.trainer = SimpleNamespace(world_size=1, global_rank=0, current_epoch=3, training=False)
    assert dm.train_dataloader().state_dict() == {**dm.train_parts()[1].state_dict(0), "epoch": 3}


class RecordBatches(L.Callback):
    def __init__(self) -> None:
        self.keys: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.keys.append(batch.keys.tolist())


def test_a_fit_resumes_exactly_in_either_worker_mode_from_either_modes_checkpoint(click_store, tmp_path):
    """Mid-epoch (2 batches into epoch 1) and on the last batch of epoch 0, with 2 workers: a checkpoint's loader
    state is the same in both modes, so each resumes from the other's."""
    store, keys = click_store

    def fit(mode, ckpt_path=None, max_steps=-1, checkpoint=None):
        dm = ModynDataModule(store, batch_size=100, seed=4, num_workers=2, worker_mode=mode,
                             persistent_workers=mode == "process")
        dm.set_training_set(keys[:1000])
        record = RecordBatches()
        L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  max_epochs=2, max_steps=max_steps, enable_checkpointing=checkpoint is not None,
                  callbacks=[record] + ([checkpoint] if checkpoint else [])).fit(
            TinyClickModel([]), datamodule=dm, ckpt_path=ckpt_path)
        return record.keys, dm

    full, dm = fit("thread")
    assert full == [b.keys.tolist() for e in (0, 1) for b in datamodule_epoch(dm, e)]
    for saved in ("process", "thread"):
        ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / saved, every_n_train_steps=2, save_top_k=-1)
        first, _ = fit(saved, max_steps=13, checkpoint=ckpt)
        assert first == full[:13]
        for resumed in ("process", "thread"):
            for name, done in (("epoch=1-step=12.ckpt", 12), ("epoch=0-step=10.ckpt", 10)):
                rest, _ = fit(resumed, ckpt_path=str(tmp_path / saved / name))
                assert full[:done] + rest == full, f"saved in {saved} mode, resumed in {resumed} mode from {name}"


def test_reader_threads_leave_the_training_threads_torch_threads_alone(click_store):
    """torchdata's worker threads call torch.set_num_threads(1); a training thread that had run no parallel torch
    operation yet would take that count on its first one. The loader fixes the training thread's count first."""
    dm = clicks(click_store, num_workers=2, worker_mode="thread")
    got = {}

    def train():  # a fresh thread, as a script's main thread before its first parallel operation
        torch.set_num_threads(2)  # the count this thread would take; not yet fixed for it
        for _ in dm.train_dataloader():
            pass
        got["threads"] = torch.get_num_threads()

    before = torch.get_num_threads()
    try:
        thread = threading.Thread(target=train)
        thread.start()
        thread.join(60)
    finally:
        torch.set_num_threads(before)
    assert got == {"threads": 2}


class ValidatedClickModel(TinyClickModel):
    def __init__(self, seen: list, validated: list) -> None:
        super().__init__(seen)
        self.validated = validated

    def validation_step(self, batch, batch_idx):
        self.validated.append(batch.keys.tolist())


def test_thread_mode_validation_in_a_fit_sees_the_validation_set_in_order(click_store):
    store, keys = click_store
    dm = ModynDataModule(store, batch_size=100, val_batch_size=50, seed=4, num_workers=2, worker_mode="thread")
    dm.set_training_set(keys[:400])
    dm.set_validation_set(keys[400:600])
    assert type(dm.val_dataloader()) is TrainLoader
    seen, validated = [], []
    L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, max_epochs=2, num_sanity_val_steps=0, limit_val_batches=3).fit(
        ValidatedClickModel(seen, validated), datamodule=dm)
    assert validated == [keys[a:a + 50].tolist() for a in (400, 450, 500)] * 2  # each epoch, in key order
    assert seen == [b.keys.tolist() for e in (0, 1) for b in datamodule_epoch(dm, e)]


def test_iterating_a_thread_loaders_sampler_leaves_the_loaders_epoch_alone(click_store):
    dm = clicks(click_store, worker_mode="thread", num_workers=1)
    loader = dm.train_dataloader()
    requested = [r.keys.tolist() for r in loader.sampler]  # epoch 0's requests, read from the order itself
    got = list(loader)
    assert_same_batches(got, datamodule_epoch(dm, 0))  # still epoch 0
    assert [sorted(r) for r in requested] == [sorted(b.keys.tolist()) for b in got]  # (read order in a batch)
    assert_same_batches(list(loader), datamodule_epoch(dm, 1))  # then the next
