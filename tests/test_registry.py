"""The model registry: storage policies (whole, xor / sub differences, codecs) give back what was saved, damaged
files are named, and the lineage says which models trained on which keys."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from lightning_modyn.pipeline import FullStorage, IncrementalStorage, ModelRegistry


class Net(torch.nn.Module):
    """Float32 weights, a float64 buffer, an int64 counter and a bfloat16 parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.bf16 = torch.nn.Parameter(torch.zeros(5, dtype=torch.bfloat16))
        self.register_buffer("stats", torch.zeros(3, dtype=torch.float64))


def models(n: int = 7) -> list[Net]:
    """``n`` models as a training run makes them: each a small step from the one before."""
    torch.manual_seed(0)
    net, out = Net(), []
    for i in range(n):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p.float()).to(p.dtype) * 0.01)
            net.stats += 0.5
            net.bn.num_batches_tracked += 3
        copy = Net()
        copy.load_state_dict(net.state_dict())
        out.append(copy)
    return out


POLICIES = [FullStorage(), FullStorage("zlib"), FullStorage("lzma"), FullStorage("bz2"),
            IncrementalStorage("xor", full_every=3, codec=None), IncrementalStorage("xor", full_every=3, codec="zlib"),
            IncrementalStorage("xor", full_every=1), IncrementalStorage("sub", full_every=4, codec="lzma")]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: json.dumps(p.describe()))
def test_every_policy_gives_back_the_saved_weights(tmp_path, policy):
    saved = models()
    registry = ModelRegistry(str(tmp_path), policy)
    for i, net in enumerate(saved):
        entry = registry.save(i, net, {"timestamp": i})
        base = policy.base_of(i)
        assert entry["storage"]["base"] == base and os.path.getsize(tmp_path / entry["path"]) == entry["bytes"]
    for reader in (registry, ModelRegistry(str(tmp_path))):  # this object, and a new one reading the files
        for i in [3, 6, 0, 5, 1, 2, 4]:  # any order: a difference is applied to its rebuilt base
            loaded = reader.load_into(i, Net()).state_dict()
            for name, tensor in saved[i].state_dict().items():
                exact = getattr(policy, "diff", "xor") == "xor" or not tensor.is_floating_point()
                if exact:  # bit for bit
                    assert torch.equal(loaded[name].view(torch.uint8) if tensor.dtype == torch.bfloat16 else
                                       loaded[name], tensor.view(torch.uint8) if tensor.dtype == torch.bfloat16
                                       else tensor), (i, name)
                else:  # floating-point subtraction and addition: within rounding of the last bit
                    assert torch.allclose(loaded[name].float(), tensor.float(), rtol=1e-2 if tensor.dtype ==
                                          torch.bfloat16 else 1e-6, atol=1e-6), (i, name)
                assert loaded[name].dtype == tensor.dtype


def test_differences_of_nearby_models_compress_far_better_than_the_models(tmp_path):
    full = ModelRegistry(str(tmp_path / "full"), FullStorage("zlib"))
    xor = ModelRegistry(str(tmp_path / "xor"), IncrementalStorage("xor", full_every=100, codec="zlib"))
    big = torch.nn.Linear(256, 256)
    for i in range(4):
        with torch.no_grad():
            big.weight[: 8] += 0.01  # a fit that moves a few rows
        full.save(i, big, {})
        xor.save(i, big, {})
    assert xor.get(0)["bytes"] == pytest.approx(full.get(0)["bytes"], rel=0.01)
    assert all(xor.get(i)["bytes"] < 0.2 * full.get(i)["bytes"] for i in (1, 2, 3))


def test_a_damaged_or_foreign_model_file_is_named(tmp_path):
    registry = ModelRegistry(str(tmp_path), IncrementalStorage("xor", full_every=2, codec="zlib"))
    nets = models(2)
    for i, net in enumerate(nets):
        registry.save(i, net, {})
    path = tmp_path / registry.get(1)["path"]
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # cut: the compressed payload ends early
    with pytest.raises(ValueError, match=r"trigger-0001.lmw is damaged"):
        ModelRegistry(str(tmp_path)).load_into(1, Net())
    path.write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(ValueError, match=r"trigger-0001.lmw is not a lightning-modyn model file"):
        ModelRegistry(str(tmp_path)).load_into(1, Net())


def test_the_lineage_says_which_models_trained_on_which_keys(tmp_path):
    registry = ModelRegistry(str(tmp_path))
    net = Net()
    registry.save(0, net, {}, keys=np.array([5, 1, 9]), weights=np.array([0.5, 1.0, 2.0]))
    registry.save(1, net, {}, keys=np.arange(8, 20))
    registry.save(2, net, {})  # no keys given: no lineage
    keys, weights = ModelRegistry(str(tmp_path)).trained_keys(0)
    assert keys.tolist() == [1, 5, 9] and weights.tolist() == [1.0, 0.5, 2.0]
    found = registry.models_trained_on([9, 12, 100])
    assert {k: v.tolist() for k, v in found.items()} == {0: [9], 1: [9, 12]}
    with pytest.raises(KeyError, match="no lineage of trigger 2"):
        registry.trained_keys(2)


@pytest.mark.parametrize("make, error, match", [
    (lambda: FullStorage("gzip"), ValueError, r"codec must be None or one of \('zlib', 'lzma', 'bz2'\)"),
    (lambda: IncrementalStorage("add"), ValueError, r"diff must be one of \('xor', 'sub'\)"),
    (lambda: IncrementalStorage(full_every=0), ValueError, "full_every must be an integer >= 1, got 0"),
    (lambda: ModelRegistry("/tmp/x-registry", storage="xor"), TypeError, "storage must be a ModelStorage"),
])
def test_bad_storage_policies_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()
