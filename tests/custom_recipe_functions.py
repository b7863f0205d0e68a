"""Functions a user's recipe names by import path (``custom_recipe_functions.any_fired``), for tests/test_recipes.py.
Each call is counted, so that the test can see the recipe really used them."""

from __future__ import annotations

import numpy as np

CALLS = {"any_fired": 0, "mean_gap": 0, "at_least_fraction": 0}


def any_fired(decisions: list[bool]) -> bool:
    """An aggregation: fire when any member fires."""
    CALLS["any_fired"] += 1
    return any(decisions)


def mean_gap(reference: np.ndarray, current: np.ndarray) -> float:
    """A drift metric: the distance between the two windows' mean embeddings."""
    CALLS["mean_gap"] += 1
    return float(np.linalg.norm(np.asarray(reference, np.float64).mean(axis=0)
                                - np.asarray(current, np.float64).mean(axis=0)))


class AtLeastFraction:
    """An aggregation with a parameter (a callable class, named by class_path): fire when at least ``fraction`` of
    the members fire."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def __call__(self, decisions: list[bool]) -> bool:
        CALLS["at_least_fraction"] += 1
        return sum(decisions) >= self.fraction * len(decisions)


CALLS["focal_loss"] = 0


def focal_loss(logits, targets):
    """A scoring loss of the user's own (focal loss, gamma 2): one loss per sample."""
    import torch.nn.functional as F

    CALLS["focal_loss"] += 1
    log_p = F.log_softmax(logits, dim=1).gather(1, targets.long().reshape(-1, 1)).squeeze(1)
    return -((1 - log_p.exp()) ** 2) * log_p


def mean_loss(logits, targets):
    """A loss that wrongly reduces the batch to one number."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, targets.long())
