"""Submodular subset selection on a similarity matrix: three objectives and greedy maximizers.

A coreset strategy picks the ``k`` samples that maximise a set function ``f(S)`` measuring how well ``S``
represents (facility location, graph cut) or spans (log-determinant) the whole set. These functions are monotone
or at least submodular (diminishing returns), so the greedy algorithm - add the sample with the largest marginal
gain, ``k`` times - is within ``1 - 1/e`` of the optimum for monotone ``f`` (Nemhauser, Wolsey & Fisher 1978).

Each objective is a small class over an ``(N, N)`` similarity matrix that keeps an incremental *state* of the
current selection, so a marginal gain costs ``O(N)`` (facility location) or ``O(1)`` (graph cut, log-det)
instead of re-evaluating ``f`` from scratch:

* ``state = objective.init_state()`` - the state of the empty selection;
* ``objective.gain(state, candidates)`` - the marginal gains ``f(S + c) - f(S)`` of a 1-D tensor of candidates;
* ``state = objective.update(state, j)`` - the state after adding sample ``j`` (updated in place and returned);
* ``objective(indices)`` - ``f(S)`` evaluated from scratch (for checks and reporting).

:func:`greedy_maximize` runs the greedy algorithm on any such objective: ``"naive"`` re-evaluates every gain at
every step, ``"lazy"`` (Minoux 1978) keeps stale gains as upper bounds in a priority queue and returns the same
selection as naive, ``"stochastic"`` (Mirzasoleiman et al. 2015) looks at a random sample of
``ceil(N / k * log(1 / epsilon))`` candidates per step.

The similarity matrix is dense: callers partition large inputs (per class, per trigger) before calling, since
memory is ``O(N^2)`` for the matrix plus ``O(N * k)`` (log-det) or ``O(N * 1024)`` (facility location
gains) of working space.

References: Nemhauser, Wolsey & Fisher, "An analysis of approximations for maximizing submodular set functions",
Math. Programming 1978; Minoux, "Accelerated greedy algorithms for maximizing submodular set functions", 1978;
Mirzasoleiman, Badanidiyuru, Karbasi, Vondrak & Krause, "Lazier Than Lazy Greedy", AAAI 2015; Iyer, Khargonkar,
Bilmes & Asnani, "Submodular combinatorial information measures", ALT 2021 (the objectives).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import torch

from lightning_modyn._checks import check_choice, check_features, check_int, check_number

OPTIMIZERS = ("naive", "lazy", "approximate_lazy", "stochastic")
METRICS = ("euclidean", "cosine")
_GAIN_CHUNK = 1024  # candidates per facility-location gain evaluation: bounds the temporary to N * 1024 floats


# ---------------------------------------------------------------------------------------------- argument checks
def _check_similarity(similarity: Any, nonnegative: bool) -> torch.Tensor:
    s = torch.as_tensor(similarity)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity must be a square 2-D tensor (N x N), got shape {tuple(s.shape)}")
    s = s.to(torch.float32)
    if not torch.isfinite(s).all():
        raise ValueError("similarity must be finite, got NaN or infinite entries")
    if nonnegative and s.numel() and s.min() < 0:
        raise ValueError(f"similarity must be >= 0 (use similarity_from_features), got min {s.min().item():.4g}")
    return s


def _check_indices(indices: Any, n: int, device: torch.device) -> torch.Tensor:
    idx = torch.as_tensor(indices, dtype=torch.long, device=device).reshape(-1)
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"indices must lie in [0, {n}), got {idx.tolist()}")
    return idx


# ---------------------------------------------------------------------------------------------- similarity
def similarity_from_features(x: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """A dense nonnegative ``(N, N)`` similarity between the rows of ``x`` (float32, on ``x``'s device).

    Parameters
    ----------
    x
        ``(N, D)`` features (embeddings, per-sample gradients).
    metric
        ``"euclidean"``: ``max_dist - dist``, as CRAIG does (the closest pair is the most similar, the farthest
        pair has similarity 0, every diagonal entry is ``max_dist``); ``"cosine"``: ``(1 + cos) / 2`` in
        ``[0, 1]`` (a zero row has similarity 1/2 to everything but itself).

    Returns
    -------
    torch.Tensor
        ``(N, N)`` float32, symmetric, >= 0. Memory is ``O(N^2)``: partition large inputs first.

    Examples
    --------
    >>> similarity_from_features(torch.tensor([[0.0], [1.0], [3.0]]))
    tensor([[3., 2., 0.],
            [2., 3., 1.],
            [0., 1., 3.]])
    >>> similarity_from_features(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), "cosine")
    tensor([[1.0000, 0.5000, 0.0000],
            [0.5000, 1.0000, 0.5000],
            [0.0000, 0.5000, 1.0000]])
    """
    check_choice("metric", metric, METRICS)
    x = check_features(x, "x")
    if metric == "cosine":
        u = torch.nn.functional.normalize(x, dim=1)
        s = ((1.0 + u @ u.T) / 2.0).clamp_(0.0, 1.0)
        norms = x.norm(dim=1)
        s.diagonal().copy_(torch.where(norms > 0, 1.0, 0.5))
        return s
    # Distances are translation invariant: centring first limits the cancellation of the |a|^2 + |b|^2 - 2ab form
    x = x - x.mean(dim=0, keepdim=True)
    dist = torch.cdist(x, x).clamp_(min=0.0)
    dist.fill_diagonal_(0.0)
    return dist.max() - dist if dist.numel() else dist


# ---------------------------------------------------------------------------------------------- objectives
class SubmodularObjective:
    """Interface of a set function ``f`` over ``n`` samples with incremental marginal gains (see module doc)."""

    n: int
    device: torch.device

    def init_state(self) -> Any:
        raise NotImplementedError

    def gain(self, state: Any, candidates: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, state: Any, index: int) -> Any:
        raise NotImplementedError

    def __call__(self, indices: Any) -> float:
        raise NotImplementedError


class FacilityLocation(SubmodularObjective):
    """``f(S) = sum_i max_{j in S} s_ij``: every sample is represented by its most similar selected sample.

    Monotone submodular for a nonnegative similarity (``f(empty) = 0``). The state is the vector of each sample's
    best similarity to the selection; a gain costs ``O(N)``.

    Parameters
    ----------
    similarity
        ``(N, N)`` nonnegative similarity; ``s_ij`` is how well ``j`` represents ``i``.

    Examples
    --------
    >>> s = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    >>> f = FacilityLocation(s)
    >>> state = f.init_state()
    >>> f.gain(state, torch.arange(3))
    tensor([3., 3., 2.])
    >>> state = f.update(state, 0)
    >>> f.gain(state, torch.arange(3)), f([0, 2])
    (tensor([0., 1., 2.]), 5.0)
    """

    def __init__(self, similarity: torch.Tensor) -> None:
        self.similarity = _check_similarity(similarity, nonnegative=True)
        self.n = self.similarity.shape[0]
        self.device = self.similarity.device

    def init_state(self) -> torch.Tensor:
        return torch.zeros(self.n, device=self.device)

    def gain(self, state: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        candidates = torch.as_tensor(candidates, dtype=torch.long, device=self.device).reshape(-1)
        # rows of S^T are the candidates' columns: each gain is then one contiguous row sum, computed the same way
        # whatever the batch, so lazy and naive greedy see bit-identical gains
        columns = self.similarity.T
        out = [(columns[chunk] - state).clamp_(min=0.0).sum(dim=1) for chunk in candidates.split(_GAIN_CHUNK)]
        return torch.cat(out) if out else torch.zeros(0, device=self.device)

    def update(self, state: torch.Tensor, index: int) -> torch.Tensor:
        return torch.maximum(state, self.similarity[:, int(index)], out=state)

    def __call__(self, indices: Any) -> float:
        idx = _check_indices(indices, self.n, self.device)
        if idx.numel() == 0:
            return 0.0
        return float(self.similarity[:, idx].max(dim=1).values.sum())


class GraphCut(SubmodularObjective):
    """``f(S) = sum_{i in V} sum_{j in S} s_ij - lam * sum_{i, j in S} s_ij``: coverage minus redundancy.

    Submodular for a nonnegative similarity and ``lam >= 0``; monotone for a symmetric similarity when
    ``lam <= 1/2``. Larger ``lam`` favours diverse selections over representative ones. The state is, for every
    sample, its similarity to the selection in both directions; a gain costs ``O(1)``.

    Parameters
    ----------
    similarity
        ``(N, N)`` nonnegative similarity.
    lam
        The weight of the redundancy term, ``>= 0``.

    Examples
    --------
    >>> s = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    >>> f = GraphCut(s, lam=0.5)
    >>> state = f.init_state()
    >>> f.gain(state, torch.arange(3))
    tensor([2., 2., 1.])
    >>> state = f.update(state, 0)
    >>> f.gain(state, torch.arange(3)), f([0, 2])
    (tensor([0., 1., 1.]), 3.0)
    """

    def __init__(self, similarity: torch.Tensor, lam: float = 1.0) -> None:
        lam = check_number("lam", lam, 0)
        self.similarity = _check_similarity(similarity, nonnegative=True)
        self.lam = float(lam)
        self.n = self.similarity.shape[0]
        self.device = self.similarity.device
        self._coverage = self.similarity.sum(dim=0)  # sum_{i in V} s_ic for every candidate c
        self._self = self.similarity.diagonal().clone()

    def init_state(self) -> torch.Tensor:
        return torch.zeros(self.n, device=self.device)  # sum_{j in S} (s_jc + s_cj)

    def gain(self, state: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(candidates, dtype=torch.long, device=self.device).reshape(-1)
        return self._coverage[c] - self.lam * (state[c] + self._self[c])

    def update(self, state: torch.Tensor, index: int) -> torch.Tensor:
        j = int(index)
        return state.add_(self.similarity[j]).add_(self.similarity[:, j])

    def __call__(self, indices: Any) -> float:
        idx = _check_indices(indices, self.n, self.device)
        return float(self.similarity[:, idx].sum() - self.lam * self.similarity[idx][:, idx].sum())


@dataclass
class CholeskyState:
    """State of :class:`LogDeterminant`: the Cholesky rows of the selection, extended to every sample.

    ``factor[t, c]`` is entry ``t`` of the last Cholesky row of ``ridge * I + S`` restricted to the first ``t``
    selected samples plus ``c``; ``residual[c]`` is the squared last diagonal entry (the Schur complement), so
    the gain of ``c`` is ``log(residual[c])``.
    """

    factor: torch.Tensor  # (t, N)
    residual: torch.Tensor  # (N,)


class LogDeterminant(SubmodularObjective):
    """``f(S) = log det(ridge * I + S_SS)``: the volume spanned by the selection (a DPP's log-probability).

    Submodular for a symmetric positive semi-definite similarity (a kernel matrix, e.g. cosine or RBF
    similarity of features); monotone when ``ridge >= 1``. Gains come from an incremental Cholesky
    factorisation (as in Chen, Zhang & Zhou, "Fast greedy MAP inference for DPPs", NeurIPS 2018): ``O(N * k)``
    memory, ``O(N * t)`` per update, ``O(1)`` per gain. Positive semi-definiteness is not checked (that costs
    ``O(N^3)``); an indefinite matrix gives meaningless gains.

    Parameters
    ----------
    similarity
        ``(N, N)`` symmetric positive semi-definite similarity.
    ridge
        The ``> 0`` added to the diagonal, which keeps the determinant positive.

    Examples
    --------
    >>> s = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    >>> f = LogDeterminant(s, ridge=1.0)
    >>> state = f.update(f.init_state(), 0)
    >>> [round(g, 4) for g in f.gain(state, torch.tensor([1, 2])).tolist()]  # the duplicate gains less
    [0.4055, 0.6931]
    >>> round(f([0, 2]), 4) == round(2 * math.log(2.0), 4)
    True
    """

    def __init__(self, similarity: torch.Tensor, ridge: float = 1.0) -> None:
        ridge = check_number("ridge", ridge, 0, low_open=True)
        self.similarity = _check_similarity(similarity, nonnegative=False)
        if not torch.allclose(self.similarity, self.similarity.T, rtol=1e-5, atol=1e-6):
            raise ValueError("similarity must be symmetric for LogDeterminant")
        self.ridge = float(ridge)
        self.n = self.similarity.shape[0]
        self.device = self.similarity.device

    def init_state(self) -> CholeskyState:
        return CholeskyState(torch.zeros(0, self.n, device=self.device),
                             self.similarity.diagonal() + self.ridge)

    def gain(self, state: CholeskyState, candidates: torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(candidates, dtype=torch.long, device=self.device).reshape(-1)
        return state.residual[c].clamp(min=torch.finfo(torch.float32).tiny).log()

    def update(self, state: CholeskyState, index: int) -> CholeskyState:
        j = int(index)
        pivot = state.residual[j].clamp(min=torch.finfo(torch.float32).tiny).sqrt()
        row = self.similarity[j] - state.factor[:, j] @ state.factor
        row[j] += self.ridge
        row /= pivot
        state.factor = torch.cat([state.factor, row[None]])
        state.residual = state.residual - row.square()
        return state

    def __call__(self, indices: Any) -> float:
        idx = _check_indices(indices, self.n, self.device)
        sub = self.similarity[idx][:, idx] + self.ridge * torch.eye(len(idx), device=self.device)
        return float(torch.linalg.slogdet(sub.double()).logabsdet) if len(idx) else 0.0


# ---------------------------------------------------------------------------------------------- maximizers
def greedy_maximize(objective: SubmodularObjective, k: int, optimizer: str = "naive", epsilon: float = 0.01,
                    generator: torch.Generator | None = None, beta: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedily pick ``min(k, N)`` samples maximising ``objective``; ``(indices, marginal gains)`` in pick order.

    Ties go to the lowest index. ``"naive"`` evaluates all ``N`` gains per step (``k`` batched evaluations);
    ``"lazy"`` evaluates them once, then re-evaluates only the top of a priority queue of stale upper bounds
    (valid for submodular objectives) and returns exactly the selection of ``"naive"`` - barring floating-point
    near-ties, as gains of the same candidate are computed identically on CPU; it is usually far fewer
    evaluations, one candidate at a time. ``"approximate_lazy"`` is lazy greedy that stops re-evaluating early: it
    takes the first candidate off the queue whose fresh gain is at least ``beta`` times its stale bound, so each
    pick's gain is at least ``beta`` times the best gain of its step, ``(1 - e^-beta)``-optimal for monotone
    objectives, with fewer evaluations than ``"lazy"``. ``"stochastic"`` takes the best of ``ceil(N / k * log(1 / epsilon))``
    random unselected candidates per step: ``(1 - 1/e - epsilon)``-optimal in expectation for monotone
    objectives, at ``O(N log(1/epsilon))`` evaluations in total.

    Parameters
    ----------
    objective
        A :class:`SubmodularObjective` (:class:`FacilityLocation`, :class:`GraphCut`, :class:`LogDeterminant`).
    k
        How many samples to pick, ``>= 1``; ``k >= N`` orders all ``N`` greedily.
    optimizer
        ``"naive"``, ``"lazy"``, ``"approximate_lazy"`` or ``"stochastic"``.
    epsilon
        Stochastic greedy's accuracy, in ``(0, 1)``; unused by the other optimizers.
    generator
        The random source of ``"stochastic"`` (results are deterministic given a seeded generator).
    beta
        Approximate lazy greedy's acceptance ratio, in ``(0, 1]`` (1 is lazy greedy); unused by the others.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        ``indices`` (long, distinct) and the marginal ``gains`` (float32) at each pick; ``gains.sum()`` is
        ``f(S) - f(empty)``.

    Examples
    --------
    >>> s = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.9], [0.0, 0.0, 0.9, 1.0]])
    >>> greedy_maximize(FacilityLocation(s), 2, optimizer="lazy")
    (tensor([0, 2]), tensor([2.0000, 1.9000]))
    """
    k = check_int("k", k, 1)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_number("epsilon", epsilon, 0, 1, low_open=True, high_open=True)
    check_number("beta", beta, 0, 1, low_open=True)
    if not isinstance(objective, SubmodularObjective):
        raise ValueError(f"objective must be a SubmodularObjective, got {type(objective).__name__}")
    n, device = objective.n, objective.device
    k = min(k, n)
    if optimizer == "approximate_lazy":
        picks, gains = _lazy(objective, k, beta)
    elif optimizer == "lazy":
        picks, gains = _lazy(objective, k, 1.0)
    elif optimizer == "stochastic":
        picks, gains = _stochastic(objective, k, epsilon, generator)
    else:
        picks, gains = _naive(objective, k)
    return (torch.tensor(picks, dtype=torch.long, device=device),
            torch.tensor(gains, dtype=torch.float32, device=device))


def _naive(objective: SubmodularObjective, k: int) -> tuple[list[int], list[float]]:
    state, everyone = objective.init_state(), torch.arange(objective.n, device=objective.device)
    chosen = torch.zeros(objective.n, dtype=torch.bool, device=objective.device)
    picks, gains = [], []
    for _ in range(k):
        g = objective.gain(state, everyone).masked_fill(chosen, -math.inf)
        j = int(torch.argmax(g))  # the first maximum: ties go to the lowest index
        picks.append(j)
        gains.append(float(g[j]))
        chosen[j] = True
        state = objective.update(state, j)
    return picks, gains


def _lazy(objective: SubmodularObjective, k: int, beta: float) -> tuple[list[int], list[float]]:
    """Lazy greedy (``beta = 1``) or approximate lazy greedy (``beta < 1``)."""
    state = objective.init_state()
    bounds = objective.gain(state, torch.arange(objective.n, device=objective.device)).tolist()
    # entries (-bound, index, step at which the bound was computed): the heap's top is the largest bound, ties
    # to the lowest index. A bound computed at the current step is the exact gain; at the top it beats every
    # other candidate's upper bound, hence every other gain - the same pick (and tie-break) as naive greedy.
    # With beta < 1, a candidate whose fresh gain is at least beta times the bound it had at the top is taken
    # at once: that bound was at least every other candidate's gain, so the pick is within beta of the best.
    heap = [(-b, i, 0) for i, b in enumerate(bounds)]
    heapq.heapify(heap)
    picks, gains = [], []
    for step in range(k):
        while True:
            neg, i, stamp = heapq.heappop(heap)
            if stamp == step:
                gain = -neg
                break
            gain = float(objective.gain(state, torch.tensor([i], device=objective.device))[0])
            if beta < 1 and gain >= beta * -neg:
                break
            heapq.heappush(heap, (-gain, i, step))
        picks.append(i)
        gains.append(gain)
        state = objective.update(state, i)
    return picks, gains


def _stochastic(objective: SubmodularObjective, k: int, epsilon: float, generator: torch.Generator | None
                ) -> tuple[list[int], list[float]]:
    n, device = objective.n, objective.device
    sample_size = max(1, math.ceil(n / k * math.log(1.0 / epsilon)))
    rng_device = generator.device if generator is not None else torch.device("cpu")
    state = objective.init_state()
    remaining = torch.arange(n, device=device)
    picks, gains = [], []
    for _ in range(k):
        if sample_size < len(remaining):
            draw = torch.randperm(len(remaining), generator=generator, device=rng_device)[:sample_size]
            candidates = remaining[draw.to(device)]
        else:
            candidates = remaining
        g = objective.gain(state, candidates)
        best = int(torch.argmax(g))
        j = int(candidates[best])
        picks.append(j)
        gains.append(float(g[best]))
        remaining = remaining[remaining != j]
        state = objective.update(state, j)
    return picks, gains
