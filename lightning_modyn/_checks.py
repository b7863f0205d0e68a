"""Argument checks shared by every layer: one message for each kind of bad option, naming the option."""

from __future__ import annotations

import importlib
import math
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


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_whole(name: str, value: Any) -> int:
    """A whole number that fits int64 (a timestamp, a key bound): an int, or a float with no fractional part.

    >>> check_whole("start", 100.0), check_whole("start", 7)
    (100, 7)
    >>> check_whole("start", 100.5)
    Traceback (most recent call last):
    ...
    ValueError: start must be a whole number (int64), got 100.5
    """
    if isinstance(value, float) or type(value).__module__ == "numpy" and hasattr(value, "is_integer"):
        number = int(value) if math.isfinite(value) and float(value).is_integer() else None
    else:
        try:
            number = None if isinstance(value, bool) else operator.index(value)
        except TypeError:
            number = None
    if number is None or not INT64_MIN <= number <= INT64_MAX:
        raise ValueError(f"{name} must be a whole number (int64), got {value!r}")
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
