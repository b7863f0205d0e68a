"""The embedded catalog: one SQLite file next to the shards (``catalog.sqlite``), written by one process at a time.

The default backend: it needs nothing installed and travels with the store (a copy of the folder is a copy of the
store). One writer holds SQLite's write lock for the whole of a write call; readers in other processes see each
commit as a whole (WAL mode). Remote stores keep a downloaded copy and upload it after each commit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from typing import Iterable, Iterator, Sequence

from lightning_modyn.store.catalog import (
    BUSY_TIMEOUT_S,
    ERROR_TRANSLATORS,
    FORMAT_VERSION,
    Catalog,
    catalog_errors,
    check_format_version,
)
from lightning_modyn.store.errors import CatalogError, StoreLockedError

ERASURES_TABLE = "CREATE TABLE IF NOT EXISTS erasures (path TEXT PRIMARY KEY, since INTEGER NOT NULL)"
"""Files a compaction still has to remove (added to catalogs written before it existed when opened for writing)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    owned INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    size INTEGER NOT NULL,
    total INTEGER NOT NULL,
    live INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    first_key INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    length INTEGER NOT NULL,
    min_ts INTEGER NOT NULL,
    max_ts INTEGER NOT NULL,
    label INTEGER,
    appended INTEGER NOT NULL,
    wds_key TEXT,
    ts_blob BLOB,
    label_blob BLOB
);
CREATE INDEX IF NOT EXISTS entries_ts ON entries(min_ts);
CREATE INDEX IF NOT EXISTS entries_max_ts ON entries(max_ts);
CREATE INDEX IF NOT EXISTS entries_appended ON entries(appended);
CREATE INDEX IF NOT EXISTS entries_shard ON entries(shard);
CREATE UNIQUE INDEX IF NOT EXISTS entries_wds_key ON entries(wds_key);
CREATE TABLE IF NOT EXISTS deleted (key INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS label_counts (label INTEGER PRIMARY KEY, count INTEGER NOT NULL);
{erasures};
CREATE TABLE IF NOT EXISTS members (
    ext TEXT NOT NULL,
    first_key INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (first_key, ext)
) WITHOUT ROWID;
""".format(erasures=ERASURES_TABLE)

def translate_error(err: Exception, where: str) -> Exception | None:
    """An SQLite error as the store's: a write lock held by another process is ``StoreLockedError``, anything else
    (a damaged file, a failed write) ``CatalogError``, naming the catalog file. None for other errors."""
    if isinstance(err, sqlite3.OperationalError):
        if "locked" in str(err) or "busy" in str(err):
            return StoreLockedError(
                f"catalog {where!r}: another process holds a write transaction on it (waited {BUSY_TIMEOUT_S} s); "
                "retry when it is done")
        return CatalogError(f"catalog {where!r}: {err} (disk full, file-size limit, read-only or damaged file?)")
    if isinstance(err, sqlite3.DatabaseError):
        return CatalogError(f"catalog {where!r} is damaged or not a lightning-modyn catalog: {err}")
    return None


ERROR_TRANSLATORS.append(translate_error)


class SQLiteCatalog(Catalog):
    """The catalog in an SQLite file. Mutations happen inside :meth:`transaction`.

    Opening checks that the file exists (unless ``create``), is a catalog, and is of a format this version reads. A
    read-only catalog on read-only media (where SQLite cannot make the WAL's shared-memory file) is opened
    ``immutable``, or from a private copy when its WAL still holds commits.
    """

    def __init__(self, path: str, readonly: bool = False, wal: bool = True, create: bool = False) -> None:
        super().__init__()
        self.path = self.where = path
        self.readonly = readonly
        self._copy: str | None = None
        if not create:
            if not os.path.isfile(path):
                raise CatalogError(f"catalog {path!r} is missing; the store cannot be opened without it")
            _check_not_truncated(path)
        with catalog_errors(path):
            if readonly:
                self.conn = self._connect_readonly(path)
            else:
                self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
                self.conn.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
                self.conn.execute("PRAGMA synchronous=FULL")
            if not create:
                self._check_format()
                if not readonly:
                    self.conn.execute(ERASURES_TABLE)

    def _connect_readonly(self, path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            folder = os.path.dirname(os.path.abspath(path))
            if not _read_only_folder(folder):
                raise
            conn.close()
        # read-only media: SQLite cannot create the -shm file a WAL database needs
        wal = path + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:  # commits not yet in the main file: read a copy
            self._copy = tempfile.mkdtemp(prefix="lightning-modyn-catalog-")
            for suffix in ("", "-wal"):
                shutil.copyfile(path + suffix, os.path.join(self._copy, "catalog.sqlite" + suffix))
            return sqlite3.connect(os.path.join(self._copy, "catalog.sqlite"), isolation_level=None,
                                   check_same_thread=False)
        return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, isolation_level=None,
                               check_same_thread=False)

    def _check_format(self) -> None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE name = 'format_version'").fetchone()
        except sqlite3.OperationalError as err:
            if "no such table" not in str(err):
                raise
            row = None
        check_format_version(None if row is None else row[0], self.path)

    # ------------------------------------------------------------------ lifecycle
    def initialise(self, meta: dict[str, str]) -> None:
        with self.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            base = {"format_version": str(FORMAT_VERSION), "next_key": "0", "next_shard": "0", "version": "0",
                    "layout": "0", "max_span": "0", "max_count": "1", "created": str(int(time.time()))}
            base.update(meta)
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", base.items())

    def close(self) -> None:
        """Close the connection; a writer first folds the WAL into the main file, so that a copy of the store (a
        snapshot, read-only media) holds every commit in ``catalog.sqlite`` alone."""
        with contextlib.suppress(sqlite3.Error):
            if not self.readonly and self.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None

    def _execute(self, sql: str, params: Sequence = ()):
        return self.conn.execute(sql, params)

    def _executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
        self.conn.executemany(sql, rows)

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self.conn.execute("COMMIT")

    def writing(self):
        """One writer: the write lock is held from the first id allocated to the commit, so a failed call leaves
        no gap in the keys."""
        return self.transaction()

    def allocate(self, name: str, n: int) -> int:
        first = self.number(name)
        self.set_meta(name, first + n)
        return first

    def change_token(self) -> tuple[int, int]:
        """Changes whenever anything commits: another connection (``data_version``) or this one (a counter)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0], self.commits

    @contextlib.contextmanager
    def read_view(self) -> Iterator[None]:
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def checkpoint(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def pending_erasures(self) -> list[str]:
        try:
            return super().pending_erasures()
        except sqlite3.OperationalError as err:  # a read-only catalog written before erasures were recorded
            if "no such table" in str(err):
                return []
            raise


def _check_not_truncated(path: str) -> None:
    """A catalog file shorter than its own header says (database size in pages x page size) was cut: refuse it
    at open rather than fail on some later query. Reads 100 bytes. Not while a WAL holds pages: a checkpoint cut
    short leaves the main file shorter than its header legitimately, and SQLite completes it from the WAL."""
    wal = path + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        return
    with open(path, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise CatalogError(f"catalog {path!r} is damaged or not a lightning-modyn catalog: not an SQLite database")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = int.from_bytes(header[92:96], "big") == int.from_bytes(header[24:28], "big")  # size field is current
    size = os.path.getsize(path)
    if valid and pages and size < pages * page_size:
        raise CatalogError(f"catalog {path!r} is truncated: {size} bytes, but its header counts {pages} pages of "
                           f"{page_size} bytes; restore it from a copy")


def _read_only_folder(folder: str) -> bool:
    """Whether files cannot be created in ``folder`` (a read-only mount, or no write permission)."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        pass
    return not os.access(folder, os.W_OK)
