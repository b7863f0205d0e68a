"""Drift metrics against hand computations on tiny arrays, and their permutation / analytic test variants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightning_modyn.triggers import drift_metrics as dm


def k(a: float, b: float, sigma: float) -> float:
    return math.exp(-((a - b) ** 2) / (2 * sigma**2))


def test_median_bandwidth_by_hand():
    # pairwise distances of {0, 1, 3}: 1, 3, 2 -> median 2
    assert dm.median_bandwidth(np.array([[0.0], [1.0], [3.0]])) == 2.0
    # all points equal: fall back to 1
    assert dm.median_bandwidth(np.zeros((4, 2))) == 1.0


def test_mmd_matches_hand_computation():
    x, y = [0.0, 1.0], [0.0, 2.0]
    # pooled {0, 1, 0, 2}: distances 1, 0, 2, 1, 1, 2 -> median 1
    s = 1.0
    kxx = k(0, 1, s)  # the one off-diagonal pair (each counted twice, divided by 2·1)
    kyy = k(0, 2, s)
    kxy = (k(0, 0, s) + k(0, 2, s) + k(1, 0, s) + k(1, 2, s)) / 4
    unbiased = kxx + kyy - 2 * kxy
    biased = (2 + 2 * k(0, 1, s)) / 4 + (2 + 2 * k(0, 2, s)) / 4 - 2 * kxy
    xa, ya = np.array(x)[:, None], np.array(y)[:, None]
    assert dm.mmd(xa, ya) == pytest.approx(unbiased)
    assert dm.mmd(xa, ya, unbiased=False) == pytest.approx(biased)
    # explicit bandwidth
    s = 2.0
    kxy = (k(0, 0, s) + k(0, 2, s) + k(1, 0, s) + k(1, 2, s)) / 4
    assert dm.mmd(xa, ya, bandwidth=2.0) == pytest.approx(k(0, 1, s) + k(0, 2, s) - 2 * kxy)


def test_mmd_two_dimensional_by_hand():
    x = np.array([[0.0, 0.0], [1.0, 1.0]])
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    # squared distances: x0-x1 2, y0-y1 2, x-y all 1; with bandwidth 1: k = exp(-d²/2)
    expected = math.exp(-1) + math.exp(-1) - 2 * math.exp(-0.5)
    assert dm.mmd(x, y, bandwidth=1.0) == pytest.approx(expected)


def test_ks_matches_hand_computation():
    x = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    y = np.array([[2.5, 0.0], [3.5, 0.0]])
    # dim 0: F_x - F_y at 1: 1/3, at 2: 2/3, at 2.5: 2/3 - 1/2, at 3: 1 - 1/2 -> sup 2/3; dim 1: identical -> 0
    np.testing.assert_allclose(dm.ks_per_dimension(x, y), [2 / 3, 0.0])
    assert dm.ks(x, y) == pytest.approx(1 / 3)
    assert dm.ks(x, y, reduction="max") == pytest.approx(2 / 3)


def test_wasserstein_matches_hand_computation():
    x = np.array([[0.0], [1.0], [2.0]])
    y = np.array([[0.5], [2.5]])
    # ∫|F_x - F_y|: [0,.5) 1/3·.5, [.5,1) |1/3-1/2|·.5, [1,2) |2/3-1/2|·1, [2,2.5) |1-1/2|·.5
    expected = (1 / 3) * 0.5 + (1 / 6) * 0.5 + (1 / 6) * 1 + 0.5 * 0.5
    assert dm.wasserstein(x, y) == pytest.approx(expected)
    # equal sizes: mean absolute difference of the sorted samples
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 3)), rng.normal(1, 1, size=(50, 3))
    np.testing.assert_allclose(dm.wasserstein_per_dimension(a, b),
                               np.abs(np.sort(a, axis=0) - np.sort(b, axis=0)).mean(axis=0))


def test_mmd_pvalue_matches_slow_permutations():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 2)), rng.normal(0.5, 1, size=(9, 2))
    z = np.concatenate([x, y])
    kern = dm.rbf_kernel(z, dm.median_bandwidth(z))
    observed = dm._mmd2_from_kernel(kern, 12, True)
    perm_rng = np.random.default_rng(7)
    count = 0
    for _ in range(40):
        p = perm_rng.permutation(21)
        xi = np.sort(p[:12])  # rows labelled "x"; the order inside a group does not matter
        yi = np.setdiff1d(np.arange(21), xi)
        order = np.concatenate([xi, yi])
        count += dm._mmd2_from_kernel(kern[np.ix_(order, order)], 12, True) >= observed - 1e-12
    assert dm.mmd_pvalue(x, y, num_permutations=40, seed=7) == pytest.approx((1 + count) / 41)


def test_mmd_pvalue_and_analytic_separate_same_from_shifted():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(60, 2)), rng.normal(size=(60, 2)), rng.normal(3, 1, size=(60, 2))
    assert dm.mmd_pvalue(a, b, num_permutations=50) > 0.05
    assert dm.mmd_pvalue(a, c, num_permutations=50) == pytest.approx(1 / 51)
    assert dm.mmd_analytic(a, b) < 1.0 < dm.mmd_analytic(a, c)
    m, alpha = 60, 0.01
    assert dm.mmd_analytic_threshold(m, alpha) == pytest.approx(
        math.sqrt(2 / m) * (1 + math.sqrt(2 * math.log(1 / alpha))))


def test_metric_table_and_errors():
    assert set(dm.METRICS) == {"mmd", "mmd_pvalue", "mmd_analytic", "ks", "wasserstein"}
    assert dm.get_metric("ks") is dm.ks
    assert dm.get_metric(len) is len
    with pytest.raises(ValueError, match=r"metric must be .*'ks'.*'mmd'"):
        dm.get_metric("energy")
    with pytest.raises(ValueError, match="same number of dimensions"):
        dm.mmd(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        dm.mmd(np.zeros((1, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'max'\)"):
        dm.ks(np.zeros((3, 1)), np.ones((3, 1)), reduction="sum")
    with pytest.raises(ValueError, match="alpha"):
        dm.mmd_analytic_threshold(10, alpha=1.5)
