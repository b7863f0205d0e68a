"""Forgetting events: keep the samples the model keeps forgetting (or has never learned).

A forgetting event is a sample that was classified correctly at one scoring pass and wrongly at the next. Samples
that were never classified correctly count as the most forgettable. The history is per store key and lasts across
epochs and fits (it is part of the strategy's ``state_dict``).

References: Toneva et al., "An Empirical Study of Example Forgetting during Deep Neural Network Learning",
ICLR 2019.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightning_modyn.selection.downsampling.base import ScoreBasedStrategy
from lightning_modyn.selection.downsampling.scoring import ScoringBatch


class ForgettingEvents(ScoreBasedStrategy):
    """Score = forgetting events so far, with never-learned samples above every learned one; top-k by default.

    Needs store keys (batches from a ``ModynDataModule``).

    >>> s = ForgettingEvents()
    >>> keys = torch.tensor([10, 11, 12])
    >>> right = ScoringBatch.from_outputs(torch.tensor([[1.0, 0], [1, 0], [0, 1]]), torch.tensor([0, 0, 0]), keys=keys)
    >>> wrong = ScoringBatch.from_outputs(torch.tensor([[0.0, 1], [1, 0], [0, 1]]), torch.tensor([0, 0, 0]), keys=keys)
    >>> _ = s.score(right); s.score(wrong).tolist()  # key 10 forgot once; key 12 never learned
    [1.0, 0.0, 2.0]
    """

    needs_keys = True

    def __init__(self, rule: str = "top_k", balance: bool = False) -> None:
        super().__init__(rule, balance)
        self._history: dict[int, list[int]] = {}  # key -> [last correct (0/1), forgetting events, ever correct]

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        if batch.keys is None:
            raise ValueError("ForgettingEvents needs store keys: train with a ModynDataModule")
        if batch.targets is None:
            raise ValueError("ForgettingEvents needs labels; the batches have no targets")
        pred = batch.probabilities().argmax(1)
        correct = (pred == batch.targets.reshape(-1).long()).cpu().numpy()
        events = np.zeros(len(batch), np.float64)
        learned = np.zeros(len(batch), bool)
        for i, (key, ok) in enumerate(zip(batch.keys.cpu().tolist(), correct.tolist())):
            last, forgets, ever = self._history.get(key, [0, 0, 0])
            forgets += int(last == 1 and not ok)
            ever = int(ever or ok)
            self._history[key] = [int(ok), forgets, ever]
            events[i], learned[i] = forgets, ever
        top = events.max(initial=0.0) + 1
        return torch.as_tensor(np.where(learned, events, top), dtype=torch.float32, device=batch.losses.device)

    def state_dict(self) -> dict[str, Any]:
        keys = np.fromiter(self._history, np.int64, len(self._history))
        return {"keys": keys.tolist(), "history": [self._history[k] for k in keys.tolist()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._history = {int(k): list(v) for k, v in zip(state["keys"], state["history"])}
