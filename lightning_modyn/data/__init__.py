"""Training on a store: the DataModule, its sampler, batches that carry keys and weights, and decoders."""

from lightning_modyn.data.batch import KeyedBatch, batch_keys, batch_weights
from lightning_modyn.data.datamodule import ModynDataLoader, ModynDataModule
from lightning_modyn.data.decode import ArrayMember, RecordsToTensors, SampleBatch
from lightning_modyn.data.sampler import KeyBatch, SelectionSampler

__all__ = [
    "ArrayMember",
    "KeyBatch",
    "KeyedBatch",
    "ModynDataLoader",
    "ModynDataModule",
    "RecordsToTensors",
    "SampleBatch",
    "SelectionSampler",
    "batch_keys",
    "batch_weights",
]
