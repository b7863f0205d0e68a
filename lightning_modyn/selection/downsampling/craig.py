"""CRAIG: a weighted subset of medoids whose gradients approximate the full gradient.

If every sample's gradient is close to that of a selected "medoid", the full gradient is close to the sum of
the medoids' gradients weighted by how many samples each one stands for; the approximation error is bounded by
the sum of those distances. CRAIG minimises that bound approximately by maximising the facility-location
function on ``max_dist - dist`` similarities of per-sample gradient embeddings (typically the last layer's
gradient, cheap in closed form), then weighs each medoid by the size of its cluster.

The similarity matrix is dense, ``O(N^2)`` memory and ``O(N^2 * D)`` time, and greedy facility location costs
up to ``O(N^2 * k)``: partition large inputs first (the paper selects per class), a few thousand samples per
call.

References: Mirzasoleiman, Bilmes & Leskovec, "Coresets for Data-efficient Training of Machine Learning Models",
ICML 2020.
"""

from __future__ import annotations

import torch

from lightning_modyn._checks import check_features, check_int
from lightning_modyn.selection.downsampling.submodular import FacilityLocation, greedy_maximize, similarity_from_features


def craig(gradients: torch.Tensor, k: int, optimizer: str = "lazy", epsilon: float = 0.01,
          generator: torch.Generator | None = None, beta: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` medoids of the gradients (greedy facility location) and their cluster-size weights.

    Parameters
    ----------
    gradients
        ``(N, D)`` per-sample gradient embeddings, one class or partition; float32 on their device.
    k
        How many samples, ``>= 1``; ``k >= N`` returns ``arange(N)`` with weights 1.
    optimizer
        The greedy maximiser: ``"lazy"`` (exact greedy, default), ``"naive"`` (same result, slower),
        ``"approximate_lazy"`` (each pick within ``beta`` of the best) or ``"stochastic"`` (approximate, faster;
        uses ``epsilon`` and ``generator``).
    epsilon
        Stochastic greedy's accuracy, in ``(0, 1)``.
    generator
        Random source of the stochastic optimizer; the other optimizers are deterministic.
    beta
        Approximate lazy greedy's acceptance ratio, in ``(0, 1]``.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        ``indices`` (long, distinct, in greedy order) and ``weights`` (float32) ``= cluster_size * k / N``, where
        a medoid's cluster is the samples whose most similar medoid it is (ties to the earlier-selected medoid).
        The weights average 1, and the weighted mean of the medoids' gradients,
        ``(1/k) * sum_j w_j g_j``, estimates the mean gradient. A duplicate of an earlier medoid gets weight 0.

    Examples
    --------
    Two tight clusters of sizes 3 and 7: one medoid each (the larger cluster first), weighted 2*7/10 and 2*3/10.

    >>> g = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]] + [[5.0, 5.0]] * 6 + [[5.1, 5.0]])
    >>> idx, w = craig(g, 2)
    >>> idx.tolist(), [round(x, 4) for x in w.tolist()]
    ([3, 0], [1.4, 0.6])
    """
    g = check_features(gradients, "gradients")
    k = check_int("k", k, 1)
    n, device = g.shape[0], g.device
    if k >= n:
        return torch.arange(n, device=device), torch.ones(n, device=device)
    similarity = similarity_from_features(g, "euclidean")
    indices, _ = greedy_maximize(FacilityLocation(similarity), k, optimizer=optimizer, epsilon=epsilon,
                                 generator=generator, beta=beta)
    nearest = similarity[:, indices].argmax(dim=1)  # first maximum: ties go to the earlier-selected medoid
    sizes = torch.bincount(nearest, minlength=len(indices)).to(torch.float32)
    return indices, sizes * (len(indices) / n)
