"""The writer's lease on a remote store with an SQLite catalog: one writer at a time where no file lock exists.

An object store has no ``flock``. The writer of a remote store whose catalog is an SQLite file (downloaded at open,
uploaded after each commit) therefore holds a lease: a small JSON object ``writer.lease`` naming it (a random id,
host and process) and when it last renewed it. A writable open takes the lease only if there is none, it is its own,
or it has expired (``LEASE_SECONDS`` without renewal: the writer crashed or went idle), then reads it back to see
that it won. Every write checks the lease before it starts, and again before it uploads the catalog, renewing it
after; a writer that lost its lease gets ``StoreLockedError`` and uploads nothing, so it never overwrites another
writer's commits. Closing the store gives the lease back.

A lease is not a lock: two writers could both upload only if one stalled for longer than the lease between its
check and its upload (milliseconds, normally). For many writers at once use a PostgreSQL catalog, which needs no
lease.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

from lightning_modyn.store.errors import StoreLockedError
from lightning_modyn.store.filesystem import StoreFS

LEASE = "writer.lease"
LEASE_SECONDS = 120.0
"""How long a lease lasts without renewal (each commit renews it)."""


class WriterLease:
    """This process's lease on the remote store at ``files`` (see the module docstring)."""

    def __init__(self, files: StoreFS, url: str) -> None:
        self.files = files
        self.url = url
        self.me = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self.held = False

    def _read(self) -> dict | None:
        try:
            lease = json.loads(self.files.read_bytes(LEASE))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"owner": "?", "host": "?", "pid": "?", "renewed": time.time()}  # unreadable: assume held
        return lease if isinstance(lease, dict) else None

    def _write(self) -> None:
        self.files.write_bytes(LEASE, json.dumps({**self.me, "renewed": time.time()}).encode())

    def take(self) -> None:
        """Take the lease, or raise ``StoreLockedError`` naming its holder."""
        lease = self._read()
        if lease is not None and lease.get("owner") != self.me["owner"]:
            age = time.time() - float(lease.get("renewed", 0))
            if age < LEASE_SECONDS:
                raise StoreLockedError(
                    f"{self.url} is being written by {lease.get('host')} (process {lease.get('pid')}), whose lease "
                    f"was renewed {age:.0f} s ago and lasts {LEASE_SECONDS:.0f} s without renewal; open it with "
                    "readonly=True to read, or give the store a PostgreSQL catalog for many writers")
        self._write()
        self.held = True
        self.check()  # another writer that wrote its lease at the same moment: the last one wins

    def check(self) -> None:
        """Raise ``StoreLockedError`` unless this process still holds the lease."""
        lease = self._read()
        if lease is None or lease.get("owner") != self.me["owner"]:
            self.held = False
            holder = "nobody" if lease is None else f"{lease.get('host')} (process {lease.get('pid')})"
            raise StoreLockedError(
                f"{self.url}: this writer lost its lease (now held by {holder}; it lapses after {LEASE_SECONDS:.0f} s "
                "without a commit); nothing of this call was uploaded. Reopen the store to write again")

    def renew(self) -> None:
        self._write()

    def give_back(self) -> None:
        if self.held:
            self.held = False
            lease = self._read()
            if lease is not None and lease.get("owner") == self.me["owner"]:
                self.files.remove(LEASE)
