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
        dm = ModynDataModule(store.url, batch_size=128, num_workers=num_workers, seed=4)
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
