"""Argument checks shared by every layer: one message for each kind of bad option, naming the option."""

from __future__ import annotations

import math
import operator
from typing import Any


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
