"""Batches leave DataLoader workers as one shared-memory block and arrive as the same KeyedBatch."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from lightning_modyn import KeyedBatch, ModynDataModule, SampleStore
from lightning_modyn.data.transfer import ALIGNMENT, PackedBatch, pack, unpack
from lightning_modyn.datasets import synthetic_criteo_rows

Pair = collections.namedtuple("Pair", "left right")


def storage_ptr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_pack_round_trips_every_tensor_into_one_aligned_buffer():
    cols = torch.arange(12, dtype=torch.int64).view(3, 4).t()  # not contiguous
    batch = KeyedBatch(
        ({"dense": torch.randn(3, 5), "cat": cols}, torch.tensor([True, False, True]),
         Pair(torch.tensor(2.5, dtype=torch.float64), "tag"), [torch.empty(0, 7, dtype=torch.int16), 11]),
        keys=torch.tensor([7, 3, 9]), weights=torch.tensor([1.0, 0.0, 2.5]))
    packed = pack(batch)
    assert packed.buffer.dtype == torch.uint8 and packed.buffer.dim() == 1
    out = packed.unpack()

    assert isinstance(out, KeyedBatch)
    (x, flags, pair, rest) = out
    assert torch.equal(x["dense"], batch[0]["dense"]) and x["dense"].dtype == torch.float32
    assert torch.equal(x["cat"], cols) and x["cat"].is_contiguous()
    assert flags.dtype == torch.bool and flags.tolist() == [True, False, True]
    assert isinstance(pair, Pair) and pair.left.shape == () and pair.left.item() == 2.5 and pair.right == "tag"
    assert isinstance(rest, list) and rest[0].shape == (0, 7) and rest[0].dtype == torch.int16 and rest[1] == 11
    assert out.keys.tolist() == [7, 3, 9] and out.weights.tolist() == [1.0, 0.0, 2.5]
    tensors = [x["dense"], x["cat"], flags, pair.left, out.keys, out.weights]
    assert {storage_ptr(t) for t in tensors} == {storage_ptr(packed.buffer)}
    base = packed.buffer.data_ptr()
    assert all((t.data_ptr() - base) % ALIGNMENT == 0 for t in tensors)


def test_pack_leaves_tensors_it_cannot_place_alone():
    grad = torch.ones(2, requires_grad=True)
    sparse = torch.eye(3).to_sparse()
    quantized = torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8)
    out = pack((grad, sparse, quantized, torch.zeros(4))).unpack()
    assert out[0] is grad and out[1] is sparse and out[2] is quantized and out[3].tolist() == [0.0] * 4


def test_pack_of_a_batch_without_tensors_is_empty_and_unpack_passes_other_values_through():
    packed = pack(("a", 1, None))
    assert packed.buffer.numel() == 0 and packed.unpack() == ("a", 1, None)
    plain = (torch.ones(1),)
    assert unpack(plain) is plain


def test_unpacked_views_do_not_alias_the_source_batch():
    x = torch.zeros(4)
    out = pack((x,)).unpack()
    out[0].add_(1)
    assert x.tolist() == [0.0] * 4 and out[0].tolist() == [1.0] * 4


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_batches_arrive_as_keyed_batches_in_one_storage(tmp_path, workers):
    store = SampleStore.create(tmp_path / "clicks")
    rows = synthetic_criteo_rows(1000, seed=3)
    keys = store.append_records(rows, labels="label")
    weights = np.linspace(0.5, 2.0, len(keys)).astype(np.float32)

    def batches(num_workers):
        dm = ModynDataModule(store.url, batch_size=128, num_workers=num_workers, seed=4, worker_mode="process")
        dm.set_training_set(keys, weights)
        return list(dm.train_dataloader())

    in_process, from_workers = batches(0), batches(workers)
    assert len(from_workers) == len(in_process) == 8
    for a, b in zip(in_process, from_workers):
        assert isinstance(b, KeyedBatch) and not isinstance(b, PackedBatch)
        (xa, ya), (xb, yb) = a, b
        assert torch.equal(b.keys, a.keys) and torch.equal(b.weights, a.weights) and torch.equal(yb, ya)
        assert xb.keys() == xa.keys() and all(torch.equal(xb[k], xa[k]) for k in xa)
        assert len({storage_ptr(t) for t in (xb["dense"], xb["cat"], yb, b.keys, b.weights)}) == 1
        idx = b.keys.numpy() - keys[0]
        np.testing.assert_array_equal(yb.numpy(), rows["label"][idx])
    store.close()


# ---------------------------------------------------------------- worker rings: reused shared-memory slots
from lightning_modyn.data import transfer  # noqa: E402
from lightning_modyn.data.transfer import BUSY, FREE, MAX_SLOTS, SlotBatch, WorkerRing  # noqa: E402


def keyed(n: int, fill: float) -> KeyedBatch:
    return KeyedBatch((torch.full((n, 3), fill), torch.arange(n)), keys=torch.arange(n) + 100,
                      weights=torch.full((n,), fill))


def test_a_ring_sends_slot_memory_once_and_batches_survive_slot_reuse():
    ring = WorkerRing()
    try:
        first = ring.send(keyed(16, 1.0))
        assert isinstance(first, SlotBatch) and first.memory is not None and first.state is not None
        assert ring.state[first.slot] == BUSY
        got = first.take()
        assert ring.state[first.slot] == FREE
        held = got.unpack()  # kept by the "training step" while the slot is reused below
        seen_again = False
        for i in range(2 * MAX_SLOTS):
            nxt = ring.send(keyed(16, float(i + 2)))
            assert isinstance(nxt, SlotBatch)
            if nxt.slot == first.slot:
                seen_again = True
                assert nxt.memory is None and nxt.state is None  # the training process has it already
            out = nxt.unpack()
            assert out[0][0].eq(float(i + 2)).all() and out.weights.eq(float(i + 2)).all()
        assert seen_again
        assert held[0][0].eq(1.0).all() and held.keys.tolist() == list(range(100, 116))
    finally:
        transfer.release_rings([ring.token])


def test_a_ring_falls_back_to_a_packed_block_when_every_slot_is_busy():
    ring = WorkerRing()
    try:
        in_flight = [ring.send(keyed(4, float(i))) for i in range(MAX_SLOTS)]
        assert all(isinstance(b, SlotBatch) for b in in_flight)
        assert len({b.slot for b in in_flight}) == MAX_SLOTS
        extra = ring.send(keyed(4, 99.0))
        assert isinstance(extra, PackedBatch) and extra.unpack()[0][0].eq(99.0).all()
        for i, b in enumerate(in_flight):  # still intact, in whatever order they are taken
            assert b.unpack()[0][0].eq(float(i)).all()
    finally:
        transfer.release_rings([ring.token])


def test_a_bigger_batch_reallocates_its_slot_and_sends_the_new_memory():
    ring = WorkerRing()
    try:
        for small in [ring.send(keyed(2, 1.0)) for _ in range(MAX_SLOTS)]:  # every slot allocated, small
            small.take()
        assert all(m is not None for m in ring.slots)
        big = ring.send(keyed(100_000, 5.0))
        assert isinstance(big, SlotBatch) and big.memory is not None and big.generation == 2
        assert big.unpack()[0][0].eq(5.0).all()
    finally:
        transfer.release_rings([ring.token])


def test_taking_a_slot_twice_or_from_an_unknown_ring_is_a_clear_error():
    ring = WorkerRing()
    try:
        batch = ring.send(keyed(3, 1.0))
        batch.take()
        with pytest.raises(RuntimeError, match="already taken"):
            batch.take()
        again = ring.send(keyed(3, 2.0))  # free and known: carries no memory
        assert again.memory is None
        transfer.release_rings([ring.token])
        with pytest.raises(RuntimeError, match=f"{ring.token}.*no such ring"):
            again.take()
    finally:
        transfer.release_rings([ring.token])


def test_persistent_workers_keep_their_rings_and_an_abandoned_epoch_does_not_corrupt_the_next(tmp_path):
    store = SampleStore.create(tmp_path / "clicks")
    rows = synthetic_criteo_rows(3000, seed=5)
    keys = store.append_records(rows, labels="label")

    def loader(num_workers):
        dm = ModynDataModule(store.url, batch_size=100, num_workers=num_workers, seed=6, worker_mode="process",
                             persistent_workers=num_workers > 0)
        dm.set_training_set(keys)
        return dm.train_dataloader()

    reference, workers = loader(0), loader(2)
    for epoch in range(4):
        reference.sampler.set_epoch(epoch)
        workers.sampler.set_epoch(epoch)
        expected = list(reference)
        if epoch == 1:  # stop after 3 batches: the batches in flight are dropped, their slots stay busy
            it = iter(workers)
            got = [next(it) for _ in range(3)]
            del it
            expected = expected[:3]
        else:
            got = list(workers)  # all held at once: later slot reuse must not change earlier batches
        assert len(got) == len(expected)
        for a, b in zip(expected, got):
            assert torch.equal(a.keys, b.keys) and torch.equal(a[1], b[1])
            assert torch.equal(a[0]["dense"], b[0]["dense"]) and torch.equal(a[0]["cat"], b[0]["cat"])
    assert 1 <= len(workers._rings) <= 2  # one ring per persistent worker that handed a batch over
    tokens = set(workers._rings)
    del workers
    import gc

    gc.collect()
    assert not tokens & set(transfer._RINGS)  # released with the loader
    store.close()


@pytest.mark.parametrize("scale", [None, 1 / 255])
def test_fixed_size_members_arrive_contiguous_and_exact_from_workers_and_in_process(tmp_path, scale):
    from lightning_modyn.data import ArrayMember

    store = SampleStore.create(tmp_path / "images")
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, size=(300, 8, 8, 3), dtype=np.uint8)
    keys = store.append([{"raw": img.tobytes()} for img in images], labels=np.arange(300) % 10)

    def batches(num_workers):
        dm = ModynDataModule(store.url, decode=ArrayMember("raw", [8, 8, 3], scale=scale), batch_size=64,
                             worker_mode="process",
                             num_workers=num_workers, seed=2)
        dm.set_training_set(keys)
        return list(dm.train_dataloader())

    for batch in batches(0) + batches(1):
        x, y = batch
        assert x.is_contiguous() and x.shape[1:] == (8, 8, 3)
        expected = torch.from_numpy(images[batch.keys.numpy() - keys[0]])
        assert torch.equal(x, expected if scale is None else expected.float() * scale)
        assert y.tolist() == ((batch.keys - keys[0]) % 10).tolist()
    store.close()
