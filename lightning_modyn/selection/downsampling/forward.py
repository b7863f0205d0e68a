"""The scoring forward pass: a batch and a model -> :class:`~.scoring.ScoringBatch`, without autograd.

The model runs in eval mode under ``torch.no_grad`` (no graph is kept, so a scoring pass costs less than a
training forward). Strategies that need embeddings get the *input of the last layer* through a forward hook on
that layer, found automatically as the ``nn.Linear`` whose output is the model's output, or named with
``last_layer``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightning_modyn.selection.downsampling.scoring import LossSpec, ScoringBatch, check_loss


class ScoringForward:
    """Runs ``module(batch[input_index])`` and packs outputs, targets, losses and (optionally) embeddings.

    Args:
        loss: ``"auto"``, ``"cross_entropy"``, ``"binary_cross_entropy"``, ``"mse"``, or a per-sample loss function
            ``loss(logits, targets) -> (N,)`` (also by import path) — what the scores measure.
        last_layer: Name of the model's last layer (as in ``named_modules()``, e.g. ``"head"`` or ``"top.2"``);
            None finds the ``nn.Linear`` whose output is the model's output.
        input_index, target_index: Where the input and the target are in a batch tuple (``x, y = batch``).
    """

    def __init__(self, loss: LossSpec = "auto", last_layer: str | None = None, input_index: int = 0,
                 target_index: int | None = 1) -> None:
        self.loss = check_loss(loss)
        self.last_layer = last_layer
        self.input_index = input_index
        self.target_index = target_index
        self._found: str | None = None

    def split(self, batch: Any) -> tuple[Any, torch.Tensor | None]:
        if not isinstance(batch, (tuple, list)):
            return batch, None
        x = batch[self.input_index]
        y = batch[self.target_index] if self.target_index is not None and len(batch) > self.target_index else None
        return x, y

    @torch.no_grad()
    def __call__(self, module: nn.Module, batch: Any, embeddings: bool = False,
                 keys: torch.Tensor | None = None) -> ScoringBatch:
        x, y = self.split(batch)
        was_training = module.training
        module.eval()
        try:
            if embeddings:
                logits, emb = self._with_embeddings(module, x)
            else:
                logits, emb = module(x), None
        finally:
            module.train(was_training)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"scoring needs the model's forward to return a tensor of outputs, got "
                            f"{type(logits).__name__}")
        return ScoringBatch.from_outputs(logits, y, self.loss, emb, keys)

    # ------------------------------------------------------------------ embeddings
    def _with_embeddings(self, module: nn.Module, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.last_layer is None and self._found is None:
            self._found = self._find_last_layer(module, x)
        name = self.last_layer or self._found
        layer = _submodule(module, name)
        captured: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
        try:
            logits = module(x)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"last_layer {name!r} was not called by {type(module).__name__}.forward; name the "
                               "module whose input is the embedding the strategy should use")
        return logits, captured[-1]

    def _find_last_layer(self, module: nn.Module, x: Any) -> str:
        outputs: dict[str, torch.Tensor] = {}
        handles = [m.register_forward_hook(lambda _m, _i, out, n=n: outputs.__setitem__(n, out))
                   for n, m in module.named_modules() if isinstance(m, nn.Linear)]
        try:
            logits = module(x)
        finally:
            for h in handles:
                h.remove()
        for name, out in outputs.items():
            if isinstance(out, torch.Tensor) and out.data_ptr() == logits.data_ptr() and out.numel() == logits.numel():
                return name
        linear = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(
            f"this strategy needs the embeddings the last layer of {type(module).__name__} sees, but no nn.Linear "
            f"produces the model's output. Pass last_layer='<module name>' to the selection callback "
            f"(nn.Linear modules: {linear or 'none'}), or end forward() with a linear layer")


def _submodule(module: nn.Module, name: str) -> nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in module.named_modules() if n]
        raise ValueError(f"last_layer={name!r}: {type(module).__name__} has no such module (modules: "
                         f"{names[:20]}{' ...' if len(names) > 20 else ''})") from None
