"""Argument checks shared by the coreset algorithms (one message for each kind of bad input)."""

from __future__ import annotations

from typing import Any

import torch

from lightning_modyn._checks import check_int

__all__ = ["check_features", "check_int"]


def check_features(x: Any, name: str) -> torch.Tensor:
    """A finite 2-D (samples x features) float32 tensor on the input's device."""
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor (samples x features), got shape {tuple(x.shape)}")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite entries")
    return x
