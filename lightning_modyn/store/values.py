"""What callers may pass to the store as keys, timestamps, labels, WebDataset keys and record dtypes: each checked
and converted in one place, refused with an error that names the argument and the value — never wrapped."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from lightning_modyn.store import tarformat
from lightning_modyn.store.errors import RecordDtypeError, SampleEncodingError, UnknownKeyError

INT64 = np.iinfo(np.int64)


def as_keys(keys: Any, what: str = "keys") -> np.ndarray:
    """Keys as a 1-D int64 array; floats, bools and other types are refused with a clear error, and integers
    outside int64 (which no store ever assigned) with ``UnknownKeyError`` naming them, never wrapped."""
    arr = np.asarray(keys)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype == object and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   for v in arr.ravel().tolist()):
        outside = [v for v in arr.ravel().tolist() if not INT64.min <= v <= INT64.max]
        if outside:
            raise UnknownKeyError(f"unknown key {outside[0]}: store keys are int64")
        arr = arr.astype(np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must be integers (store keys), got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and (arr > INT64.max).any():
        raise UnknownKeyError(f"unknown key {int(arr[arr > INT64.max][0])}: store keys are int64")
    return arr.astype(np.int64, copy=False).ravel()


def as_int_array(values: Any, n: int, what: str, reserved: int | None = None) -> np.ndarray:
    """``values`` as int64, one per sample (a scalar for all), refusing what is not a whole number or does not fit
    int64 — never wrapped — and the ``reserved`` value (the no-label sentinel), naming ``what`` and the value."""
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise ValueError(f"{what} must have one value per sample ({n}), got shape {arr.shape}")
    if arr.dtype == bool:
        raise TypeError(f"{what} must be integers, got booleans")
    if arr.dtype == object:  # Python ints too large for any numpy integer type, or mixed values
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr.tolist()):
            raise TypeError(f"{what} must be integers, got {type(arr.tolist()[0]).__name__} values")
        outside = [(i, v) for i, v in enumerate(arr.tolist()) if not INT64.min <= v <= INT64.max]
        if outside:
            raise ValueError(f"{what}[{outside[0][0]}] = {outside[0][1]} does not fit in int64")
        arr = arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{what} must be whole numbers (e.g. unix seconds); got non-integral values")
        # float64 holds -2**63 exactly and nothing between 2**63 - 1024 and 2**63: the bounds are exact
        bad = np.flatnonzero((arr < -(2.0**63)) | (arr >= 2.0**63))
        if len(bad):
            raise ValueError(f"{what}[{bad[0]}] = {float(arr[bad[0]])!r} does not fit in int64")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must be integers, got dtype {arr.dtype}")
    elif arr.dtype == np.uint64:
        bad = np.flatnonzero(arr > INT64.max)
        if len(bad):
            raise ValueError(f"{what}[{bad[0]}] = {int(arr[bad[0]])} does not fit in int64")
    out = arr.astype(np.int64)
    if reserved is not None and (out == reserved).any():
        i = int(np.flatnonzero(out == reserved)[0])
        raise ValueError(f"{what}[{i}] = {reserved} is reserved (it marks a sample without a label)")
    return out


def check_wds_key(key: Any, i: int) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise SampleEncodingError(f"sample {i}: __key__ must be a non-empty str, got {key!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise SampleEncodingError(f"sample {i}: __key__ {key!r} is not valid text (a lone surrogate); keys are "
                                  "written to the tar as UTF-8") from None
    tarformat.check_member_name(key, f"sample {i}")
    if tarformat.split_name(f"{key}.x") != (key, "x"):
        raise SampleEncodingError(
            f"sample {i}: __key__ {key!r} has a '.' in its last path component; WebDataset would split it there"
        )
    return key


def check_record_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.names is None:
        raise RecordDtypeError(f"record dtype must be structured (named fields), got {dtype}")
    if dtype.hasobject:
        raise RecordDtypeError(f"record dtype {dtype} has object fields; records must be fixed-size plain data")
    return dtype


def dtype_to_json(dtype: np.dtype) -> str:
    return json.dumps(np.lib.format.dtype_to_descr(dtype))


def dtype_from_json(text: str) -> np.dtype:
    def descr(obj):
        if isinstance(obj, str):
            return obj
        fields = []
        for item in obj:
            name, typ = item[0], descr(item[1])
            fields.append((name, typ, tuple(item[2])) if len(item) == 3 else (name, typ))
        return fields

    return np.lib.format.descr_to_dtype(descr(json.loads(text)))
