"""Greedy k-center: a subset whose balls of smallest common radius cover every sample's embedding.

The core-set view of active learning and data selection: a model trained on a subset that covers the whole set
closely (every sample near a selected one in embedding space) does almost as well as one trained on the whole
set. Picking the ``k`` centres minimising the covering radius is NP-hard; the farthest-first greedy (repeatedly
add the sample farthest from its nearest centre) is a 2-approximation (Gonzalez 1985).

Only the ``(N,)`` vector of each sample's distance to its nearest centre is kept; distances are computed in
blocks of ``block_size`` rows, so memory is ``O(N + block_size * D + block_size^2)`` and time ``O(N * D * k)``.

References: Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach", ICLR 2018;
Gonzalez, "Clustering to minimize the maximum intercluster distance", Theoretical Computer Science 1985.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_modyn._checks import check_features, check_int


def kcenter_greedy(embeddings: torch.Tensor, k: int, generator: torch.Generator | None = None,
                   initial: Any = None, block_size: int = 4096) -> torch.Tensor:
    """The ``k`` samples chosen farthest-first (Euclidean distance), in selection order.

    Parameters
    ----------
    embeddings
        ``(N, D)`` features (e.g. penultimate-layer embeddings); computed in float32 on their device.
    k
        How many samples to return, ``>= 1``; ``k >= N`` returns ``arange(N)``.
    generator
        Draws the first centre when ``initial`` is not given (deterministic given a seeded generator).
    initial
        Optional distinct indices of centres already chosen (e.g. samples already labelled or kept). They are
        the first ``len(initial)`` entries of the result, in the given order, and count towards ``k``; so
        ``len(initial) <= k``. To get ``m`` *new* samples, ask for ``k = len(initial) + m`` and drop the prefix.
    block_size
        Rows (and centres) per distance block, ``>= 1``: bounds the working memory.

    Returns
    -------
    torch.Tensor
        ``(min(k, N),)`` distinct long indices on the embeddings' device. Ties (equal distances) go to the lowest
        index; once every sample coincides with a centre, the remaining picks are the lowest unchosen indices.

    Examples
    --------
    Points on a line: after the given first centre, the farthest point, then the point midway between them.

    >>> x = torch.tensor([[0.0], [1.0], [2.0], [5.0], [10.0]])
    >>> kcenter_greedy(x, 3, initial=[0])
    tensor([0, 4, 3])
    >>> kcenter_greedy(x, 2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2])
    """
    x = check_features(embeddings, "embeddings")
    k = check_int("k", k, 1)
    block_size = check_int("block_size", block_size, 1)
    n, device = x.shape[0], x.device

    seeds = _check_initial(initial, n, k)
    if k >= n:
        return torch.arange(n, device=device)

    nearest = torch.full((n,), float("inf"), device=device)  # squared distance to the nearest centre
    chosen = torch.zeros(n, dtype=torch.bool, device=device)
    if seeds:
        centres = torch.tensor(seeds, dtype=torch.long, device=device)
        for lo in range(0, n, block_size):
            rows = x[lo:lo + block_size]
            for c in centres.split(block_size):
                d = torch.cdist(rows, x[c], compute_mode="donot_use_mm_for_euclid_dist").square_()
                torch.minimum(nearest[lo:lo + block_size], d.min(dim=1).values, out=nearest[lo:lo + block_size])
        chosen[centres] = True
        picks = list(seeds)
    else:
        rng_device = generator.device if generator is not None else torch.device("cpu")
        first = int(torch.randint(n, (1,), generator=generator, device=rng_device))
        _relax(x, nearest, first, block_size)
        chosen[first] = True
        picks = [first]

    while len(picks) < k:
        # chosen samples get -1 so that duplicates of a centre (distance 0) are still picked before them
        j = int(torch.argmax(nearest.masked_fill(chosen, -1.0)))
        picks.append(j)
        chosen[j] = True
        _relax(x, nearest, j, block_size)
    return torch.tensor(picks, dtype=torch.long, device=device)


def _check_initial(initial: Any, n: int, k: int) -> list[int]:
    if initial is None:
        return []
    try:
        seeds = torch.as_tensor(initial).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"initial must be None or a sequence of integer indices, got {initial!r}") from None
    if seeds.numel() and (seeds.is_floating_point() or seeds.is_complex() or seeds.dtype == torch.bool):
        raise ValueError(f"initial must hold integer indices, got dtype {seeds.dtype}")
    out = [int(i) for i in seeds.tolist()]
    if any(i < 0 or i >= n for i in out):
        raise ValueError(f"initial indices must lie in [0, {n}), got {out}")
    if len(set(out)) != len(out):
        raise ValueError(f"initial indices must be distinct, got {out}")
    if len(out) > k:
        raise ValueError(f"initial holds {len(out)} indices, more than k={k}")
    return out


def _relax(x: torch.Tensor, nearest: torch.Tensor, centre: int, block_size: int) -> None:
    """``nearest = min(nearest, |x - x[centre]|^2)``, block by block."""
    c = x[centre]
    for lo in range(0, x.shape[0], block_size):
        d = (x[lo:lo + block_size] - c).square_().sum(dim=1)
        torch.minimum(nearest[lo:lo + block_size], d, out=nearest[lo:lo + block_size])
