"""The one-line opt-in that applies selection weights in a loss: ``loss = weighted_mean(losses, batch)``.

Selection callbacks attach weights to the batch they shrink: importance weights ``1/(N p)`` for sampling
strategies, coreset weights for CRAIG or GradMatch, 1 for top-k rules, times the presampling weights a
``ModynDataModule`` batch carries (0 for DDP padding). A ``training_step`` that ignores them trains on the
selected samples with equal weights.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_modyn.data.batch import KeyedBatch, keyed_batch

_latest: tuple[int, torch.Tensor] | None = None  # (id of the batch, its weights) for batches without attributes
_latest_read = False  # whether selection_weights() gave those weights out


def set_batch_weights(batch: Any, weights: torch.Tensor) -> None:
    """Remember the selection weights of a batch that cannot carry them (a plain tuple from a DataLoader), and
    start noting whether the training step reads the weights of ``batch``."""
    global _latest, _latest_read
    _latest = None if isinstance(batch, KeyedBatch) else (id(batch), weights)
    _latest_read = False
    if isinstance(batch, KeyedBatch):
        batch.weights_read = False


def selection_weights(batch: Any) -> torch.Tensor | None:
    """The weights of the samples in ``batch``: ``batch.weights`` for a ``ModynDataModule`` batch, the weights a
    selection callback set for this batch, or None (no weights: every sample counts 1)."""
    global _latest_read
    found = keyed_batch(batch)  # also the tuple that DDP rebuilt from a KeyedBatch
    if found is not None:
        return found.weights
    if _latest is not None and _latest[0] == id(batch):
        _latest_read = True
        return _latest[1]
    return None


def weights_ignored(batch: Any, weights: torch.Tensor) -> bool:
    """Whether the training step that just ran on ``batch`` ignored ``weights`` that mattered: they differ between
    the samples it trained on (equal weights change nothing a plain mean does), and it never read them."""
    w = weights.detach().float()
    if len(w) < 2 or float(w.max() - w.min()) <= 1e-6 * max(float(w.abs().max()), 1e-12):
        return False
    read = batch.weights_read if isinstance(batch, KeyedBatch) else (_latest is not None and _latest[0] == id(batch)
                                                                    and _latest_read)
    return not read


IGNORED_WEIGHTS_HELP = (
    "the training step ignored the selection weights of {what} (they differ between samples: {why}), so it trained "
    "on a subset that those weights were to correct; apply them with one line, "
    "`loss = weighted_mean(F.cross_entropy(logits, y, reduction='none'), batch)` "
    "(from lightning_modyn.selection.downsampling import weighted_mean), or, where the step cannot apply them, use a "
    "strategy whose weights are all 1 (Uniform(), or rule='proportional', Loss's and GradNorm's default)")


def weighted_mean(losses: torch.Tensor, batch: Any) -> torch.Tensor:
    """Mean of per-sample ``losses`` weighted by the batch's selection weights (a plain mean without weights).

    The sum of weighted losses is divided by the number of samples (not by the sum of weights), so importance
    weights keep the estimate unbiased.

    >>> b = KeyedBatch((None,), keys=torch.tensor([1, 2]), weights=torch.tensor([0.5, 1.5]))
    >>> weighted_mean(torch.tensor([2.0, 4.0]), b).item()
    3.5
    """
    if losses.ndim != 1:
        raise ValueError(f"weighted_mean needs one loss per sample (reduction='none'), got shape "
                         f"{tuple(losses.shape)}")
    weights = selection_weights(batch)
    if weights is None:
        return losses.mean()
    if len(weights) != len(losses):
        raise ValueError(f"{len(losses)} losses for a batch of {len(weights)} weighted samples")
    return (losses * weights.to(losses.dtype)).sum() / len(losses)
