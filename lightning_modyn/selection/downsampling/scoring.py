"""What a downsampling strategy sees: one scoring forward pass over a set of samples.

A :class:`ScoringBatch` holds, for ``N`` samples, the model's outputs, the targets, the per-sample loss and (when a
strategy needs them) the embeddings the model's last layer receives. Gradients with respect to the last layer have
a closed form from these, so gradient-based strategies need no backward pass:

* cross-entropy: ``dL/dz = softmax(z) - onehot(y)``;
* binary cross-entropy on one logit: ``dL/dz = sigmoid(z) - y``;
* mean squared error: ``dL/dz = 2 (z - y) / C``;
* a loss of the user's own (a function ``loss(logits, targets) -> (N,)`` per-sample losses, by import path in a
  recipe): ``dL/dz`` by autograd with respect to the outputs only, which costs one small backward through the
  loss, not through the model.

and for a last layer ``z = W h + b`` the per-sample gradient is ``(dL/dz) h^T`` for ``W`` and ``dL/dz`` for ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Union

import torch
import torch.nn.functional as F

from lightning_modyn._checks import resolve_callable

LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")

#: A per-sample loss of the user's own: ``(logits (N, C), targets) -> (N,)`` losses, one per sample, each depending
#: on that sample's outputs only (no reduction over the batch).
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossSpec = Union[str, LossFunction]


def check_loss(loss: Any) -> LossSpec:
    """``loss`` as the scoring pass takes it: ``"auto"``, a built-in name, a callable, or a callable given as an
    import path (``mypackage.losses.focal``) or a ``class_path`` of a callable class; a ``ValueError`` naming the
    option otherwise.

    >>> check_loss("mse")
    'mse'
    >>> check_loss("hinge")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: loss must be a callable or one of ('auto', 'cross_entropy', ...), got 'hinge'
    """
    return resolve_callable("loss", loss, ("auto",) + LOSSES)


def resolve_loss(loss: LossSpec, logits: torch.Tensor) -> LossSpec:
    """The loss to use: ``"auto"`` is cross-entropy for several outputs and binary cross-entropy for one; a name
    or a callable stays as it is."""
    loss = check_loss(loss)
    if loss == "auto":
        return "binary_cross_entropy" if logits.ndim == 1 or logits.shape[1] == 1 else "cross_entropy"
    return loss


def loss_name(loss: LossSpec) -> str:
    """How a loss is named in messages and records: the built-in name, or the function's import path."""
    if isinstance(loss, str):
        return loss
    target = loss if hasattr(loss, "__qualname__") else type(loss)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(loss))}"


def per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, loss: LossSpec) -> torch.Tensor:
    """The loss of every sample (no reduction), shape ``(N,)``; a callable ``loss`` is called and its result
    checked (one finite value per sample), so that a mean-reducing loss is refused instead of scoring every
    sample alike.

    >>> per_sample_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), "cross_entropy")
    tensor([0.6931])
    """
    if callable(loss):
        values = loss(logits.float(), targets)
        if not isinstance(values, torch.Tensor) or values.shape != (len(logits),):
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"loss {loss_name(loss)} must return one loss per sample, a tensor of shape "
                             f"({len(logits)},) (reduction='none'), got {shape}; it gets the logits as "
                             f"{tuple(logits.shape)} and the targets as {tuple(targets.shape)}")
        if not torch.isfinite(values.detach()).all():
            raise ValueError(f"loss {loss_name(loss)} returned a loss that is NaN or infinite")
        return values.float()
    if loss == "cross_entropy":
        return F.cross_entropy(logits.float(), targets.long(), reduction="none")
    if loss == "binary_cross_entropy":
        return F.binary_cross_entropy_with_logits(logits.float().reshape(-1), targets.float().reshape(-1),
                                                  reduction="none")
    if loss == "mse":
        diff = logits.float().reshape(len(logits), -1) - targets.float().reshape(len(logits), -1)
        return diff.pow(2).mean(1)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


@dataclass
class ScoringBatch:
    """Model outputs for ``N`` samples, everything detached.

    Attributes:
        logits: ``(N, C)`` outputs (``C = 1`` for one binary logit).
        targets: ``(N,)`` labels (or ``(N, C)`` regression targets), None when the batch has none.
        losses: ``(N,)`` per-sample loss.
        loss: The loss the scores refer to (``cross_entropy``, ``binary_cross_entropy``, ``mse``, ``"none"`` for
            an unscored batch, or the user's per-sample loss function).
        embeddings: ``(N, D)`` inputs of the last layer, when a strategy asked for them (last-layer gradients are
            computed from them).
        keys: ``(N,)`` store keys, when the batch came from a ``ModynDataModule``.
        representations: ``(N, E)`` the embeddings that embedding-based strategies compare, when they differ from
            the last layer's inputs: the output of the callback's ``embedding_layer``, else the model's
            ``embed()`` (see :meth:`sample_embeddings`).
    """

    logits: torch.Tensor
    targets: torch.Tensor | None
    losses: torch.Tensor
    loss: LossSpec
    embeddings: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    representations: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.logits)

    @classmethod
    def from_outputs(cls, logits: torch.Tensor, targets: torch.Tensor | None, loss: LossSpec = "auto",
                     embeddings: torch.Tensor | None = None, keys: torch.Tensor | None = None,
                     representations: torch.Tensor | None = None) -> "ScoringBatch":
        """Compute the per-sample losses from outputs and targets."""
        logits = logits.detach().float()
        logits = logits.reshape(len(logits), -1)
        loss = resolve_loss(loss, logits)
        if targets is None:
            losses = torch.zeros(len(logits), device=logits.device)
        else:
            targets = targets.detach()
            losses = per_sample_loss(logits, targets, loss)
        emb = None if embeddings is None else embeddings.detach().float().reshape(len(logits), -1)
        rep = None if representations is None else representations.detach().float().reshape(len(logits), -1)
        return cls(logits, targets, losses, loss, emb, None if keys is None else keys.detach(), rep)

    @classmethod
    def unscored(cls, n: int, targets: torch.Tensor | None = None, keys: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> "ScoringBatch":
        """``n`` samples without a model pass (for strategies that need none, e.g. uniform or RS2)."""
        return cls(torch.zeros(n, 0, device=device), targets, torch.zeros(n, device=device), "none", None, keys)

    # ------------------------------------------------------------------ derived quantities
    def probabilities(self) -> torch.Tensor:
        """``(N, C)`` class probabilities; one binary logit becomes two columns ``(1 - p, p)``."""
        if self.loss == "binary_cross_entropy" or self.logits.shape[1] == 1:
            p = torch.sigmoid(self.logits[:, 0])
            return torch.stack([1 - p, p], dim=1)
        return torch.softmax(self.logits, dim=1)

    def _require_targets(self, what: str) -> torch.Tensor:
        if self.targets is None:
            raise ValueError(f"{what} needs targets: the batches have no labels (expected (x, y, ...))")
        return self.targets

    def output_gradients(self) -> torch.Tensor:
        """``(N, C)`` gradient of each sample's loss with respect to the model's outputs (closed form)."""
        y = self._require_targets("the gradient of the loss")
        if self.loss == "cross_entropy":
            onehot = F.one_hot(y.long(), self.logits.shape[1]).float()
            return torch.softmax(self.logits, dim=1) - onehot
        if self.loss == "binary_cross_entropy":
            return torch.sigmoid(self.logits) - y.float().reshape(-1, 1)
        if callable(self.loss):
            return self._autograd_output_gradients(y)
        return 2 * (self.logits - y.float().reshape(len(self), -1)) / self.logits.shape[1]

    def _autograd_output_gradients(self, y: torch.Tensor) -> torch.Tensor:
        """The gradient of a user's loss with respect to the outputs: the gradient of the summed losses, which is
        each sample's own gradient because a per-sample loss depends on that sample's outputs only."""
        with torch.inference_mode(False), torch.enable_grad():  # also inside a caller's inference_mode
            logits = self.logits.detach().clone().requires_grad_(True)
            losses = per_sample_loss(logits, y.clone(), self.loss)
            grad = (torch.autograd.grad(losses.sum(), logits, allow_unused=True)[0] if losses.requires_grad
                    else None)
        if grad is None:
            raise ValueError(f"loss {loss_name(self.loss)} does not depend on the model's outputs: its gradient, "
                             "which gradient-based strategies score, is undefined")
        return grad.detach()

    def _require_embeddings(self, what: str) -> torch.Tensor:
        if self.embeddings is None:
            raise ValueError(f"{what} needs the embeddings the last layer sees; the strategy must declare "
                             "needs_embeddings = True (last-layer gradients) or needs_representations = True "
                             "(embeddings to compare samples by)")
        return self.embeddings

    def sample_embeddings(self, what: str) -> torch.Tensor:
        """``(N, E)`` the embeddings ``what`` (a strategy) compares samples by: :attr:`representations` where the
        scoring pass took them (a named ``embedding_layer`` or the model's ``embed()``), else the last layer's
        inputs."""
        if self.representations is not None:
            return self.representations
        return self._require_embeddings(what)

    def last_layer_gradients(self) -> torch.Tensor:
        """``(N, C * (D + 1))`` per-sample gradient of the last layer's weight and bias, flattened."""
        g = self.output_gradients()
        h = self._require_embeddings("last-layer gradients")
        weight = (g.unsqueeze(2) * h.unsqueeze(1)).reshape(len(self), -1)
        return torch.cat([weight, g], dim=1)

    def last_layer_gradient_norms(self) -> torch.Tensor:
        """``(N,)`` norm of :meth:`last_layer_gradients` without building them: ``|g| sqrt(|h|^2 + 1)``."""
        g = self.output_gradients()
        h = self._require_embeddings("last-layer gradient norms")
        return g.norm(dim=1) * torch.sqrt(h.pow(2).sum(1) + 1)

    # ------------------------------------------------------------------ structure
    def subset(self, index: torch.Tensor) -> "ScoringBatch":
        """The samples at ``index`` (a tensor of positions or a boolean mask)."""
        return replace(self, **{f.name: _take(getattr(self, f.name), index) for f in fields(self) if f.name != "loss"})

    @staticmethod
    def cat(parts: list["ScoringBatch"]) -> "ScoringBatch":
        """Concatenate batches scored with the same loss."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        merged = {}
        for f in fields(first):
            if f.name == "loss":
                continue
            values = [getattr(p, f.name) for p in parts]
            merged[f.name] = None if any(v is None for v in values) else torch.cat(values)
        return ScoringBatch(loss=first.loss, **merged)

    def to(self, device: torch.device | str) -> "ScoringBatch":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})


def _take(value: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if value is None else value[index.to(value.device)]
