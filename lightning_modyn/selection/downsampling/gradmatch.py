"""GradMatch: a small weighted subset whose weighted gradient sum matches the full gradient.

Training on a weighted subset follows full-data training closely when, at the current model, the subset's
weighted gradient equals the full gradient. GRAD-MATCH finds such a subset by orthogonal matching pursuit
(OMP): repeatedly add the sample whose gradient best explains the residual ``sum_i g_i - sum_{j in S} w_j g_j``,
then refit all weights of the subset by ridge-regularised least squares (``lam * |w|^2``; nonnegative least
squares when ``nonnegative``). The ridge term keeps the refit well posed and the weights moderate.

Cost: ``O(N * D)`` per step for the correlations (float32, on the input's device) plus a ``t x t`` refit in
float64 (``O(t^3)``, warm-started active-set NNLS), i.e. ``O(k * N * D + k^4)`` in the worst case: meant for ``k``
up to a few thousand per call; memory ``O(N * D + k * D + k^2)``.

References: Killamsetty, Sivasubramanian, Ramakrishnan, De, Iyer, "GRAD-MATCH: Gradient Matching based Data
Subset Selection for Efficient Deep Model Training", ICML 2021; Pati, Rezaiifar & Krishnaprasad, "Orthogonal
matching pursuit", 1993; Lawson & Hanson, "Solving Least Squares Problems", 1974 (NNLS).
"""

from __future__ import annotations

import math

import torch

from lightning_modyn._checks import check_features, check_int, check_number


def gradmatch(gradients: torch.Tensor, k: int, lam: float = 0.5, nonnegative: bool = True, tol: float = 1e-4,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` samples and weights whose weighted gradient matches the mean gradient (OMP, ridge refit).

    The matching problem is the paper's, in its scale: find ``w`` (``>= 0`` when ``nonnegative``) on at most
    ``k`` samples minimising ``|sum_{j in S} w_j g_j - sum_i g_i|^2 + lam * |w|^2``, so ``lam`` means what it
    means in GRAD-MATCH (its effect shrinks as ``N`` or the gradient norms grow; ``lam = 0`` is plain least
    squares). Each step adds the sample that alone would reduce this regularised objective most: given the
    residual ``r``, adding ``g`` with the best weight ``<g, r> / (|g|^2 + lam)`` reduces it by
    ``<g, r>^2 / (|g|^2 + lam)``, so samples are ranked by that (with ``nonnegative``, only positive
    correlations count). With ``lam = 0`` this is OMP on a normalised dictionary (rank by ``<g, r> / |g|``);
    with a ridge, that rank would favour tiny gradients, which the ridge then stops from carrying any weight
    (a trained model's matching error was 1.5x worse with it; docs/selection.md). The reference
    implementation ranks by the raw ``<g, r>``, which favours large gradients. The returned weights are rescaled to the common
    convention, ``(1/k) * sum_j weights_j g_j ≈ (1/N) * sum_i g_i``.

    Early stop and fill: matching stops after ``t < k`` samples when the residual norm is at most
    ``tol * |sum_i g_i|`` (matched) or, with ``nonnegative``, when no sample has a positive correlation with the
    residual (the nonnegative fit over *all* samples is reached). The other ``k - t`` slots are then filled with
    a uniform random sample of the unchosen samples, weight 1 each, and the matched part is weighted by its share
    of the budget, ``t / k``: the result is a mixture of the matched estimate (``t`` samples) and a random-sample
    estimate (``k - t`` samples) of the mean gradient, both estimating it, so the weights keep their meaning and
    the whole budget trains. (The reference implementation also fills at random, with weight 1 but without
    reweighting the matched part.)

    Parameters
    ----------
    gradients
        ``(N, D)`` per-sample gradient embeddings (e.g. last-layer gradients); float32 on their device.
    k
        How many samples, ``>= 1``; ``k >= N`` returns ``arange(N)`` with weights 1.
    lam
        Ridge weight of the refit, ``>= 0``.
    nonnegative
        Constrain the weights to ``>= 0`` (NNLS refit); ``False`` allows negative weights.
    tol
        Relative residual norm at which matching stops, ``>= 0``.
    generator
        Random source of the fill (only used when matching stops early).

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        ``indices`` (``(k,)`` long, distinct; matched samples first, in OMP order, then fillers) and ``weights``
        (``(k,)`` float32: matched ``w_j * t / N``, fillers 1). Weights are ``>= 0`` unless
        ``nonnegative=False``; a matched sample may end with weight 0 when a later refit drops it.

    Examples
    --------
    The mean gradient is ``(g_0 + g_1) / 4`` (the other rows cancel out): both are found, each with weight
    ``1 * 2 / 4``.

    >>> g = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, -3.0]])
    >>> idx, w = gradmatch(g, 2, lam=0.0)
    >>> sorted(idx.tolist()), [round(x, 4) for x in w.tolist()]
    ([0, 1], [0.5, 0.5])
    """
    g = check_features(gradients, "gradients")
    k = check_int("k", k, 1)
    lam = check_number("lam", lam, 0)
    tol = check_number("tol", tol, 0)
    if not isinstance(nonnegative, bool):
        raise ValueError(f"nonnegative must be True or False, got {nonnegative!r}")
    n, device = g.shape[0], g.device
    if k >= n:
        return torch.arange(n, device=device), torch.ones(n, device=device)

    picks, w = _omp(g, k, lam, nonnegative, tol)
    t = len(picks)
    indices = torch.tensor(picks, dtype=torch.long, device=device)
    weights = (w * (t / n)).to(device=device, dtype=torch.float32)
    if t < k:
        rest = torch.ones(n, dtype=torch.bool, device=device)
        rest[indices] = False
        rest = torch.nonzero(rest).flatten()
        rng_device = generator.device if generator is not None else torch.device("cpu")
        fill = rest[torch.randperm(len(rest), generator=generator, device=rng_device)[: k - t].to(device)]
        indices = torch.cat([indices, fill])
        weights = torch.cat([weights, torch.ones(k - t, device=device)])
    return indices, weights


def _omp(g: torch.Tensor, k: int, lam: float, nonnegative: bool, tol: float) -> tuple[list[int], torch.Tensor]:
    """OMP with ridge (NN)LS refits: the chosen rows and their weights in the sum scale (``sum_S w g ≈ sum g``)."""
    n, device = g.shape[0], g.device
    work = torch.float64 if device.type != "mps" else torch.float32
    target = g.to(work).sum(dim=0)
    stop = tol * float(target.norm())
    # a sample's own reduction of the regularised residual is <g, r>^2 / (|g|^2 + lam): rank by it
    inv_cost = 1.0 / (g.pow(2).sum(dim=1) + max(lam, torch.finfo(torch.float32).tiny))
    gram = torch.zeros(k, k, dtype=work, device=device)  # G_S G_S^T
    rhs = torch.zeros(k, dtype=work, device=device)  # G_S target
    atoms = torch.zeros(0, g.shape[1], dtype=work, device=device)  # G_S
    chosen = torch.zeros(n, dtype=torch.bool, device=device)
    picks: list[int] = []
    w = torch.zeros(0, dtype=work, device=device)
    residual = target
    for t in range(k):
        if float(residual.norm()) <= stop:
            break
        corr = g @ residual.to(torch.float32)
        if nonnegative:
            corr = corr.clamp(min=0.0)  # only a positive weight is allowed: a negative correlation cannot help
        score = (corr.square() * inv_cost).masked_fill(chosen, -math.inf)
        j = int(torch.argmax(score))
        if not float(score[j]) > 0:  # nothing left can reduce the residual (with a nonnegative weight)
            break
        atom = g[j].to(work)
        gram[t, :t] = gram[:t, t] = atoms @ atom
        gram[t, t] = atom @ atom
        rhs[t] = atom @ target
        atoms = torch.cat([atoms, atom[None]])
        picks.append(j)
        chosen[j] = True
        system = _ridge(gram[: t + 1, : t + 1], lam)
        if nonnegative:
            w = _nnls(system, rhs[: t + 1], torch.cat([w, w.new_zeros(1)]))
        else:
            w = _spd_solve(system, rhs[: t + 1])
        residual = target - w @ atoms
    return picks, w


def _ridge(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """``gram + lam * I``, plus a relative 1e-12 jitter that keeps the system solvable when atoms are collinear."""
    system = gram.clone()
    system.diagonal().add_(lam + 1e-12 * float(gram.diagonal().mean()))
    return system


def _spd_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a^-1 b`` for a symmetric positive definite ``a`` (Cholesky; LU if rounding made ``a`` indefinite)."""
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(b[:, None], factor)[:, 0]
    return torch.linalg.solve(a, b)


def _nnls(a: torch.Tensor, c: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``argmin_{w >= 0} w'aw/2 - c'w`` for a positive definite ``a`` (Lawson-Hanson active set, Gram form),
    warm-started from the feasible ``w``."""
    t = len(c)
    passive = w > 0
    w = w.clamp(min=0.0)
    threshold = 1e-12 * float(c.abs().max()) if t else 0.0
    for _ in range(3 * t + 10):
        while True:  # solve on the passive set; step back into the feasible region while that is infeasible
            s = torch.zeros_like(w)
            if passive.all():
                s = _spd_solve(a, c)
            elif passive.any():
                p = torch.nonzero(passive).flatten()
                s[p] = _spd_solve(a[p][:, p], c[p])
            bad = passive & (s <= 0)
            if not bad.any():
                break
            b = torch.nonzero(bad).flatten()
            ratios = w[b] / (w[b] - s[b])
            w = w + ratios.min() * (s - w)
            passive[b[torch.argmin(ratios)]] = False
            passive &= w > 0
            w = torch.where(passive, w, 0.0)
        w = s
        grad = c - a @ w  # the negative gradient: positive entries off the passive set can still improve
        free = ~passive & (grad > threshold)
        if not free.any():
            break
        passive[torch.argmax(grad.masked_fill(~free, -math.inf))] = True
    return w
