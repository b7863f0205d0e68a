"""A throwaway PostgreSQL server on loopback for the tests and benchmarks: ``initdb`` into a temporary folder,
``pg_ctl start`` on a free port, trust authentication for local connections only, stopped and removed at the end.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system user (``runuser``). Debian's
``postgresql`` package provides the binaries (``/usr/lib/postgresql/<version>/bin``); ``.ci/run`` installs it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile


def postgres_bin() -> str | None:
    """The folder of ``initdb`` and ``pg_ctl`` (the newest Debian cluster version, else PATH), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """``with PostgresServer() as pg: pg.url`` — a running server with one empty database ``lightning_modyn``."""

    def __init__(self, database: str = "lightning_modyn") -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb); on Debian: apt-get install postgresql")
        self.database = database
        self.port = _free_port()
        self.folder = tempfile.mkdtemp(prefix="lightning-modyn-pg-")
        self.data = os.path.join(self.folder, "data")
        self.user = "postgres"
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        cmd = [os.path.join(self.bin, args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> "PostgresServer":
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        os.chmod(self.folder, 0o700)
        self._run("initdb", "-D", self.data, "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=on "
                   "-c max_connections=200 -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.folder, "log"), "-w", "-t", "60",
                  "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database)
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
