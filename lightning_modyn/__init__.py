"""lightning-modyn: train PyTorch Lightning models on dynamic datasets.

A key-addressable sample store over WebDataset shards, data selection, and trigger-aware retraining.
"""

from lightning_modyn.data import KeyedBatch, ModynDataModule
from lightning_modyn.store import SampleStore, Slice, decode_sample

__version__ = "0.1.0.dev0"

__all__ = ["KeyedBatch", "ModynDataModule", "SampleStore", "Slice", "decode_sample", "__version__"]
