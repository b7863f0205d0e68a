"""``LoopContext``: what model-aware triggers and the evaluation see of a running loop — the current model applied
to samples by key (outputs, predictions, embeddings) and a forecast of training time."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from lightning_modyn.pipeline.loop import ContinualLoop

log = logging.getLogger(__name__)


class LoopContext:
    """What model-aware triggers and the evaluation see: the current model applied to samples by key."""

    def __init__(self, loop: ContinualLoop) -> None:
        self.loop = loop
        self.fit_history: list[tuple[int, float]] = []
        self._said_outputs = False

    @property
    def has_model(self) -> bool:
        return self.loop.models_trained > 0

    def batches(self, keys: np.ndarray, store: Any = None):
        return self.loop.datamodule.batches(keys, store=store)

    @torch.no_grad()
    def outputs(self, keys: np.ndarray, module: torch.nn.Module | None = None, embed: bool = False,
                store: Any = None):
        """The model's outputs (or embeddings) of samples by key, with their targets; from ``store`` if given
        (held-out data), else from the training store."""
        module = module or self.loop.model
        was_training = module.training
        module.eval()
        outs, ys = [], []
        try:
            for batch in self.batches(keys, store):
                x, y = batch[0], batch[1] if len(batch) > 1 else None
                if embed and not self.has_model and module is self.loop.model:
                    out = _flatten_inputs(x)
                elif embed:
                    out = self._embedding(module, x)
                else:
                    out = module(x)
                outs.append(out.detach().float().reshape(len(batch.keys), -1).cpu())
                if y is not None:
                    ys.append(y.cpu())
        finally:
            module.train(was_training)
        out = torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)
        return out, (torch.cat(ys).numpy() if ys else None)

    def embed(self, keys: np.ndarray) -> np.ndarray:
        return self.outputs(keys, embed=True)[0]

    def _embedding(self, module: torch.nn.Module, x: Any) -> torch.Tensor:
        """The model's embedding of a batch: the output of the loop's ``embedding_layer`` if one is named (a
        forward hook), else ``module.embed(x)`` if the model defines it, else its outputs (logged once)."""
        layer = self.loop.pipeline.embedding_layer
        if layer is not None:
            captured: list[Any] = []
            handle = module.get_submodule(layer).register_forward_hook(lambda _m, _i, out: captured.append(out))
            try:
                module(x)
            finally:
                handle.remove()
            if not captured:
                raise RuntimeError(f"embedding_layer {layer!r} did not run in {type(module).__name__}.forward; name "
                                   "a module that the forward pass calls")
            out = captured[-1]
            return out[0] if isinstance(out, (tuple, list)) else out
        if hasattr(module, "embed"):
            return module.embed(x)
        if not self._said_outputs:
            self._said_outputs = True
            log.warning("embeddings of %s are its outputs: it defines no embed() and the loop names no "
                        "embedding_layer (e.g. embedding_layer='backbone.fc1' in the pipeline section)",
                        type(module).__name__)
        return module(x)

    def predict(self, keys: np.ndarray, module: torch.nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
        logits, y = self.outputs(keys, module)
        pred = logits.argmax(-1) if logits.shape[1] > 1 else (logits[:, 0] > 0).astype(np.int64)
        return pred, y

    def training_seconds_forecast(self, num_samples: int) -> float:
        if not self.fit_history:
            return 0.0
        samples = np.array([n for n, _ in self.fit_history], float)
        seconds = np.array([s for _, s in self.fit_history], float)
        if len(samples) < 2 or np.ptp(samples) == 0:
            return float(seconds.mean() / max(samples.mean(), 1) * num_samples)
        slope, intercept = np.polyfit(samples, seconds, 1)
        return float(max(0.0, intercept + slope * num_samples))


def _flatten_inputs(x: Any) -> torch.Tensor:
    if isinstance(x, dict):
        return torch.cat([v.reshape(len(v), -1).float() for v in x.values()], dim=1)
    return x.reshape(len(x), -1).float()
