"""Retrain after every ``num_samples`` samples."""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_modyn._checks import check_int
from lightning_modyn.triggers.base import Trigger


class DataAmountTrigger(Trigger):
    """Fire at every ``num_samples``-th sample of the stream (at that sample's position), however it is chunked.

    Parameters
    ----------
    num_samples
        Samples per trigger (a positive integer).

    Examples
    --------
    >>> t = DataAmountTrigger(num_samples=3)
    >>> t.inform(np.arange(7), np.arange(7), np.zeros(7)).tolist()
    [2, 5]
    >>> t.inform(np.arange(4), np.arange(4), np.zeros(4)).tolist()    # the 9th sample is position 1 here
    [1]

    References
    ----------
    Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (DataAmountTrigger).
    """

    def __init__(self, num_samples: int) -> None:
        self.num_samples = check_int("num_samples", num_samples, 1)
        self._filled = 0  # samples since the last fire

    def inform(self, keys: np.ndarray, timestamps: np.ndarray, labels: np.ndarray) -> np.ndarray:
        n = len(keys)
        out = np.arange(self.num_samples - self._filled - 1, n, self.num_samples, dtype=np.int64)
        self._filled = (self._filled + n) % self.num_samples
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"filled": self._filled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._filled = int(state["filled"])
