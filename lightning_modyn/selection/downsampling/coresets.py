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

from lightning_modyn._checks import check_choice, check_int
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
FUNCTIONS = ("facility_location", "graph_cut", "log_determinant")

Pick = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


class CoresetStrategy(DownsamplingStrategy):
    """Shared partitioning for coreset strategies.

    Args:
        features: ``"gradients"`` (last-layer gradients, closed form) or ``"embeddings"`` (the callback's
            ``embedding_layer`` output, else the model's ``embed()``, else the last layer's inputs).
        per_class: Partition by label first.
        block_size: Largest part handed to the algorithm at once (bounds its ``O(part^2)`` memory).
    """

    @property
    def needs_embeddings(self) -> bool:  # type: ignore[override]
        return self.features == "gradients"

    @property
    def needs_representations(self) -> bool:  # type: ignore[override]
        return self.features == "embeddings"

    def __init__(self, features: str = "gradients", per_class: bool = True, block_size: int = 2048) -> None:
        check_choice("features", features, FEATURES)
        check_int("block_size", block_size, 2, hint="(samples per coreset block)")
        self.features = features
        self.per_class = per_class
        self.block_size = block_size

    def _features(self, batch: ScoringBatch) -> torch.Tensor:
        if self.features == "gradients":
            return batch.last_layer_gradients()
        return batch.sample_embeddings(type(self).__name__)

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

    Args:
        first: The first centre of each part: ``"random"`` (drawn with the selection's seeded generator, as in
            the paper) or ``"mean"`` (the sample closest to the part's mean: no randomness at all).
        features, per_class, block_size: See :class:`CoresetStrategy`.

    References: Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
    ICLR 2018.
    """

    FIRST = ("random", "mean")

    def __init__(self, first: str = "random", features: str = "embeddings", per_class: bool = False,
                 block_size: int = 100_000) -> None:
        super().__init__(features, per_class, block_size)
        self.first = check_choice("first", first, self.FIRST)

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._features(batch)

        def pick(part: torch.Tensor, quota: int) -> tuple[torch.Tensor, torch.Tensor]:
            points = x[part]
            initial = None
            if self.first == "mean":
                initial = [int(torch.argmin((points.float() - points.float().mean(dim=0)).norm(dim=1)))]
            idx = kcenter_greedy(points, quota, generator, initial=initial)
            return idx, torch.ones(len(idx), device=x.device)

        idx, _ = self.partitioned(batch, k, generator, pick)
        return idx, torch.ones(len(idx), device=idx.device)


class Craig(CoresetStrategy):
    """CRAIG: medoids of the last-layer gradients, weighted by the size of the cluster each stands for.

    Args:
        optimizer: Greedy maximizer: ``"naive"`` (default: every step one vectorized pass over all gains, the
            fastest for the parts of a few hundred samples that batches give), ``"lazy"`` (same result, fewer
            evaluations, one at a time), ``"approximate_lazy"`` (each pick within ``beta`` of the best),
            ``"stochastic"`` (``epsilon``).
        epsilon: Stochastic greedy's accuracy, in (0, 1).
        beta: Approximate lazy greedy's acceptance ratio, in (0, 1].
        features, per_class, block_size: See :class:`CoresetStrategy`.
    """

    def __init__(self, optimizer: str = "naive", epsilon: float = 0.01, beta: float = 0.9,
                 features: str = "gradients", per_class: bool = True, block_size: int = 2048) -> None:
        super().__init__(features, per_class, block_size)
        # an unknown optimizer, epsilon or beta fails here, when the strategy is made
        greedy_maximize(FacilityLocation(torch.ones(1, 1)), 1, optimizer, epsilon=epsilon, beta=beta)
        self.optimizer = optimizer
        self.epsilon = epsilon
        self.beta = beta

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._features(batch)
        return self.partitioned(batch, k, generator, lambda part, quota: craig(
            x[part], quota, self.optimizer, epsilon=self.epsilon, generator=generator, beta=self.beta))


class GradMatch(CoresetStrategy):
    """GradMatch: a weighted subset whose gradient matches the mean gradient (greedy, ridge-refit weights).

    Args:
        lam: Ridge weight of the weight fit, >= 0 (in the paper's scale; see :func:`.gradmatch.gradmatch`).
        nonnegative: Keep the weights >= 0.
        tol: Relative residual at which matching stops (the rest of the budget is a uniform sample).
        features, per_class, block_size: See :class:`CoresetStrategy`.
    """

    def __init__(self, lam: float = 0.5, nonnegative: bool = True, tol: float = 1e-4, features: str = "gradients",
                 per_class: bool = True, block_size: int = 2048) -> None:
        super().__init__(features, per_class, block_size)
        gradmatch(torch.ones(2, 1), 1, lam=lam, nonnegative=nonnegative, tol=tol)  # bad values fail here
        self.lam = lam
        self.nonnegative = nonnegative
        self.tol = tol

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._features(batch)

        def pick(part: torch.Tensor, quota: int) -> tuple[torch.Tensor, torch.Tensor]:
            return gradmatch(x[part], quota, lam=self.lam, nonnegative=self.nonnegative, tol=self.tol,
                             generator=generator)

        return self.partitioned(batch, k, generator, pick)


class Submodular(CoresetStrategy):
    """Greedy maximization of a submodular function of the samples' similarity (weight 1).

    Args:
        function: ``"facility_location"``, ``"graph_cut"`` or ``"log_determinant"``.
        optimizer: ``"naive"`` (default, vectorized), ``"lazy"``, ``"approximate_lazy"`` or ``"stochastic"``.
        metric: Similarity of features: ``"cosine"`` or ``"euclidean"``.
        lam: Graph cut's diversity weight, >= 0 (``graph_cut`` only).
        ridge: The log-determinant's ridge, > 0 (``log_determinant`` only).
        epsilon: Stochastic greedy's accuracy, in (0, 1).
        beta: Approximate lazy greedy's acceptance ratio, in (0, 1].
        features, per_class, block_size: See :class:`CoresetStrategy`.

    References: Iyer et al., "Submodular Combinatorial Information Measures with Applications in Machine
    Learning", ALT 2021; Mirzasoleiman et al., "Lazier Than Lazy Greedy", AAAI 2015.
    """

    def __init__(self, function: str = "facility_location", optimizer: str = "naive", metric: str = "cosine",
                 lam: float = 1.0, ridge: float = 1.0, epsilon: float = 0.01, beta: float = 0.9,
                 features: str = "gradients", per_class: bool = True, block_size: int = 2048) -> None:
        super().__init__(features, per_class, block_size)
        check_choice("function", function, FUNCTIONS)
        similarity_from_features(torch.zeros(1, 1), metric)  # an unknown metric fails here
        if function == "log_determinant" and metric != "cosine":
            raise ValueError("log_determinant needs a positive semi-definite similarity: use metric='cosine' "
                             f"(got {metric!r})")
        self.function = function
        self.optimizer = optimizer
        self.metric = metric
        self.lam = lam
        self.ridge = ridge
        self.epsilon = epsilon
        self.beta = beta
        GraphCut(torch.ones(1, 1), lam=lam)  # a bad lam or ridge fails here,
        LogDeterminant(torch.ones(1, 1), ridge=ridge)
        greedy_maximize(FacilityLocation(torch.ones(1, 1)), 1, optimizer, epsilon=epsilon, beta=beta)  # and these

    def _objective(self, similarity: torch.Tensor):
        if self.function == "graph_cut":
            return GraphCut(similarity, lam=self.lam)
        if self.function == "log_determinant":
            return LogDeterminant(similarity, ridge=self.ridge)
        return FacilityLocation(similarity)

    def select(self, batch: ScoringBatch, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._features(batch)

        def pick(part: torch.Tensor, quota: int) -> tuple[torch.Tensor, torch.Tensor]:
            objective = self._objective(similarity_from_features(x[part], self.metric))
            idx, _ = greedy_maximize(objective, quota, self.optimizer, epsilon=self.epsilon, generator=generator,
                                     beta=self.beta)
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
