"""Fixtures shared by the test modules."""

from __future__ import annotations

import multiprocessing as mp

import pytest


def _report(fn, args, queue) -> None:
    try:
        queue.put(("ok", fn(*args)))
    except Exception as err:  # noqa: BLE001 - reported to the parent
        queue.put((type(err).__name__, str(err)))


@pytest.fixture
def in_forked_child():
    """``run(fn, *args)``: call ``fn(*args)`` in a forked child (as a DataLoader worker is made) and return
    ``("ok", its result)`` or ``(exception class name, message)``. The child must exit cleanly within a minute."""
    def run(fn, *args):
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=_report, args=(fn, args, queue))
        proc.start()
        try:
            result = queue.get(timeout=60)
        finally:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        assert proc.exitcode == 0, f"the forked child exited with {proc.exitcode}"
        return result
    return run
