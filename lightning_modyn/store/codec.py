"""Turning sample values into member bytes and back, without pickle.

Encoding follows WebDataset's conventions so that shards read the same with ``webdataset.WebDataset``: numbers
are written as ASCII text, strings as UTF-8, numpy arrays as ``.npy`` (no object arrays), dicts and lists as JSON.
Decoding is by extension and never unpickles: ``.pyd``/``.pickle``/``.pth`` members stay bytes unless the caller
opts in with ``allow_pickle=True``.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any, Mapping

import numpy as np

from lightning_modyn.store.errors import SampleEncodingError

META_FIELDS = ("__key__", "__store_key__", "__timestamp__", "__label__", "__url__")

_INT_EXTS = {"cls", "cls2", "class", "count", "index", "inx", "id"}
_TEXT_EXTS = {"txt", "text", "transcript", "html", "htm"}
_JSON_EXTS = {"json", "jsn"}
_PICKLE_EXTS = {"pyd", "pickle", "pth"}


def encode_value(value: Any, where: str) -> bytes:
    """Bytes of one sample value; ``where`` names the sample and field in the error for unsupported values."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise SampleEncodingError(f"{where}: str value is not valid text at position {err.start} (a lone "
                                      "surrogate); encode it to bytes yourself") from None
    if isinstance(value, (bool, np.bool_)):
        return str(int(value)).encode("ascii")
    if isinstance(value, (int, np.integer)):
        return str(int(value)).encode("ascii")
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise SampleEncodingError(f"{where}: float value {value!r} is not finite")
        return repr(float(value)).encode("ascii")
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise SampleEncodingError(f"{where}: numpy arrays of dtype object cannot be stored (they need pickle)")
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return buf.getvalue()
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as err:
            raise SampleEncodingError(f"{where}: value is not JSON-serialisable: {err}") from None
    raise SampleEncodingError(
        f"{where}: cannot store a value of type {type(value).__name__}; "
        "use bytes, str, int, float, a numpy array or a JSON-able dict/list"
    )


def encode_sample(sample: Mapping[str, Any], where: str) -> list[tuple[str, bytes]]:
    """(extension, bytes) for every member of a WebDataset-style sample dict (metadata fields excluded)."""
    if not isinstance(sample, Mapping):
        raise SampleEncodingError(f"{where}: a sample must be a dict of extension -> value, got {type(sample).__name__}")
    members = []
    for ext, value in sample.items():
        if not isinstance(ext, str) or ext.startswith("__"):
            continue
        if not ext or "/" in ext or ext.startswith(".") or "\0" in ext or not _is_text(ext):
            raise SampleEncodingError(f"{where}: invalid member extension {ext!r}")
        members.append((ext, encode_value(value, f"{where}, field {ext!r}")))
    if not members:
        raise SampleEncodingError(f"{where}: the sample has no data fields (only metadata such as __key__)")
    return members


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_value(ext: str, data: bytes, allow_pickle: bool = False) -> Any:
    """Decode one member by its (last) extension; unknown extensions stay bytes."""
    last = ext.rsplit(".", 1)[-1].lower()
    if last in _INT_EXTS:
        return int(data)
    if last in _TEXT_EXTS:
        return data.decode("utf-8")
    if last in _JSON_EXTS:
        return json.loads(data)
    if last == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if last in _PICKLE_EXTS and allow_pickle:
        import pickle

        return pickle.loads(data)  # noqa: S301 - explicit opt-in only
    return data


def decode_sample(sample: Mapping[str, Any], allow_pickle: bool = False) -> dict[str, Any]:
    """A copy of a sample from :meth:`SampleStore.get` with every member decoded by extension.

    >>> decode_sample({"__key__": "a", "cls": b"3", "json": b'{"x": 1}', "jpg": b"\\xff"})
    {'__key__': 'a', 'cls': 3, 'json': {'x': 1}, 'jpg': b'\\xff'}
    """
    return {
        name: value if name in META_FIELDS or not isinstance(value, (bytes, bytearray)) else decode_value(name, value, allow_pickle)
        for name, value in sample.items()
    }
