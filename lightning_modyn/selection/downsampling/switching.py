"""Switch strategies by trigger: e.g. uniform while the model is young, a score-based one later."""

from __future__ import annotations

from typing import Any

import torch

from lightning_modyn.selection.downsampling.base import DownsamplingStrategy
from lightning_modyn.selection.downsampling.context import SelectionContext
from lightning_modyn.selection.downsampling.scoring import ScoringBatch


class Switching(DownsamplingStrategy):
    """Use ``strategies[i]`` from trigger ``first_triggers[i]`` on (the last one that has started).

    Args:
        strategies: The strategies, in the order they take over.
        first_triggers: The trigger id at which each starts; increasing, the first one 0.

    >>> from lightning_modyn.selection.downsampling import Loss, Uniform
    >>> s = Switching([Uniform(), Loss()], first_triggers=[0, 3])
    >>> [type(s.active_for(t)).__name__ for t in (0, 2, 3, 9)]
    ['Uniform', 'Uniform', 'Loss', 'Loss']
    """

    def __init__(self, strategies: list[DownsamplingStrategy], first_triggers: list[int]) -> None:
        if not strategies or len(strategies) != len(first_triggers):
            raise ValueError(f"give one first trigger per strategy: {len(strategies)} strategies, "
                             f"{len(first_triggers)} first_triggers")
        if first_triggers[0] != 0 or any(b <= a for a, b in zip(first_triggers, first_triggers[1:])):
            raise ValueError(f"first_triggers must start at 0 and increase, got {list(first_triggers)}")
        for s in strategies:
            if not isinstance(s, DownsamplingStrategy):
                raise TypeError(f"strategies must be DownsamplingStrategy objects, got {type(s).__name__}")
        self.strategies = list(strategies)
        self.first_triggers = list(first_triggers)
        self._active = self.strategies[0]

    def active_for(self, trigger_id: int) -> DownsamplingStrategy:
        chosen = self.strategies[0]
        for first, strategy in zip(self.first_triggers, self.strategies):
            if trigger_id >= first:
                chosen = strategy
        return chosen

    @property
    def needs_forward(self) -> bool:  # type: ignore[override]
        return self._active.needs_forward

    @property
    def needs_embeddings(self) -> bool:  # type: ignore[override]
        return self._active.needs_embeddings

    @property
    def needs_representations(self) -> bool:  # type: ignore[override]
        return self._active.needs_representations

    @property
    def needs_keys(self) -> bool:  # type: ignore[override]
        return self._active.needs_keys

    def setup(self, context: SelectionContext) -> None:
        self._active = self.active_for(context.trigger_id)
        self._active.setup(context)

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._active.select(batch, k, generator)

    @property
    def last_scores(self) -> torch.Tensor | None:  # type: ignore[override]
        return self._active.last_scores

    def state_dict(self) -> dict[str, Any]:
        return {"strategies": [s.state_dict() for s in self.strategies]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, st in zip(self.strategies, state["strategies"]):
            s.load_state_dict(st)
