"""Argument checks shared by the coreset algorithms (one message for each kind of bad input)."""

from __future__ import annotations

import operator
from typing import Any

import torch


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, refusing bools, non-integers and values below ``minimum``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_features(x: Any, name: str) -> torch.Tensor:
    """A finite 2-D (samples x features) float32 tensor on the input's device."""
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor (samples x features), got shape {tuple(x.shape)}")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite entries")
    return x
