"""The scoring forward pass: a batch and a model -> :class:`~.scoring.ScoringBatch`, without autograd.

The model runs in eval mode under ``torch.no_grad`` (no graph is kept, so a scoring pass costs less than a
training forward). Strategies that need last-layer gradients get the *input of the last layer* through a forward
hook on that layer, found automatically as the ``nn.Linear`` whose output is the model's output, or named with
``last_layer``. Strategies that compare samples by their embeddings (k-center, coresets on ``"embeddings"``) get,
in this order: the output of the module named ``embedding_layer`` (a forward hook, in the same pass), the model's
``embed(x)`` if it defines one, else the input of the last layer, which is logged once.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import nn

from lightning_modyn._checks import check_module_name, check_submodule

from lightning_modyn.selection.downsampling.scoring import LossSpec, ScoringBatch, check_loss


log = logging.getLogger(__name__)


class ScoringForward:
    """Runs ``module(batch[input_index])`` and packs outputs, targets, losses and (optionally) embeddings.

    Args:
        loss: ``"auto"``, ``"cross_entropy"``, ``"binary_cross_entropy"``, ``"mse"``, or a per-sample loss function
            ``loss(logits, targets) -> (N,)`` (also by import path) — what the scores measure.
        last_layer: Name of the model's last layer (as in ``named_modules()``, e.g. ``"head"`` or ``"top.2"``);
            None finds the ``nn.Linear`` whose output is the model's output.
        input_index, target_index: Where the input and the target are in a batch tuple (``x, y = batch``).
        embedding_layer: The module whose output embedding-based strategies compare samples by (as in
            ``named_modules()``, e.g. ``"backbone.fc1"``); None: the model's ``embed()`` if it has one, else the
            input of the last layer.
    """

    def __init__(self, loss: LossSpec = "auto", last_layer: str | None = None, input_index: int = 0,
                 target_index: int | None = 1, embedding_layer: str | None = None) -> None:
        self.loss = check_loss(loss)
        self.last_layer = last_layer
        self.input_index = input_index
        self.target_index = target_index
        self.embedding_layer = None if embedding_layer is None else check_module_name("embedding_layer",
                                                                                      embedding_layer)
        self._found: str | None = None
        self._said_fallback = False

    def split(self, batch: Any) -> tuple[Any, torch.Tensor | None]:
        if not isinstance(batch, (tuple, list)):
            return batch, None
        x = batch[self.input_index]
        y = batch[self.target_index] if self.target_index is not None and len(batch) > self.target_index else None
        return x, y

    @torch.no_grad()
    def __call__(self, module: nn.Module, batch: Any, embeddings: bool = False,
                 keys: torch.Tensor | None = None, representations: bool = False) -> ScoringBatch:
        """Score ``batch``: outputs, losses and, as asked, the last layer's inputs (``embeddings``) and the
        embeddings that embedding-based strategies compare (``representations``)."""
        x, y = self.split(batch)
        by_embed = representations and self.embedding_layer is None and callable(getattr(module, "embed", None))
        if representations and self.embedding_layer is None and not by_embed:
            embeddings = True  # the last layer's inputs stand in
        was_training = module.training
        module.eval()
        try:
            logits, emb, rep = self._run(module, x, embeddings, representations and self.embedding_layer is not None)
            if by_embed:
                rep = module.embed(x)
                if not isinstance(rep, torch.Tensor) or len(rep) != len(logits):
                    raise TypeError(f"{type(module).__name__}.embed(x) must return a tensor with one row per "
                                    f"sample, got {type(rep).__name__}")
        finally:
            module.train(was_training)
        if representations and rep is None:
            self._say_fallback(module)
        return ScoringBatch.from_outputs(logits, y, self.loss, emb, keys, rep)

    # ------------------------------------------------------------------ embeddings
    def _run(self, module: nn.Module, x: Any, last_inputs: bool, named_output: bool
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One forward pass, with hooks on the last layer (its input) and on ``embedding_layer`` (its output)."""
        hooks, inputs, outputs = [], [], []
        if last_inputs:
            if self.last_layer is None and self._found is None:
                self._found = self._find_last_layer(module, x)
            last = self.last_layer or self._found
            hooks.append(_submodule(module, last).register_forward_hook(
                lambda _m, args, _out: inputs.append(args[0])))
        if named_output:
            layer = check_submodule(module, self.embedding_layer, "embedding_layer")
            hooks.append(layer.register_forward_hook(lambda _m, _args, out: outputs.append(out)))
        try:
            logits = module(x)
        finally:
            for hook in hooks:
                hook.remove()
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"scoring needs the model's forward to return a tensor of outputs, got "
                            f"{type(logits).__name__}")
        if last_inputs and not inputs:
            raise RuntimeError(f"last_layer {self.last_layer or self._found!r} was not called by "
                               f"{type(module).__name__}.forward; name the module whose input is the embedding the "
                               "strategy should use")
        if named_output and not (outputs and isinstance(outputs[-1], torch.Tensor)):
            raise RuntimeError(f"embedding_layer {self.embedding_layer!r} "
                               + ("was not called by" if not outputs else "does not return a tensor in")
                               + f" {type(module).__name__}.forward; name a module that it calls and that returns "
                               "a tensor")
        return logits, inputs[-1] if inputs else None, outputs[-1] if outputs else None

    def _say_fallback(self, module: nn.Module) -> None:
        if not self._said_fallback:
            self._said_fallback = True
            rank_zero_only(log.info)(
                "downsampling compares samples by the input of %s's last layer %r: set embedding_layer on the "
                "selection callback, or define embed(x) on the model, to choose other embeddings",
                type(module).__name__, self.last_layer or self._found)

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
