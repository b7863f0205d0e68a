"""RS2: a fresh random subset every epoch, so that over the fit the model sees much more than one subset.

Without replacement the subsets walk through one random permutation of the training set: every sample is used
exactly once per cycle of ``ceil(N / k)`` epochs before any is used again. With replacement each epoch draws
independently. Use it with :class:`~.callbacks.SampleThenBatch` and ``period=1``.

References: Okanovic et al., "Repeated Random Sampling for Minimizing the Time-to-Accuracy of Learning",
ICLR 2024.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from lightning_modyn.selection.downsampling import rules
from lightning_modyn.selection.downsampling.base import DownsamplingStrategy
from lightning_modyn.selection.downsampling.scoring import ScoringBatch


class RS2(DownsamplingStrategy):
    """A random ``k`` of the ``N`` samples per selection (weight 1); needs no model pass.

    Args:
        replacement: Draw every subset independently (True) or cycle through permutations (False).

    >>> s, g = RS2(), torch.Generator().manual_seed(0)
    >>> seen = [s.select(ScoringBatch.unscored(5), 2, g)[0].tolist() for _ in range(3)]
    >>> sorted(sum(seen, [])[:5])  # the first cycle covers every sample once
    [0, 1, 2, 3, 4]
    """

    needs_forward = False

    def __init__(self, replacement: bool = False) -> None:
        self.replacement = replacement
        self._order: np.ndarray | None = None
        self._cursor = 0
        self._fingerprint = ""

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(batch)
        device = batch.losses.device
        if self.replacement:
            return rules.uniform_sample(n, k, generator, device)
        k = min(k, n)
        fingerprint = _fingerprint(batch.keys, n)
        if self._order is None or fingerprint != self._fingerprint:  # a new training set starts a new cycle
            self._order, self._cursor, self._fingerprint = self._permutation(n, generator), 0, fingerprint
        take = self._order[self._cursor : self._cursor + k]
        self._cursor += len(take)
        if len(take) < k:  # the cycle ends: the rest comes from the next one, without repeating what we hold
            nxt = self._permutation(n, generator)
            extra = nxt[~np.isin(nxt, take)][: k - len(take)]
            self._order = np.concatenate([extra, nxt[~np.isin(nxt, extra)]])  # extra is used up in the new cycle
            self._cursor = len(extra)
            take = np.concatenate([take, extra])
        return torch.as_tensor(take, dtype=torch.long, device=device), torch.ones(k, device=device)

    @staticmethod
    def _permutation(n: int, generator: torch.Generator) -> np.ndarray:
        return torch.randperm(n, generator=generator).numpy()

    def state_dict(self) -> dict[str, Any]:
        return {"order": None if self._order is None else self._order.tolist(), "cursor": self._cursor,
                "fingerprint": self._fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._order = None if state["order"] is None else np.asarray(state["order"], np.int64)
        self._cursor, self._fingerprint = int(state["cursor"]), state["fingerprint"]


def _fingerprint(keys: torch.Tensor | None, n: int) -> str:
    if keys is None:
        return f"n={n}"
    return hashlib.sha1(keys.cpu().numpy().astype(np.int64).tobytes()).hexdigest()
