"""Argument checks shared by every layer: one message for each kind of bad option, naming the option."""

from __future__ import annotations

import importlib
import math
import numbers
import operator
import re
from typing import Any, Iterable, Mapping


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an int, refusing bools, floats, strings and values outside ``[minimum, maximum]`` with a
    ``ValueError`` that names the option (and ``hint``, why the bounds are what they are).

    >>> check_int("batch_size", 2.5, 1)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be an integer >= 1, got 2.5
    """
    bounds = ("" if minimum is None and maximum is None else f" >= {minimum}" if maximum is None
              else f" <= {maximum}" if minimum is None else f" in [{minimum}, {maximum}]")
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be an integer{bounds}{' ' + hint if hint else ''}, got {value!r}")
    return number


def check_optional_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None,
                       hint: str = "") -> int | None:
    """None (the option's default: not set), or ``value`` as :func:`check_int` takes it.

    >>> check_optional_int("val_batch_size", None, 1) is None
    True
    """
    return None if value is None else check_int(name, value, minimum, maximum, hint)


def check_choice(name: str, value: Any, choices: Iterable[Any], hint: str = "") -> Any:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming the option and listing them (``hint``
    adds what else the option takes, e.g. ``"or None for the default"``).

    >>> check_choice("direction", "up", ("higher", "lower"))
    Traceback (most recent call last):
    ...
    ValueError: direction must be one of ('higher', 'lower'), got 'up'
    """
    choices = tuple(choices)
    try:
        ok = bool(hash(value) is not None and value in choices)
    except (TypeError, ValueError):  # unhashable (a list, a numpy array): never one of the choices
        ok = False
    if not ok or isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        raise ValueError(f"{name} must be one of {choices}{' ' + hint if hint else ''}, got {value!r}")
    return value


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_whole(name: str, value: Any, minimum: int | None = None, hint: str = "") -> int:
    """A whole number that fits int64 (a timestamp, a key bound): an int, or a float with no fractional part.

    >>> check_whole("start", 100.0), check_whole("start", 7)
    (100, 7)
    >>> check_whole("start", 100.5)
    Traceback (most recent call last):
    ...
    ValueError: start must be a whole number (int64), got 100.5
    >>> check_whole("every", 0, 1, "(a time span)")
    Traceback (most recent call last):
    ...
    ValueError: every must be a whole number (int64) >= 1 (a time span), got 0
    """
    if isinstance(value, float) or type(value).__module__ == "numpy" and hasattr(value, "is_integer"):
        number = int(value) if math.isfinite(value) and float(value).is_integer() else None
    else:
        try:
            number = None if isinstance(value, bool) else operator.index(value)
        except TypeError:
            number = None
    if number is None or not INT64_MIN <= number <= INT64_MAX or minimum is not None and number < minimum:
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be a whole number (int64){bound}{' ' + hint if hint else ''}, got {value!r}")
    return number


_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def import_object(option: str, path: str) -> Any:
    """The object at the import path ``package.module.name``, or a ``ValueError`` naming ``option`` and why."""
    if not isinstance(path, str) or not _IMPORT_PATH.fullmatch(path):
        raise ValueError(f"{option}: {path!r} is not an import path such as 'mypackage.module.function'")
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as err:
        raise ValueError(f"{option}: cannot import {path!r} ({err})") from None
    except AttributeError:
        raise ValueError(f"{option}: module {module!r} has no {name!r}") from None


def resolve_callable(option: str, value: Any, names: Iterable[str] = ()) -> Any:
    """A callable option given in any form a recipe can write it: the callable itself, an import path of a
    function (``mymodels.any_fired``), or ``{"class_path": ..., "init_args": {...}}`` of a class whose instances
    are callable. A string in ``names`` (the option's built-in choices) is returned as it is, for the caller;
    anything else is a ``ValueError`` naming the option.

    >>> resolve_callable("aggregation", "builtins.any")
    <built-in function any>
    >>> resolve_callable("aggregation", "majority", names=("majority",))
    'majority'
    """
    if isinstance(value, str) and value in tuple(names):
        return value
    if isinstance(value, str) and _IMPORT_PATH.fullmatch(value):
        value = import_object(option, value)
        if isinstance(value, type):
            raise ValueError(f"{option}: {value.__module__}.{value.__qualname__} is a class; name a function, or "
                             "give the class as {'class_path': ..., 'init_args': {...}}")
    elif isinstance(value, Mapping) and "class_path" in value:
        cls = import_object(f"{option}.class_path", value["class_path"])
        if not isinstance(cls, type):
            raise ValueError(f"{option}.class_path: {value['class_path']!r} is not a class")
        args = value.get("init_args") or {}
        if not isinstance(args, Mapping):
            raise ValueError(f"{option}.init_args must be a mapping of argument names to values, got {args!r}")
        value = cls(**args)
    if not callable(value):
        choices = f" or one of {names if isinstance(names, list) else tuple(names)}" if tuple(names) else ""
        raise ValueError(f"{option} must be a callable{choices} (a callable by import path, "
                         f"'mypackage.module.function', or as a class_path of a callable class), got {value!r}")
    return value


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """A finite real number (not a bool) within the bounds given, as a float; otherwise a ``ValueError`` that
    names the option, the interval and (``hint``) what the option means.

    >>> check_number("beta", 1.5, 0, 1, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: beta must be a number in (0, 1], got 1.5
    >>> check_number("ridge", 0.0, 0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: ridge must be a finite number > 0, got 0.0
    """
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy's numbers too, not np.bool_
    number = float(value) if real else math.nan
    ok = math.isfinite(number)
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        if low is not None and high is not None:
            bounds = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            bounds = f"a finite number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            bounds = f"a finite number {'<' if high_open else '<='} {high:g}"
        else:
            bounds = "a finite number"
        raise ValueError(f"{name} must be {bounds}{' (' + hint + ')' if hint else ''}, got {value!r}")
    return float(number)


def check_fraction(name: str, value: Any, low_open: bool = True) -> float:
    """A share in ``(0, 1]`` (``low_open``) or ``[0, 1]``."""
    return check_number(name, value, 0, 1, low_open=low_open)


def check_percentage(name: str, value: Any, meaning: str) -> float:
    """A percentage in (0, 100] (e.g. the share of samples a downsampler keeps); ``meaning`` says what it is."""
    return check_number(name, value, 0, 100, low_open=True, hint=meaning)


def check_tail(tail_triggers: Any) -> int | None:
    """How many earlier triggers' data a policy also trains on: None (all) or an integer >= 0."""
    if tail_triggers is None:
        return None
    try:
        return check_int("tail_triggers", tail_triggers, 0)
    except ValueError:
        raise ValueError(f"tail_triggers must be None (all data) or an integer >= 0, got {tail_triggers!r}") from None


def check_seed(seed: Any, name: str = "seed", hint: str = "") -> int:
    """A seed numpy and ``lightning.seed_everything`` take: an integer in ``[0, 2**32 - 1]``."""
    return check_int(name, seed, 0, 2**32 - 1, hint=hint)


def check_features(x: Any, name: str):
    """A finite 2-D (samples x features) float32 tensor on the input's device (coreset algorithms' inputs)."""
    import torch  # here, not at the top: the store's layer uses these checks without needing torch

    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor (samples x features), got shape {tuple(x.shape)}")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite entries")
    return x


def check_module_name(option: str, name: Any) -> str:
    """``name`` if it can name a module (a non-empty dotted name such as ``"backbone.fc1"``), checked before the
    model is known; a ``ValueError`` naming the option otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{option} must be the dotted name of a module of the model, got {name!r}")
    return name


def check_submodule(model: Any, name: Any, option: str) -> Any:
    """The submodule of ``model`` at the dotted ``name`` (``"backbone.fc1"``), or a ``ValueError`` naming the
    option and listing the model's modules."""
    check_module_name(option, name)
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        shown = ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
        raise ValueError(f"{option} {name!r} is not a module of {type(model).__name__}; its modules: "
                         f"{shown or 'none'}") from None
