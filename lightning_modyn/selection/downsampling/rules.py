"""Selection rules: per-sample scores -> ``(positions, weights)`` of the ``k`` samples to train on.

Weights follow one convention everywhere: the weighted *mean* of a quantity over the selected samples estimates its
mean over all ``N`` samples. For importance sampling with replacement (``p_i`` proportional to the score) the
weight ``1 / (N p_i)`` makes that estimate unbiased; deterministic rules (top-k) weigh every kept sample 1.
"""

from __future__ import annotations

import torch

from lightning_modyn.selection.pool import water_fill


def _check(scores: torch.Tensor, k: int, what: str) -> torch.Tensor:
    if scores.ndim != 1:
        raise ValueError(f"{what}: scores must be 1-D, got shape {tuple(scores.shape)}")
    if k < 1:
        raise ValueError(f"{what}: k must be >= 1, got {k}")
    if not torch.isfinite(scores).all():
        bad = int(torch.nonzero(~torch.isfinite(scores))[0])
        raise ValueError(f"{what}: score {bad} is {scores[bad].item()}; scores must be finite")
    return scores.float()


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest scores (ties: the earlier sample first), weight 1 each.

    >>> top_k(torch.tensor([0.1, 0.9, 0.5, 0.9]), 2)
    (tensor([1, 3]), tensor([1., 1.]))
    """
    scores = _check(scores, k, "top_k")
    k = min(k, len(scores))
    order = torch.sort(-scores, stable=True).indices[:k]
    return order, torch.ones(k, device=scores.device)


def importance_sample(scores: torch.Tensor, k: int, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` draws with replacement with ``p_i ∝ score_i``; weight ``1 / (N p_i)`` (unbiased for the mean).

    All-zero scores fall back to uniform draws. Scores must be >= 0.

    >>> idx, w = importance_sample(torch.tensor([0.0, 1.0, 3.0]), 100, torch.Generator().manual_seed(0))
    >>> sorted(set(idx.tolist())), sorted({round(x, 3) for x in w.tolist()})  # p = (0, 1/4, 3/4)
    ([1, 2], [0.444, 1.333])
    """
    scores = _check(scores, k, "importance_sample")
    if (scores < 0).any():
        raise ValueError(f"importance_sample: scores must be >= 0, got {scores.min().item()}")
    total = scores.sum()
    p = scores / total if total > 0 else torch.full_like(scores, 1.0 / len(scores))
    idx = torch.multinomial(p.cpu(), k, replacement=True, generator=generator).to(scores.device)
    return idx, 1.0 / (len(scores) * p[idx])


def proportional_sample(scores: torch.Tensor, k: int, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` distinct samples drawn with probability ∝ score (without replacement), weight 1.

    >>> idx, w = proportional_sample(torch.tensor([0.0, 1.0, 1.0, 0.0]), 2, torch.Generator().manual_seed(0))
    >>> sorted(idx.tolist()), w.tolist()
    ([1, 2], [1.0, 1.0])
    """
    scores = _check(scores, k, "proportional_sample")
    if (scores < 0).any():
        raise ValueError(f"proportional_sample: scores must be >= 0, got {scores.min().item()}")
    k = min(k, len(scores))
    positive = int((scores > 0).sum())
    if positive < k:  # multinomial without replacement needs k positive weights: keep every positive one first
        first = torch.nonzero(scores > 0).flatten()
        rest = torch.nonzero(scores <= 0).flatten()
        pick = torch.randperm(len(rest), generator=generator)[: k - positive].to(rest.device)
        return torch.cat([first, rest[pick]]), torch.ones(k, device=scores.device)
    idx = torch.multinomial(scores.cpu(), k, replacement=False, generator=generator).to(scores.device)
    return idx, torch.ones(k, device=scores.device)


def uniform_sample(n: int, k: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` distinct positions out of ``n``, uniformly, weight 1."""
    if k < 1:
        raise ValueError(f"uniform_sample: k must be >= 1, got {k}")
    k = min(k, n)
    return torch.randperm(n, generator=generator)[:k].to(device), torch.ones(k, device=device)


def per_class(targets: torch.Tensor, k: int, select) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``select(positions, quota) -> (chosen positions into positions, weights)`` within every class, with
    fair shares of ``k`` by water filling (as the balanced presampling policies split their budget); weights are rescaled by ``quota / class size`` so the convention
    (weighted mean estimates the mean over all samples) holds across classes.
    """
    labels = targets.reshape(len(targets), -1)[:, 0] if targets.ndim > 1 else targets
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    quotas = torch.as_tensor(water_fill(counts.tolist(), k))
    chosen, weights = [], []
    total = int(quotas.sum())
    for c in range(len(classes)):
        if quotas[c] == 0:
            continue
        members = torch.nonzero(inverse == c).flatten()
        idx, w = select(members, int(quotas[c]))
        chosen.append(members[idx])
        # class c holds counts[c]/N of the data but quotas[c]/total of the subset
        weights.append(w * (counts[c].float() / len(labels)) / (quotas[c].float() / total))
    return torch.cat(chosen), torch.cat(weights)
