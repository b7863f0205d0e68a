"""Fixtures shared by the test modules."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
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


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 protocol endpoint on loopback (moto's server), started once for the tests that need it."""
    pytest.importorskip("s3fs", reason="the S3 tests need the [test] extras (s3fs, moto[server])")
    pytest.importorskip("moto", reason="the S3 tests need the [test] extras (s3fs, moto[server])")
    from services import start_s3

    url, proc = start_s3()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server on loopback (``tests/services.py``), started once for the tests that need it.

    Without PostgreSQL installed the tests that need it skip, saying why, unless ``LIGHTNING_MODYN_REQUIRE_POSTGRES``
    is set (``.ci/run`` sets it: there they must run)."""
    from services import PostgresServer, postgres_bin

    required = bool(os.environ.get("LIGHTNING_MODYN_REQUIRE_POSTGRES"))
    if postgres_bin() is None and not required:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it")
    if not required:
        pytest.importorskip("psycopg", reason="the PostgreSQL tests need the [postgres] extra (psycopg)")
    server = PostgresServer().start()
    yield server.url
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request):
    """Each backend in turn, as ``SampleStore.create(..., catalog=catalog)`` takes it: None (SQLite inside the
    store) or the URL of the test PostgreSQL server."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def drifting_store(tmp_path):
    """1200 samples over t = 0..1199; the class boundary flips sign at t = 600 (an abrupt drift)."""
    rng = np.random.default_rng(0)
    rows = np.zeros(1200, np.dtype([("label", "<i4"), ("x", "<f4", (2,))]))  # test_pipeline.DTYPE
    rows["x"] = rng.normal(size=(1200, 2)).astype(np.float32)
    t = np.arange(1200)
    rows["label"] = np.where(t < 600, rows["x"][:, 0] > 0, rows["x"][:, 0] < 0).astype(np.int32)
    from lightning_modyn import SampleStore

    store = SampleStore.create(tmp_path / "stream")
    store.append_records(rows, timestamps=t, labels="label")
    yield store
    store.close()
