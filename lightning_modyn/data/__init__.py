"""Training on a store: the DataModule, its sampler, batches that carry keys and weights, decoders, and the same
batches as a ``torchdata.nodes`` pipeline."""

from lightning_modyn.data.batch import KeyedBatch, batch_keys, batch_weights
from lightning_modyn.data.datamodule import ModynDataLoader, ModynDataModule
from lightning_modyn.data.decode import ArrayMember, RecordsToTensors, SampleBatch
from lightning_modyn.data.nodes import KeyBatchNode, TrainLoader, train_loader, train_node
from lightning_modyn.data.sampler import KeyBatch, SelectionSampler

__all__ = [
    "ArrayMember",
    "KeyBatch",
    "KeyBatchNode",
    "KeyedBatch",
    "ModynDataLoader",
    "ModynDataModule",
    "RecordsToTensors",
    "SampleBatch",
    "SelectionSampler",
    "TrainLoader",
    "batch_keys",
    "batch_weights",
    "train_loader",
    "train_node",
]
