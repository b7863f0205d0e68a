"""lightning-modyn: train PyTorch Lightning models on dynamic datasets.

A key-addressable sample store over WebDataset shards, data selection, and trigger-aware retraining. The store
imports without torch or lightning; the DataModule and the rest load on first use.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from lightning_modyn.store import SampleStore, Slice, decode_sample

__version__ = "0.1.0.dev0"

# progress of runs and stores at INFO, shown as Lightning shows its own: through the root logger's handlers when
# the program has configured logging, else on stderr
_logger = logging.getLogger(__name__)
_logger.setLevel(logging.INFO)
if not logging.getLogger().hasHandlers():
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("[lightning-modyn] %(message)s"))
    _logger.addHandler(_handler)
    _logger.propagate = False

_LAZY = {"ModynDataModule": "lightning_modyn.data", "KeyedBatch": "lightning_modyn.data",
         "ContinualLoop": "lightning_modyn.pipeline"}

__all__ = ["ContinualLoop", "KeyedBatch", "ModynDataModule", "SampleStore", "Slice", "decode_sample", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_modyn' has no attribute {name!r}")
