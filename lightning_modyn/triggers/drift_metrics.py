"""Distances between two samples of embeddings: pure numpy functions selected by name from :data:`METRICS`.

Every metric takes a reference sample ``x`` (n, d) and a current sample ``y`` (m, d) and returns one float.
``mmd``, ``ks`` and ``wasserstein`` are distances (higher means more drift); ``mmd_pvalue`` is the p-value of a
permutation test (lower means more drift); ``mmd_analytic`` is the biased MMD divided by the distribution-free
acceptance threshold of Gretton et al. (drift at level ``alpha`` when the ratio reaches 1).

Examples
--------
>>> x = np.array([[0.0], [1.0]])
>>> y = np.array([[0.0], [2.0]])
>>> round(ks(x, y), 3)                     # the empirical CDFs differ by 1/2 on [1, 2)
0.5
>>> round(wasserstein(x, y), 3)            # half the mass moves from 1 to 2
0.5
>>> round(mmd(x, x, unbiased=False), 6)    # the biased MMD² of a sample with itself is 0
0.0
>>> round(mmd(x, y), 3)                     # unbiased MMD² (may be < 0); bandwidth = median distance 1
-0.432
>>> sorted(METRICS)
['ks', 'mmd', 'mmd_analytic', 'mmd_pvalue', 'wasserstein']

References
----------
Gretton, Borgwardt, Rasch, Schölkopf, Smola, "A Kernel Two-Sample Test", JMLR 13, 2012 (MMD, the median
heuristic, Corollary 9's distribution-free threshold, the bootstrap/permutation test).
Böther et al., "Modyn: Data-Centric Machine Learning Pipeline Orchestration", SIGMOD 2025 (drift metrics on model
embeddings).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lightning_modyn._checks import check_choice, check_int, check_number, resolve_callable

_REDUCTIONS = ("mean", "max")


def _pair(x: np.ndarray, y: np.ndarray, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x.reshape(len(x), -1)
    y = y.reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of dimensions, got {x.shape[1]} and {y.shape[1]}")
    if len(x) < min_rows or len(y) < min_rows:
        raise ValueError(f"x and y need at least {min_rows} rows each, got {len(x)} and {len(y)}")
    return x, y


def _sq_distances(z: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", z, z)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)


def median_bandwidth(z: np.ndarray) -> float:
    """Median heuristic: the median Euclidean distance between distinct rows of ``z`` (1.0 if that is 0).

    >>> median_bandwidth(np.array([[0.0], [1.0], [3.0]]))
    2.0
    """
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    d2 = _sq_distances(z)[np.triu_indices(len(z), k=1)]
    sigma = float(np.sqrt(np.median(d2))) if len(d2) else 0.0
    return sigma if sigma > 0 else 1.0


def rbf_kernel(z: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian RBF kernel matrix ``exp(-||a - b||² / (2 bandwidth²))`` over the rows of ``z``."""
    return np.exp(-_sq_distances(z) / (2.0 * bandwidth**2))


def _mmd2_from_kernel(k: np.ndarray, n: int, unbiased: bool) -> float:
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    m = len(k) - n
    if not unbiased:
        return float(kxx.mean() + kyy.mean() - 2.0 * kxy.mean())
    sxx = kxx.sum() - np.trace(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return float(sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * kxy.mean())


def mmd(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None, unbiased: bool = True) -> float:
    """Squared maximum mean discrepancy with an RBF kernel (bandwidth by the median heuristic on ``x ∪ y``).

    ``unbiased=True`` is Gretton et al.'s MMD²_u (Eq. 3; may be slightly negative), otherwise MMD²_b (Eq. 5).
    """
    x, y = _pair(x, y, min_rows=2 if unbiased else 1)
    z = np.concatenate([x, y])
    k = rbf_kernel(z, median_bandwidth(z) if bandwidth is None else bandwidth)
    return _mmd2_from_kernel(k, len(x), unbiased)


def mmd_pvalue(x: np.ndarray, y: np.ndarray, num_permutations: int = 100, seed: int = 0) -> float:
    """P-value of the permutation test of MMD²_u: the share of random relabellings of ``x ∪ y`` whose MMD is at
    least the observed one, ``(1 + #{≥}) / (1 + num_permutations)``. Deterministic by ``seed``."""
    x, y = _pair(x, y, min_rows=2)
    n, m = len(x), len(y)
    z = np.concatenate([x, y])
    k = rbf_kernel(z, median_bandwidth(z))
    observed = _mmd2_from_kernel(k, n, unbiased=True)
    rng = np.random.default_rng(seed)
    a = np.zeros((n + m, num_permutations))  # column j: indicator of the rows labelled "x" in permutation j
    for j in range(num_permutations):
        a[rng.permutation(n + m)[:n], j] = 1.0
    row = k.sum(axis=1)
    ka = k @ a
    xx = (a * ka).sum(axis=0) - n  # RBF diagonal is 1
    xy = (a * row[:, None]).sum(axis=0) - (a * ka).sum(axis=0)
    yy = k.sum() - 2.0 * xy - (a * ka).sum(axis=0) - m
    stats = xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)
    return float((1 + np.sum(stats >= observed - 1e-12)) / (1 + num_permutations))


def mmd_analytic_threshold(m: int, alpha: float = 0.05, kernel_bound: float = 1.0) -> float:
    """Gretton et al.'s Corollary 9 acceptance threshold on the (not squared) biased MMD_b for ``m`` samples per
    side: ``sqrt(2K/m) (1 + sqrt(2 log(1/alpha)))``.

    >>> round(mmd_analytic_threshold(100, alpha=0.05), 4)
    0.4876
    """
    check_int("m", m, 1, hint="(samples per window)")
    check_number("alpha", alpha, 0, 1, low_open=True, high_open=True)
    return float(np.sqrt(2.0 * kernel_bound / m) * (1.0 + np.sqrt(2.0 * np.log(1.0 / alpha))))


def mmd_analytic(x: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> float:
    """``MMD_b / mmd_analytic_threshold(min(n, m), alpha)``: drift at level ``alpha`` when it reaches 1 (the
    smaller side's size makes the unequal-size case conservative)."""
    x, y = _pair(x, y)
    value = np.sqrt(max(mmd(x, y, unbiased=False), 0.0))
    return float(value / mmd_analytic_threshold(min(len(x), len(y)), alpha))


def _ecdf_gap(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points of ``xs ∪ ys`` (sorted) and ``|F_x - F_y|`` right after each of them."""
    grid = np.sort(np.concatenate([xs, ys]))
    fx = np.searchsorted(np.sort(xs), grid, side="right") / len(xs)
    fy = np.searchsorted(np.sort(ys), grid, side="right") / len(ys)
    return grid, np.abs(fx - fy)


def ks_per_dimension(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-sample Kolmogorov–Smirnov statistic ``sup_t |F_x(t) - F_y(t)|`` of every dimension."""
    x, y = _pair(x, y)
    return np.array([_ecdf_gap(x[:, j], y[:, j])[1].max() for j in range(x.shape[1])])


def wasserstein_per_dimension(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1-Wasserstein distance ``∫ |F_x(t) - F_y(t)| dt`` of every dimension."""
    x, y = _pair(x, y)
    out = np.empty(x.shape[1])
    for j in range(x.shape[1]):
        grid, gap = _ecdf_gap(x[:, j], y[:, j])
        out[j] = float(np.sum(gap[:-1] * np.diff(grid)))
    return out


def _reduce(values: np.ndarray, reduction: str) -> float:
    check_choice("reduction", reduction, _REDUCTIONS)
    return float(values.mean() if reduction == "mean" else values.max())


def ks(x: np.ndarray, y: np.ndarray, reduction: str = "mean") -> float:
    """Per-dimension KS statistics reduced by ``"mean"`` or ``"max"``."""
    return _reduce(ks_per_dimension(x, y), reduction)


def wasserstein(x: np.ndarray, y: np.ndarray, reduction: str = "mean") -> float:
    """Per-dimension 1-Wasserstein distances reduced by ``"mean"`` or ``"max"``."""
    return _reduce(wasserstein_per_dimension(x, y), reduction)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mmd": mmd,
    "mmd_pvalue": mmd_pvalue,
    "mmd_analytic": mmd_analytic,
    "ks": ks,
    "wasserstein": wasserstein,
}
"""Name → metric; :class:`~lightning_modyn.triggers.drift.DataDriftTrigger` accepts a name or any such callable."""


def get_metric(metric: str | Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray], float]:
    """The metric function named ``metric``: a built-in name, or a callable ``(reference, current) -> float``
    given itself, by import path (``mymodels.energy_distance``) or by class_path."""
    metric = resolve_callable("metric", metric, sorted(METRICS))
    return metric if callable(metric) else METRICS[metric]
