"""Coreset strategies: subsets that *represent* the scored samples (by embeddings or last-layer gradients).

Each wraps one algorithm (:mod:`.kcenter`, :mod:`.craig`, :mod:`.gradmatch`, :mod:`.submodular`). Those build
similarity matrices, so a large set (sample-then-batch over a whole training set) is partitioned first: per class
when labels exist (``per_class=True``, as CRAIG and GradMatch do), then into blocks of at most ``block_size``
samples; every part gets a share of ``k`` proportional to its size and weights are rescaled so that the weighted
mean over the whole subset still estimates the mean over all samples.
"""

from __future__ import annotations

from typing import Callable

import torch

from lightning_modyn.selection.downsampling.base import DownsamplingStrategy
from lightning_modyn.selection.downsampling.craig import craig
from lightning_modyn.selection.downsampling.gradmatch import gradmatch
from lightning_modyn.selection.downsampling.kcenter import kcenter_greedy
from lightning_modyn.selection.downsampling.scoring import ScoringBatch
from lightning_modyn.selection.downsampling.submodular import (
    FacilityLocation,
    GraphCut,
    LogDeterminant,
    greedy_maximize,
    similarity_from_features,
)

FEATURES = ("gradients", "embeddings")
FUNCTIONS = {"facility_location": FacilityLocation, "graph_cut": GraphCut, "log_determinant": LogDeterminant}

Pick = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


class CoresetStrategy(DownsamplingStrategy):
    """Shared partitioning for coreset strategies.

    Args:
        features: ``"gradients"`` (last-layer gradients, closed form) or ``"embeddings"`` (last-layer inputs).
        per_class: Partition by label first.
        block_size: Largest part handed to the algorithm at once (bounds its ``O(part^2)`` memory).
    """

    needs_embeddings = True

    def __init__(self, features: str = "gradients", per_class: bool = True, block_size: int = 2048) -> None:
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {block_size}")
        self.features = features
        self.per_class = per_class
        self.block_size = block_size

    def _features(self, batch: ScoringBatch) -> torch.Tensor:
        if self.features == "gradients":
            return batch.last_layer_gradients()
        return batch._require_embeddings(type(self).__name__)

    def _parts(self, batch: ScoringBatch, generator: torch.Generator) -> list[torch.Tensor]:
        n = len(batch)
        if self.per_class and batch.targets is not None and batch.targets.ndim == 1:
            groups = [torch.nonzero(batch.targets == c).flatten() for c in torch.unique(batch.targets)]
        else:
            groups = [torch.arange(n, device=batch.losses.device)]
        parts = []
        for g in groups:
            if len(g) <= self.block_size:
                parts.append(g)
            else:  # random blocks, so that no block is biased by the order samples arrived in
                g = g[torch.randperm(len(g), generator=generator).to(g.device)]
                parts.extend(torch.tensor_split(g, -(-len(g) // self.block_size)))
        return parts

    def partitioned(self, batch: ScoringBatch, k: int, generator: torch.Generator, pick: Pick
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(batch)
        parts = self._parts(batch, generator)
        quotas = _proportional_quotas(torch.tensor([len(p) for p in parts]), min(k, n))
        total = int(quotas.sum())
        chosen, weights = [], []
        for part, quota in zip(parts, quotas.tolist()):
            if quota == 0:
                continue
            idx, w = pick(part, quota)
            chosen.append(part[idx.to(part.device)])
            # the part is len(part)/n of the data and quota/total of the subset
            weights.append(w.float() * (len(part) / n) / (quota / total))
        return torch.cat(chosen), torch.cat(weights)


class KCenter(CoresetStrategy):
    """k-center greedy on embeddings: a subset covering the embedding space (weight 1).

    References: Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
    ICLR 2018.
    """

    def __init__(self, features: str = "embeddings", per_class: bool = False, block_size: int = 100_000) -> None:
        super().__init__(features, per_class, block_size)

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._features(batch)

        def pick(part: torch.Tensor, quota: int) -> tuple[torch.Tensor, torch.Tensor]:
            idx = kcenter_greedy(x[part], quota, generator)
            return idx, torch.ones(len(idx), device=x.device)

        idx, _ = self.partitioned(batch, k, generator, pick)
        return idx, torch.ones(len(idx), device=idx.device)


class Craig(CoresetStrategy):
    """CRAIG: medoids of the last-layer gradients, weighted by the size of the cluster each stands for.

    Args:
        optimizer: Greedy maximizer: ``"naive"`` (default: every step one vectorized pass over all gains, the
            fastest for the parts of a few hundred samples that batches give), ``"lazy"`` (same result, fewer
            evaluations, one at a time), ``"stochastic"``.
        features, per_class, block_size: See :class:`CoresetStrategy`.
    """

    def __init__(self, optimizer: str = "naive", features: str = "gradients", per_class: bool = True,
                 block_size: int = 2048) -> None:
        super().__init__(features, per_class, block_size)
        self.optimizer = optimizer
        greedy_maximize(FacilityLocation(torch.ones(1, 1)), 1, optimizer)  # an unknown optimizer fails here

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._features(batch)
        return self.partitioned(batch, k, generator,
                                lambda part, quota: craig(x[part], quota, self.optimizer, generator=generator))


class GradMatch(CoresetStrategy):
    """GradMatch: orthogonal matching pursuit for a weighted subset whose gradient matches the mean gradient.

    Args:
        lam: Ridge regularization of the weight fit.
        features, per_class, block_size: See :class:`CoresetStrategy`.
    """

    def __init__(self, lam: float = 0.5, features: str = "gradients", per_class: bool = True,
                 block_size: int = 2048) -> None:
        super().__init__(features, per_class, block_size)
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.lam = lam

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._features(batch)
        def pick(part: torch.Tensor, quota: int) -> tuple[torch.Tensor, torch.Tensor]:
            return gradmatch(x[part], quota, lam=self.lam, generator=generator)

        return self.partitioned(batch, k, generator, pick)


class Submodular(CoresetStrategy):
    """Greedy maximization of a submodular function of the samples' similarity (weight 1).

    Args:
        function: ``"facility_location"``, ``"graph_cut"`` or ``"log_determinant"``.
        optimizer: ``"naive"`` (default, vectorized), ``"lazy"`` or ``"stochastic"``.
        metric: Similarity of features: ``"cosine"`` or ``"euclidean"``.
        features, per_class, block_size: See :class:`CoresetStrategy`.

    References: Iyer et al., "Submodular Combinatorial Information Measures with Applications in Machine
    Learning", ALT 2021; Mirzasoleiman et al., "Lazier Than Lazy Greedy", AAAI 2015.
    """

    def __init__(self, function: str = "facility_location", optimizer: str = "naive", metric: str = "cosine",
                 features: str = "gradients", per_class: bool = True, block_size: int = 2048) -> None:
        super().__init__(features, per_class, block_size)
        if function not in FUNCTIONS:
            raise ValueError(f"function must be one of {tuple(FUNCTIONS)}, got {function!r}")
        similarity_from_features(torch.zeros(1, 1), metric)  # an unknown metric fails here
        if function == "log_determinant" and metric != "cosine":
            raise ValueError("log_determinant needs a positive semi-definite similarity: use metric='cosine' "
                             f"(got {metric!r})")
        greedy_maximize(FacilityLocation(torch.ones(1, 1)), 1, optimizer)  # and an unknown optimizer here
        self.function = function
        self.optimizer = optimizer
        self.metric = metric

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._features(batch)

        def pick(part: torch.Tensor, quota: int) -> tuple[torch.Tensor, torch.Tensor]:
            objective = FUNCTIONS[self.function](similarity_from_features(x[part], self.metric))
            idx, _ = greedy_maximize(objective, quota, self.optimizer, generator=generator)
            return idx, torch.ones(len(idx), device=x.device)

        idx, _ = self.partitioned(batch, k, generator, pick)
        return idx, torch.ones(len(idx), device=idx.device)


def _proportional_quotas(sizes: torch.Tensor, k: int) -> torch.Tensor:
    """Split ``k`` over parts in proportion to their sizes (largest remainders), never above a part's size.

    >>> _proportional_quotas(torch.tensor([5, 3, 2]), 5).tolist()
    [3, 1, 1]
    """
    sizes = sizes.long()
    exact = sizes.double() * k / sizes.sum()
    quotas = torch.minimum(exact.floor().long(), sizes)
    remainder = exact - quotas.double()
    for i in torch.argsort(-remainder, stable=True).tolist():
        if int(quotas.sum()) >= k:
            break
        if quotas[i] < sizes[i]:
            quotas[i] += 1
    return quotas
