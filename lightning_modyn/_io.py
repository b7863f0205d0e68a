"""Local files written atomically: the one helper every layer uses (store shards and markers, the model registry,
the loop's state, evaluation results)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from typing import IO, Any, Iterator

TEMP_PREFIX = ".tmp-"
_TEMP_NAME = re.compile(r"^\.tmp-[0-9a-f]{32}-")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write`'s temp files (``.tmp-<uuid hex>-<final name>``): a write
    that did not finish, which only this package makes."""
    return _TEMP_NAME.match(name) is not None


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO]:
    """A file that appears at ``path`` complete or not at all, and stays after a crash once the block returns: a
    temp file beside it (``.tmp-<uuid>-<name>``), fsynced, renamed over ``path``, and the folder synced."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name}")
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, data: Any) -> None:
    """``data`` as indented JSON at ``path``, atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=2)


def fsync_dir(folder: str) -> None:
    """Make a folder's entries (a rename, a new or removed file) durable; a no-op where folders cannot be synced."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
