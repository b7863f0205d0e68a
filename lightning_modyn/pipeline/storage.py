"""How the registry keeps a model per trigger on disk: in full, or as the difference to the trigger before, compressed
or not — Modyn's storage policies, in a file format that is never unpickled.

A model file is ``LMW1`` (4 bytes), the length of a JSON header (8 bytes, little endian), the header (the policy,
the trigger it is a difference to, and per tensor its name, dtype, shape, byte offset and length) and the tensors'
raw bytes, compressed together by ``codec`` if one is set. Loading reads bytes into numpy arrays: nothing is
unpickled whatever the file holds.

* :class:`FullStorage`: every model whole. Loading one file.
* :class:`IncrementalStorage`: model ``t`` as its difference to model ``t - 1`` — ``"xor"`` of the raw bits (any
  dtype; loading gives the saved bits exactly) or ``"sub"`` (floating-point subtraction; reloading adds it back,
  which may differ from the saved value in the last bit), with a whole model every ``full_every`` triggers so that
  a load applies at most ``full_every - 1`` differences.

Both take ``codec``: None, ``"zlib"``, ``"lzma"`` or ``"bz2"`` (lossless, standard library). A difference of two
nearby models (``xor`` of the sign and exponent bits above all) compresses far better than a model.
"""

from __future__ import annotations

import bz2
import json
import lzma
import struct
import zlib
from typing import Any

import numpy as np
import torch

from lightning_modyn._checks import check_choice, check_int

MAGIC = b"LMW1"
CODECS = {"zlib": (zlib.compress, zlib.decompress), "lzma": (lzma.compress, lzma.decompress),
          "bz2": (bz2.compress, bz2.decompress)}
DIFFS = ("xor", "sub")


class ModelStorage:
    """A storage policy: what a trigger's file holds (see the module docstring)."""

    def __init__(self, codec: str | None = None) -> None:
        if codec is not None and codec not in CODECS:
            raise ValueError(f"codec must be None or one of {tuple(CODECS)}, got {codec!r}")
        self.codec = codec

    def base_of(self, trigger_id: int) -> int | None:
        """The trigger whose model this trigger's file is a difference to (None: stored whole)."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"policy": type(self).__name__, "codec": self.codec}


class FullStorage(ModelStorage):
    """Every model whole (optionally compressed)."""


class IncrementalStorage(ModelStorage):
    """Model ``t`` as its difference (``"xor"`` or ``"sub"``) to model ``t - 1``; whole every ``full_every``.

    Args:
        diff: ``"xor"`` (bit-exact) or ``"sub"`` (floating point: reloading may differ in the last bit).
        full_every: Every this many triggers a whole model (trigger 0 always), bounding the differences a load
            applies; ``>= 1`` (1 stores every model whole).
        codec: None, ``"zlib"``, ``"lzma"`` or ``"bz2"``.
    """

    def __init__(self, diff: str = "xor", full_every: int = 10, codec: str | None = "zlib") -> None:
        super().__init__(codec)
        self.diff = check_choice("diff", diff, DIFFS)
        self.full_every = check_int("full_every", full_every, 1)

    def base_of(self, trigger_id: int) -> int | None:
        return None if trigger_id % self.full_every == 0 else trigger_id - 1

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "diff": self.diff, "full_every": self.full_every}


# ---------------------------------------------------------------------------------------------- arrays and files
def state_arrays(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A ``state_dict`` as numpy arrays on the CPU (bfloat16 kept as its bits, viewed as uint16)."""
    out = {}
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        out[name] = t.view(torch.uint16).numpy().copy() if t.dtype == torch.bfloat16 else t.numpy().copy()
    return out


def arrays_state(arrays: dict[str, np.ndarray], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Arrays back into tensors of the dtypes of ``like`` (the module's own ``state_dict``)."""
    out = {}
    for name, array in arrays.items():
        target = like[name].dtype if name in like else None
        t = torch.from_numpy(np.ascontiguousarray(array))
        out[name] = t.view(torch.bfloat16) if target == torch.bfloat16 else t
    return out


def difference(diff: str, new: np.ndarray, old: np.ndarray) -> np.ndarray:
    if diff == "xor" or new.dtype.kind not in "fc":  # integers and bools: xor (exact) whatever is asked
        return np.bitwise_xor(_bits(new), _bits(old)).view(new.dtype)
    return new - old


def undo(diff: str, delta: np.ndarray, old: np.ndarray) -> np.ndarray:
    if diff == "xor" or delta.dtype.kind not in "fc":
        return np.bitwise_xor(_bits(delta), _bits(old)).view(delta.dtype)
    return old + delta


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.itemsize in (1, 2, 4, 8) else a.view(np.uint8)


def encode(arrays: dict[str, np.ndarray], header: dict[str, Any], codec: str | None) -> bytes:
    """The file bytes of ``arrays`` with ``header`` (see the module docstring)."""
    tensors, chunks, offset = [], [], 0
    for name, array in arrays.items():
        raw = np.ascontiguousarray(array).tobytes()
        tensors.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset,
                        "length": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    payload = b"".join(chunks)
    if codec is not None:
        payload = CODECS[codec][0](payload)
    head = json.dumps({**header, "codec": codec, "tensors": tensors}).encode()
    return MAGIC + struct.pack("<Q", len(head)) + head + payload


def decode(data: bytes, where: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(header, arrays)`` of a model file; a file that is not one is an error naming it."""
    if data[:4] != MAGIC or len(data) < 12:
        raise ValueError(f"{where} is not a lightning-modyn model file (no {MAGIC!r} header)")
    (size,) = struct.unpack("<Q", data[4:12])
    try:
        header = json.loads(data[12 : 12 + size])
        payload = data[12 + size :]
        if header.get("codec") is not None:
            payload = CODECS[header["codec"]][1](payload)
        arrays = {t["name"]: np.frombuffer(payload, dtype=np.dtype(t["dtype"]), count=int(np.prod(t["shape"])),
                                           offset=t["offset"]).reshape(t["shape"])
                  for t in header["tensors"]}
    except (ValueError, KeyError, TypeError, zlib.error, lzma.LZMAError, OSError) as err:
        raise ValueError(f"{where} is damaged: {err}") from None
    return header, arrays
