"""Coreset algorithms (k-center, submodular greedy, CRAIG, GradMatch): hand-checked cases, optimality and
equivalence properties, determinism, the weight convention, and argument checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls

from lightning_modyn.selection.downsampling.coresets import Craig, GradMatch, KCenter, Submodular
from lightning_modyn.selection.downsampling.craig import craig
from lightning_modyn.selection.downsampling.gradmatch import _omp, gradmatch
from lightning_modyn.selection.downsampling.kcenter import kcenter_greedy
from lightning_modyn.selection.downsampling.scoring import ScoringBatch
from lightning_modyn.selection.downsampling.submodular import (
    FacilityLocation,
    GraphCut,
    LogDeterminant,
    SubmodularObjective,
    greedy_maximize,
    similarity_from_features,
)

FAST = settings(deadline=None, max_examples=25)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def matrices(max_n: int = 10):
    """Small float matrices with values in quarter steps (many exact ties), as ``(n, n)`` or ``(n, d)``."""
    return st.integers(1, max_n).flatmap(
        lambda n: st.lists(st.integers(0, 8), min_size=n * n, max_size=n * n).map(
            lambda v: torch.tensor(v, dtype=torch.float32).reshape(n, n) / 4))


# ---------------------------------------------------------------------------------------------- k-center
def test_kcenter_on_a_line_picks_the_extremes():
    x = torch.arange(11, dtype=torch.float32)[:, None]
    assert kcenter_greedy(x, 3, initial=[5]).tolist() == [5, 0, 10]
    for seed in range(5):
        idx = kcenter_greedy(x, 2, generator=gen(seed))
        assert idx[1].item() in (0, 10)  # the farthest point from any start is an end of the line


def radius(x: torch.Tensor, centres) -> float:
    return torch.cdist(x, x[list(centres)]).min(dim=1).values.max().item()


@FAST
@given(st.integers(2, 8), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_kcenter_is_a_2_approximation(n, k, seed):
    x = torch.randn(n, 2, generator=gen(seed))
    k = min(k, n - 1)
    idx = kcenter_greedy(x, k, generator=gen(seed))
    assert len(set(idx.tolist())) == k
    best = min(radius(x, c) for c in itertools.combinations(range(n), k))
    assert radius(x, idx.tolist()) <= 2 * best + 1e-5


def test_kcenter_deterministic_blocked_and_initial_prefix():
    x = torch.randn(50, 4, generator=gen(0))
    a = kcenter_greedy(x, 10, generator=gen(3))
    assert torch.equal(a, kcenter_greedy(x, 10, generator=gen(3)))
    assert torch.equal(a, kcenter_greedy(x, 10, generator=gen(3), block_size=7))
    b = kcenter_greedy(x, 10, initial=torch.tensor([4, 9, 1]), block_size=2)
    assert b[:3].tolist() == [4, 9, 1] and len(set(b.tolist())) == 10
    assert torch.equal(b, kcenter_greedy(x, 10, initial=[4, 9, 1]))


def test_kcenter_duplicates_and_k_at_least_n():
    x = torch.zeros(5, 3)
    assert kcenter_greedy(x, 3, initial=[2]).tolist() == [2, 0, 1]  # all distances 0: lowest unchosen indices
    assert kcenter_greedy(x, 5).tolist() == [0, 1, 2, 3, 4]
    assert kcenter_greedy(x, 9).tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- GradMatch vs OMP
def _ridge_nnls(g: np.ndarray, chosen: list[int], lam: float) -> np.ndarray:
    """argmin_{w >= 0} |w @ g[chosen] - sum(g)|^2 + lam |w|^2, as NNLS on the augmented system."""
    a = np.vstack([g[chosen].T, math.sqrt(lam) * np.eye(len(chosen))])
    b = np.concatenate([g.sum(axis=0), np.zeros(len(chosen))])
    return nnls(a, b, maxiter=50 * len(chosen))[0]


def plain_omp(g: np.ndarray, k: int, lam: float) -> tuple[list[int], np.ndarray]:
    """Textbook orthogonal matching pursuit: add the atom most correlated with the residual on a normalised
    dictionary (positive correlations only), then refit every weight, here with the same ridge as GradMatch."""
    target, chosen, w = g.sum(axis=0), [], np.zeros(0)
    norms = np.maximum(np.linalg.norm(g, axis=1), 1e-300)
    residual = target
    for _ in range(k):
        score = (g @ residual) / norms
        score[chosen] = -np.inf
        j = int(np.argmax(score))
        if not score[j] > 0:
            break
        chosen.append(j)
        w = _ridge_nnls(g, chosen, lam)
        residual = target - w @ g[chosen]
    return chosen, w


def objective(g: np.ndarray, chosen: list[int], w: np.ndarray, lam: float) -> float:
    """GradMatch's objective in the sum scale: the squared matching error plus the ridge on the weights."""
    miss = (np.asarray(w) @ g[chosen] if chosen else 0.0) - g.sum(axis=0)
    return float(miss @ miss + lam * np.sum(np.asarray(w) ** 2))


def matching_error(g: np.ndarray, chosen: list[int], w: np.ndarray) -> float:
    target = g.sum(axis=0)
    return float(np.linalg.norm(np.asarray(w) @ g[chosen] - target) / np.linalg.norm(target))


def gradmatch_sum_scale(g: np.ndarray, k: int, lam: float) -> tuple[list[int], np.ndarray]:
    """GradMatch's matched samples and their weights in the sum scale (before the fill and rescaling)."""
    picks, w = _omp(torch.tensor(g, dtype=torch.float32), k, lam, True, 0.0)
    return picks, w.double().numpy()


def trained_mlp_gradients(seed: int, n: int = 512) -> np.ndarray:
    """Last-layer gradient embeddings of a 20-64-10 MLP trained (300 full-batch SGD steps) on these ``n`` samples:
    most are fitted (small gradients), a few are not."""
    g = gen(seed)
    truth = torch.randn(20, 10, generator=g)
    x = torch.randn(n, 20, generator=g)
    y = (x @ truth + 0.5 * torch.randn(n, 10, generator=g)).argmax(dim=1)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    with torch.no_grad():
        h = net[1](net[0](x))
        e = torch.softmax(net[2](h), dim=1) - torch.nn.functional.one_hot(y, 10).float()
        return torch.cat([(e[:, :, None] * h[:, None, :]).reshape(n, -1), e], dim=1).double().numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradmatch_matches_a_trained_models_gradients_at_least_as_well_as_omp(seed):
    g = trained_mlp_gradients(seed)
    norms = np.linalg.norm(g, axis=1)
    for lam in (0.0, 0.5):
        picks, w = gradmatch_sum_scale(g, 128, lam)
        omp, w_omp = plain_omp(g, 128, lam)
        assert objective(g, picks, w, lam) <= objective(g, omp, w_omp, lam) * 1.001
        assert matching_error(g, picks, w) <= matching_error(g, omp, w_omp) + 1e-3
        if lam == 0.0:  # without a ridge the rule is OMP's: the same samples
            assert picks == omp
        else:  # with it, OMP's rank takes tiny gradients the ridge then cannot use; GradMatch's does not
            assert np.median(norms[picks]) >= 0.8 * np.median(norms) > 2 * np.median(norms[omp])
            assert matching_error(g, picks, w) <= 0.8 * matching_error(g, omp, w_omp)


@pytest.mark.parametrize("shape", [(9, 5, 3), (10, 8, 3)])
def test_gradmatch_against_omp_and_the_optimum_on_small_problems(shape):
    n, d, k = shape
    excess = {"gradmatch": [], "omp": []}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        g = rng.standard_normal((n, d)) * rng.lognormal(0.0, 1.0, (n, 1))  # norms spread over ~2 decades
        for lam in (0.0, 0.5):
            best = min(objective(g, list(c), _ridge_nnls(g, list(c), lam), lam)
                       for m in range(1, k + 1) for c in itertools.combinations(range(n), m))
            picks, w = gradmatch_sum_scale(g, k, lam)
            omp, w_omp = plain_omp(g, k, lam)
            mine, theirs = objective(g, picks, w, lam), objective(g, omp, w_omp, lam)
            assert mine >= best * (1 - 1e-6) and theirs >= best * (1 - 1e-6)  # brute force is the optimum
            if lam == 0.0:
                assert mine == pytest.approx(theirs, rel=1e-4)
            else:
                excess["gradmatch"].append(mine / best - 1)
                excess["omp"].append(theirs / best - 1)
    assert np.mean(excess["gradmatch"]) <= np.mean(excess["omp"]) + 0.02
    assert np.median(excess["gradmatch"]) <= np.median(excess["omp"]) + 1e-6


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be an integer >= 1"),
    ({"k": 2.0}, "k must be an integer >= 1"),
    ({"k": 2, "embeddings": torch.zeros(4)}, r"embeddings must be a 2-D tensor .*shape \(4,\)"),
    ({"k": 2, "embeddings": torch.tensor([[0.0], [math.nan]])}, "embeddings must be finite"),
    ({"k": 2, "initial": [7]}, r"initial indices must lie in \[0, 4\)"),
    ({"k": 2, "initial": [1, 1]}, "initial indices must be distinct"),
    ({"k": 1, "initial": [1, 2]}, "initial holds 2 indices, more than k=1"),
    ({"k": 2, "initial": [0.5]}, "initial must hold integer indices"),
    ({"k": 2, "block_size": 0}, "block_size must be an integer >= 1"),
])
def test_kcenter_bad_arguments(kwargs, match):
    kwargs = {"embeddings": torch.zeros(4, 2), **kwargs}
    with pytest.raises(ValueError, match=match):
        kcenter_greedy(**kwargs)


# ---------------------------------------------------------------------------------------------- submodular
def block_similarity() -> torch.Tensor:
    """Blocks of sizes 4, 3, 2: within-block similarities in [0.5, 1], 0 across."""
    sizes = [4, 3, 2]
    s = torch.zeros(9, 9)
    lo = 0
    for size in sizes:
        s[lo:lo + size, lo:lo + size] = 0.5 + 0.5 * torch.rand(size, size, generator=gen(size))
        lo += size
    return (s + s.T) / 2


@pytest.mark.parametrize("optimizer", ["naive", "lazy", "stochastic"])
def test_facility_location_picks_one_per_block(optimizer):
    idx, gains = greedy_maximize(FacilityLocation(block_similarity()), 3, optimizer=optimizer, generator=gen(0))
    blocks = sorted(0 if i < 4 else 1 if i < 7 else 2 for i in idx.tolist())
    assert blocks == [0, 1, 2]
    assert gains.tolist() == sorted(gains.tolist(), reverse=True)  # diminishing returns


def objectives(s: torch.Tensor, lam: float, ridge: float):
    psd = s @ s.T / max(len(s), 1)
    return [FacilityLocation(s), GraphCut(s, lam=lam), LogDeterminant(psd, ridge=ridge)]


@FAST
@given(matrices(), st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.sampled_from([0.5, 1.0, 3.0]), st.integers(1, 10))
def test_lazy_greedy_equals_naive(s, lam, ridge, k):
    for objective in objectives(s, lam, ridge):
        naive = greedy_maximize(objective, k, optimizer="naive")
        lazy = greedy_maximize(objective, k, optimizer="lazy")
        assert naive[0].tolist() == lazy[0].tolist(), type(objective).__name__
        assert torch.allclose(naive[1], lazy[1])
        assert len(naive[0]) == min(k, len(s)) and len(set(naive[0].tolist())) == len(naive[0])


@settings(deadline=None, max_examples=15)
@given(matrices(6), st.sampled_from([0.0, 0.7, 1.5]), st.integers(0, 2**31 - 1))
def test_gains_are_brute_force_differences(s, lam, seed):
    order = torch.randperm(len(s), generator=gen(seed)).tolist()
    for objective in objectives(s, lam, ridge=1.0):
        state = objective.init_state()
        for t, j in enumerate(order):
            everyone = objective.gain(state, torch.arange(len(s)))
            base = objective(order[:t])
            for c in range(len(s)):
                if c not in order[:t]:
                    assert everyone[c].item() == pytest.approx(objective(order[:t] + [c]) - base, abs=1e-3)
            state = objective.update(state, j)


def test_log_determinant_greedy_gains_match_slogdet():
    x = torch.randn(12, 5, generator=gen(1))
    kernel = (x @ x.T) / 5
    f = LogDeterminant(kernel, ridge=0.5)
    idx, gains = greedy_maximize(f, 6, optimizer="lazy")
    k64 = kernel.double()
    for t in range(1, 7):
        sub = idx[:t]
        brute = torch.linalg.slogdet(k64[sub][:, sub] + 0.5 * torch.eye(t, dtype=torch.float64)).logabsdet
        assert gains[:t].sum().item() == pytest.approx(brute.item(), abs=1e-4)


class CountingObjective(SubmodularObjective):
    """Wraps an objective and counts the candidates whose gain it computed."""

    def __init__(self, objective) -> None:
        self.objective, self.evaluations = objective, 0
        self.n, self.device = objective.n, objective.device

    def init_state(self):
        return self.objective.init_state()

    def gain(self, state, candidates):
        self.evaluations += len(candidates)
        return self.objective.gain(state, candidates)

    def update(self, state, index):
        return self.objective.update(state, index)


@pytest.mark.parametrize("beta", [0.5, 0.8, 0.95])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_approximate_lazy_greedy_takes_a_pick_within_beta_of_the_best_every_step(beta, seed):
    x = torch.randn(120, 4, generator=gen(seed))
    for objective in (FacilityLocation(similarity_from_features(x)),
                      LogDeterminant(similarity_from_features(x, "cosine"), ridge=1.0)):
        idx, gains = greedy_maximize(objective, 20, optimizer="approximate_lazy", beta=beta)
        assert len(set(idx.tolist())) == 20
        state, chosen = objective.init_state(), []
        for j, gain in zip(idx.tolist(), gains.tolist()):  # replay: the pick's gain against every candidate's
            everyone = objective.gain(state, torch.arange(len(x)))
            everyone[chosen] = -math.inf
            assert everyone[j].item() == pytest.approx(gain, abs=1e-5)
            assert gain >= beta * everyone.max().item() - 1e-5
            chosen.append(j)
            state = objective.update(state, j)
        best = objective(greedy_maximize(objective, 20)[0])
        assert objective(idx) >= (1 - math.exp(-beta)) * best  # its guarantee, against naive greedy's value
        assert objective(idx) >= 0.9 * best  # and in practice close to it


def test_approximate_lazy_greedy_evaluates_fewer_gains_than_lazy_and_beta_1_is_lazy():
    x = torch.randn(400, 6, generator=gen(4))
    f = FacilityLocation(similarity_from_features(x))
    lazy, approx = CountingObjective(f), CountingObjective(f)
    exact = greedy_maximize(lazy, 40, optimizer="lazy")
    rough = greedy_maximize(approx, 40, optimizer="approximate_lazy", beta=0.8)
    assert approx.evaluations < lazy.evaluations
    assert f(rough[0]) >= (1 - math.exp(-0.8)) * f(exact[0])
    same = greedy_maximize(f, 40, optimizer="approximate_lazy", beta=1.0)
    assert same[0].tolist() == exact[0].tolist()


@pytest.mark.parametrize("seed", range(8))
def test_approximate_lazy_greedy_against_the_optimum(seed):
    x = torch.randn(11, 3, generator=gen(seed))
    f = FacilityLocation(similarity_from_features(x))
    optimum = max(f(list(c)) for c in itertools.combinations(range(11), 3))
    idx, _ = greedy_maximize(f, 3, optimizer="approximate_lazy", beta=0.6)
    assert f(idx) >= (1 - math.exp(-0.6)) * optimum


def test_stochastic_greedy_is_nearly_as_good_as_greedy():
    x = torch.randn(80, 3, generator=gen(2))
    f = FacilityLocation(similarity_from_features(x))
    best = f(greedy_maximize(f, 8)[0])
    epsilon = 0.1
    values = [f(greedy_maximize(f, 8, "stochastic", epsilon, generator=gen(seed))[0]) for seed in range(10)]
    assert sum(values) / len(values) >= (1 - 1 / math.e - epsilon) * best
    again = [f(greedy_maximize(f, 8, "stochastic", epsilon, generator=gen(seed))[0]) for seed in range(10)]
    assert values == again  # deterministic given the generator


def test_greedy_k_at_least_n_orders_everything():
    idx, gains = greedy_maximize(FacilityLocation(block_similarity()), 20, optimizer="lazy")
    assert sorted(idx.tolist()) == list(range(9)) and len(gains) == 9


def test_similarity_from_features():
    x = torch.randn(7, 3, generator=gen(4)) * 10 + 100
    s = similarity_from_features(x)
    d = torch.cdist(x.double(), x.double())
    assert torch.allclose(s.double(), d.max() - d, atol=1e-3)
    assert (s >= 0).all() and torch.equal(s, s.T)
    c = similarity_from_features(torch.cat([x, torch.zeros(1, 3)]), "cosine")
    assert (c >= 0).all() and (c <= 1).all() and c[-1, -1] == 0.5 and torch.allclose(c[:-1, -1], torch.tensor(0.5))


@pytest.mark.parametrize("call, match", [
    (lambda: greedy_maximize(FacilityLocation(torch.eye(3)), 0), "k must be an integer >= 1"),
    (lambda: greedy_maximize(FacilityLocation(torch.eye(3)), 2, optimizer="fast"),
     r"optimizer must be one of \('naive', 'lazy', 'approximate_lazy', 'stochastic'\)"),
    (lambda: greedy_maximize(FacilityLocation(torch.eye(3)), 2, epsilon=1.0), r"epsilon must be a number in \(0, 1\)"),
    (lambda: greedy_maximize(torch.eye(3), 2), "objective must be a SubmodularObjective"),
    (lambda: FacilityLocation(torch.ones(3)), r"similarity must be a square 2-D tensor .*shape \(3,\)"),
    (lambda: FacilityLocation(torch.ones(2, 3)), r"similarity must be a square .*shape \(2, 3\)"),
    (lambda: FacilityLocation(-torch.eye(2)), "similarity must be >= 0"),
    (lambda: GraphCut(torch.eye(2), lam=-0.1), "lam must be a finite number >= 0"),
    (lambda: LogDeterminant(torch.eye(2), ridge=0.0), "ridge must be a finite number > 0"),
    (lambda: LogDeterminant(torch.tensor([[1.0, 1.0], [0.0, 1.0]])), "similarity must be symmetric"),
    (lambda: similarity_from_features(torch.ones(3, 2), metric="manhattan"),
     r"metric must be one of \('euclidean', 'cosine'\)"),
    (lambda: similarity_from_features(torch.ones(3), metric="cosine"), r"x must be a 2-D tensor .*shape \(3,\)"),
])
def test_submodular_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------- CRAIG
def two_clusters() -> torch.Tensor:
    small = torch.tensor([[0.0, 0.0]]) + 0.05 * torch.randn(3, 2, generator=gen(5))
    big = torch.tensor([[6.0, -4.0]]) + 0.05 * torch.randn(7, 2, generator=gen(6))
    return torch.cat([big[:4], small, big[4:]])  # clusters interleaved: small = rows 4..6


@pytest.mark.parametrize("optimizer", ["naive", "lazy", "stochastic"])
def test_craig_weights_are_cluster_sizes(optimizer):
    g = two_clusters()
    idx, w = craig(g, 2, optimizer=optimizer, generator=gen(0))
    small = [i in (4, 5, 6) for i in idx.tolist()]
    assert sorted(small) == [False, True]
    assert w.tolist() == pytest.approx([2 * 3 / 10 if s else 2 * 7 / 10 for s in small])
    estimate = (w[:, None] * g[idx]).mean(dim=0)
    assert torch.allclose(estimate, g.mean(dim=0), atol=0.2)  # within the clusters' radius


@FAST
@given(st.integers(2, 15), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_craig_weight_convention(n, k, seed):
    g = torch.randn(n, 3, generator=gen(seed))
    idx, w = craig(g, k)
    m = min(k, n)
    assert len(idx) == m and len(set(idx.tolist())) == m
    assert (w >= 0).all() and w.sum().item() == pytest.approx(m)
    assert torch.equal(idx, craig(g, k, optimizer="naive")[0])


def test_craig_k_at_least_n_and_duplicates():
    g = torch.randn(4, 2, generator=gen(7))
    idx, w = craig(g, 4)
    assert idx.tolist() == [0, 1, 2, 3] and w.tolist() == [1.0] * 4
    idx, w = craig(torch.ones(5, 2), 2)  # all identical: the first medoid represents everyone
    assert idx.tolist() == [0, 1] and w.tolist() == pytest.approx([2.0, 0.0])


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be an integer >= 1"),
    ({"gradients": torch.ones(5), "k": 2}, r"gradients must be a 2-D tensor .*shape \(5,\)"),
    ({"k": 2, "optimizer": "greedy"}, r"optimizer must be one of \('naive', 'lazy', 'approximate_lazy', 'stochastic'\)"),
])
def test_craig_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        craig(**{"gradients": torch.ones(5, 2), **kwargs})


# ---------------------------------------------------------------------------------------------- GradMatch
def sparse_problem(seed: int) -> tuple[torch.Tensor, list[int]]:
    """13 gradients whose sum is the sum of rows 2, 6 and 11: the other 10 come in cancelling +/- pairs."""
    base = torch.randn(8, 30, generator=gen(seed))
    support = [2, 6, 11]
    others = torch.cat([base[3:], -base[3:]])
    rows = iter(others)
    g = torch.stack([base[support.index(i)] if i in support else next(rows) for i in range(13)])
    return g, support


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradmatch_recovers_an_exact_sparse_solution(seed):
    g, support = sparse_problem(seed)
    idx, w = gradmatch(g, 3, lam=0.0)
    assert sorted(idx.tolist()) == support
    assert w.tolist() == pytest.approx([3 / 13] * 3, abs=1e-5)
    assert torch.allclose((w[:, None] * g[idx]).mean(dim=0), g.mean(dim=0), atol=1e-4)


def test_gradmatch_ridge_and_signed_weights():
    g = torch.randn(40, 6, generator=gen(8))
    err = []
    for k in range(1, 7):
        idx, w = gradmatch(g, k, lam=0.0)
        assert len(set(idx.tolist())) == k and (w >= 0).all()
        err.append(((w[:, None] * g[idx]).mean(dim=0) - g.mean(dim=0)).norm().item())
    assert all(b <= a + 1e-5 for a, b in zip(err, err[1:]))  # nested supports: the fit only improves
    idx, w = gradmatch(g, 6, lam=0.0, nonnegative=False)  # 6 generic atoms span R^6: exact match
    assert torch.allclose((w[:, None] * g[idx]).mean(dim=0), g.mean(dim=0), atol=1e-4)
    idx, w = gradmatch(g, 4, lam=1e3)  # heavy ridge shrinks the weights
    assert len(set(idx.tolist())) == 4 and (w >= 0).all() and w.sum() < gradmatch(g, 4, lam=0.0)[1].sum()


def test_gradmatch_early_stop_fills_at_random():
    # the sum is exactly row 0 (the rest cancels): matched after one sample, 3 random fillers with weight 1
    g = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 2], [0, 0, -2], [0, 3, 3], [0, -3, -3]])
    idx, w = gradmatch(g, 4, lam=0.0, generator=gen(0))
    assert idx[0].item() == 0 and len(set(idx.tolist())) == 4
    assert w.tolist() == pytest.approx([1 / 7, 1, 1, 1])  # the matched part weighs its share of the budget
    assert torch.equal(idx, gradmatch(g, 4, lam=0.0, generator=gen(0))[0])
    idx, w = gradmatch(torch.zeros(5, 2), 2, generator=gen(1))  # nothing to match: a uniform sample
    assert len(set(idx.tolist())) == 2 and w.tolist() == [1.0, 1.0]


def test_gradmatch_k_at_least_n():
    idx, w = gradmatch(torch.randn(3, 2, generator=gen(9)), 3)
    assert idx.tolist() == [0, 1, 2] and w.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be an integer >= 1"),
    ({"gradients": torch.ones(5), "k": 2}, r"gradients must be a 2-D tensor .*shape \(5,\)"),
    ({"k": 2, "lam": -1.0}, "lam must be a finite number >= 0"),
    ({"k": 2, "tol": -1e-3}, "tol must be a finite number >= 0"),
    ({"k": 2, "nonnegative": 1}, "nonnegative must be True or False"),
    ({"gradients": torch.tensor([[1.0], [math.inf]]), "k": 1}, "gradients must be finite"),
])
def test_gradmatch_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradmatch(**{"gradients": torch.ones(5, 2), **kwargs})


# ---------------------------------------------------------------------------------------------- strategy parameters
def scored_batch(n: int = 60, seed: int = 0) -> ScoringBatch:
    g = gen(seed)
    return ScoringBatch.from_outputs(torch.randn(n, 3, generator=g), torch.randint(0, 3, (n,), generator=g),
                                     embeddings=torch.randn(n, 5, generator=g))


def test_every_algorithm_parameter_reaches_the_algorithm():
    batch = scored_batch()
    x, sim = batch.embeddings, similarity_from_features(batch.embeddings, "cosine")
    for lam in (0.2, 2.0):  # graph cut's lambda
        chosen, _ = Submodular("graph_cut", lam=lam, features="embeddings", per_class=False).select(batch, 8, gen(0))
        assert chosen.tolist() == greedy_maximize(GraphCut(sim, lam=lam), 8)[0].tolist()
    for ridge in (0.1, 5.0):  # the log-determinant's ridge
        chosen, _ = Submodular("log_determinant", ridge=ridge, features="embeddings", per_class=False).select(
            batch, 8, gen(0))
        assert chosen.tolist() == greedy_maximize(LogDeterminant(sim, ridge=ridge), 8)[0].tolist()
    chosen, _ = Submodular(optimizer="approximate_lazy", beta=0.5, features="embeddings", per_class=False).select(
        batch, 8, gen(0))
    assert chosen.tolist() == greedy_maximize(FacilityLocation(sim), 8, "approximate_lazy", beta=0.5)[0].tolist()
    # k-center's first centre: the sample closest to the mean, whatever the generator
    first = int(torch.argmin((x - x.mean(dim=0)).norm(dim=1)))
    for seed in (0, 1):
        chosen, _ = KCenter(first="mean").select(batch, 5, gen(seed))
        assert chosen[0].item() == first
    assert KCenter().select(batch, 5, gen(0))[0].tolist() != KCenter().select(batch, 5, gen(1))[0].tolist()
    # GradMatch's ridge and sign constraint
    grads = batch.last_layer_gradients()
    for lam, nonnegative in ((0.0, True), (3.0, False)):
        chosen, w = GradMatch(lam=lam, nonnegative=nonnegative, per_class=False).select(batch, 6, gen(0))
        expected = gradmatch(grads, 6, lam=lam, nonnegative=nonnegative, generator=gen(0))
        assert chosen.tolist() == expected[0].tolist() and torch.allclose(w, expected[1])


@pytest.mark.parametrize("make, match", [
    (lambda: Submodular("graph_cut", lam=-1.0), "lam must be a finite number >= 0"),
    (lambda: Submodular(ridge=0.0), "ridge must be a finite number > 0"),
    (lambda: Submodular(optimizer="approximate_lazy", beta=1.5), r"beta must be a number in \(0, 1\]"),
    (lambda: Craig(beta=0.0), r"beta must be a number in \(0, 1\]"),
    (lambda: Craig(epsilon=1.0), r"epsilon must be a number in \(0, 1\)"),
    (lambda: GradMatch(tol=-1.0), "tol must be a finite number >= 0"),
    (lambda: GradMatch(nonnegative="yes"), "nonnegative must be True or False"),
    (lambda: KCenter(first="median"), r"first must be one of \('random', 'mean'\)"),
])
def test_bad_algorithm_parameters_are_refused_when_the_strategy_is_made(make, match):
    with pytest.raises(ValueError, match=match):
        make()
