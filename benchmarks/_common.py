"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import os


def warm_files(path: str) -> int:
    """Read every file under ``path`` (or the file itself) once so that it sits in the page cache; bytes read."""
    paths = [path] if os.path.isfile(path) else [os.path.join(r, f) for r, _d, fs in os.walk(path) for f in fs]
    buf = bytearray(16 << 20)
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(buf)
                if not n:
                    break
                total += n
    return total


def emit_table(lines: list[str], out: str | None) -> None:
    """Print a markdown table (its lines) and, when ``out`` is given, write it there too."""
    table = "\n".join(lines)
    print(table)
    if out:
        with open(out, "w") as handle:
            handle.write(table + "\n")
