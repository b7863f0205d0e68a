"""The scale-out catalog: a store's tables in PostgreSQL, written by many processes on many machines at once.

Each store has its own schema (``lm_<store id>``) in a database the user names by URL, so one database serves
many stores. Writers write their shard files side by side and serialise only their commits: a transaction starts by
taking the next catalog ``version`` (a row lock held until it commits), so commits happen one after another, each
sees every earlier one, and versions become visible in order. Keys and shard ids come from counters updated in
their own short transactions, so two writers never wait for each other's files; a failed write leaves a gap in the
keys, never a key used twice. Every entry remembers the version that committed it, and a reader asks for what was
committed after the version it holds (keys of several writers commit out of key order).

Each writing process registers as a writer and holds a PostgreSQL session lock for as long as it lives: its shard
journal is its own folder, and a writer's leftovers are collected only once its lock is free (the process, or its
connection, is gone).

Needs ``psycopg`` 3 (``pip install 'lightning-modyn[postgres]'``).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from typing import Iterable, Iterator, Sequence

from lightning_modyn.store.catalog import (
    ENTRY_COLUMNS,
    ERROR_TRANSLATORS,
    FORMAT_VERSION,
    Catalog,
    check_format_version,
)
from lightning_modyn.store.errors import CatalogError, DuplicateKeyError, StoreLockedError, StoreNotFoundError

LOCK_TIMEOUT_S = 30
"""How long a commit waits for other writers' commits before StoreLockedError."""
CONNECT_TIMEOUT_S = 10

SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE shards (
    id BIGINT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    owned INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    size BIGINT NOT NULL,
    total BIGINT NOT NULL,
    live BIGINT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE entries (
    first_key BIGINT PRIMARY KEY,
    count BIGINT NOT NULL,
    shard BIGINT NOT NULL,
    "offset" BIGINT NOT NULL,
    length BIGINT NOT NULL,
    min_ts BIGINT NOT NULL,
    max_ts BIGINT NOT NULL,
    label BIGINT,
    appended BIGINT NOT NULL,
    wds_key TEXT,
    ts_blob BYTEA,
    label_blob BYTEA,
    commit_version BIGINT NOT NULL
);
CREATE INDEX entries_ts ON entries(min_ts);
CREATE INDEX entries_max_ts ON entries(max_ts);
CREATE INDEX entries_appended ON entries(appended);
CREATE INDEX entries_shard ON entries(shard);
CREATE INDEX entries_commit ON entries(commit_version);
CREATE UNIQUE INDEX entries_wds_key ON entries(wds_key);
CREATE TABLE deleted (key BIGINT PRIMARY KEY);
CREATE TABLE label_counts (label BIGINT PRIMARY KEY, count BIGINT NOT NULL);
CREATE TABLE erasures (path TEXT PRIMARY KEY, since BIGINT NOT NULL);
CREATE TABLE members (
    ext TEXT NOT NULL,
    first_key BIGINT NOT NULL,
    "offset" BIGINT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (first_key, ext)
);
CREATE TABLE writers (id BIGINT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started BIGINT NOT NULL)
"""


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise CatalogError("a PostgreSQL catalog needs psycopg 3: pip install 'lightning-modyn[postgres]'") from None
    return psycopg


def is_postgres_url(url: object) -> bool:
    return isinstance(url, str) and url.split("://", 1)[0] in ("postgresql", "postgres")


def redacted(url: str) -> str:
    """The catalog URL without its password (for messages and for ``store.json``: passwords belong in
    ``PGPASSWORD`` or ``~/.pgpass``, not in a file next to the data)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        netloc = f"{creds.split(':', 1)[0]}@{host}"
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("password="))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def schema_for(store_id: str) -> str:
    if not store_id.isalnum() or not store_id.isascii():
        raise CatalogError(f"store id {store_id!r} is not alphanumeric")
    return f"lm_{store_id.lower()}"


def translate_error(err: Exception, where: str) -> Exception | None:
    """A psycopg error as the store's: a lock wait that timed out is ``StoreLockedError``, anything else (an
    unreachable server, a dropped connection, a damaged schema) ``CatalogError``, naming the catalog. None for an
    error that is not psycopg's."""
    if not type(err).__module__.startswith("psycopg"):
        return None
    psycopg = _psycopg()
    if isinstance(err, psycopg.errors.LockNotAvailable):
        return StoreLockedError(f"catalog {where}: other writers' commits held it for over {LOCK_TIMEOUT_S} s; "
                                "retry when they are done")
    if isinstance(err, psycopg.OperationalError):
        return CatalogError(f"catalog {where}: cannot reach PostgreSQL ({str(err).strip()}); is the server running "
                            "and the URL right? Nothing of the call that failed was committed; the next call "
                            "connects again")
    return CatalogError(f"catalog {where}: {type(err).__name__}: {str(err).strip()}")


ERROR_TRANSLATORS.append(translate_error)


class PostgresCatalog(Catalog):
    """A store's catalog in the PostgreSQL schema ``schema`` of the database at ``url``.

    ``create`` makes the schema (refused when it exists); otherwise the schema must exist and belong to the store
    with id ``store_id``.
    """

    concurrent_writers = True
    key_chunk = 1 << 15  # larger arrays make the planner scan the table instead of probing its primary key

    def __init__(self, url: str, store_id: str, readonly: bool = False, create: bool = False) -> None:
        super().__init__()
        _psycopg()  # a clear error when the [postgres] extra is not installed
        self.url = url
        self.store_id = store_id
        self.schema = schema_for(store_id)
        self.readonly = readonly
        self.where = f"{redacted(url)} (schema {self.schema})"
        self._version = 0
        self._side = None
        self._closed = False
        self.writer_id: int | None = None
        self.conn = self._connect_or_refuse()
        try:
            exists = self.conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone()
            if create:
                if exists:
                    raise CatalogError(f"catalog {self.where}: the schema already exists; a store id is used once")
                self.conn.execute(f"CREATE SCHEMA {self.schema}")
            elif not exists:
                raise StoreNotFoundError(
                    f"catalog {self.where}: this database holds no catalog of store {store_id} (no schema "
                    f"{self.schema}); is it the store's catalog database, or did the catalog move? Open the store "
                    "with catalog=<its current URL>")
            self.conn.execute(f"SET search_path TO {self.schema}")
            if not create:
                self._check_store()
        except BaseException:
            self.conn.close()
            raise

    def _connect_or_refuse(self):
        psycopg = _psycopg()
        try:
            return self._connect()
        except psycopg.Error as err:
            raise translate_error(err, self.where) from None

    def connection_lost(self) -> bool:
        return not self._closed and bool(self.conn.closed or self.conn.broken)

    def reconnect_if_lost(self) -> bool:
        """A new session when the old one is gone: its writer registration (a session lock) went with it, so the
        store registers again (a new writer number and journal; a writer that survives the old number's
        collection never writes into a journal that is being collected)."""
        if not self.connection_lost():
            return False
        self._disconnect()
        self.conn = self._connect_or_refuse()
        self.conn.execute(f"SET search_path TO {self.schema}")
        self._check_store()
        self.writer_id = None
        self._depth = 0
        return True

    def _connect(self):
        psycopg = _psycopg()
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="lightning-modyn")
        conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
        return conn

    def _check_store(self) -> None:
        rows = dict(self.conn.execute(
            "SELECT name, value FROM meta WHERE name IN ('format_version', 'store_id')").fetchall())
        check_format_version(rows.get("format_version"), self.where)
        if rows.get("store_id") != self.store_id:
            raise CatalogError(f"catalog {self.where} belongs to store {rows.get('store_id')!r}, not to store "
                               f"{self.store_id!r}; two stores cannot share a catalog")

    # ------------------------------------------------------------------ lifecycle
    def initialise(self, meta: dict[str, str]) -> None:
        self.conn.execute("BEGIN")  # the tables and their first rows, all or nothing (no version row to lock yet)
        try:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            base = {"format_version": str(FORMAT_VERSION), "next_key": "0", "next_shard": "0", "version": "0",
                    "layout": "0", "max_span": "0", "max_count": "1", "created": str(int(time.time())),
                    "next_writer": "0", "store_id": self.store_id}
            base.update(meta)
            with self.conn.cursor() as cur:
                cur.executemany("INSERT INTO meta VALUES (%s, %s)", list(base.items()))
        except BaseException:
            self._rollback()
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        self._disconnect()

    def _disconnect(self) -> None:
        for conn in (self._side, getattr(self, "conn", None)):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._side = None

    def drop(self) -> None:
        """Remove the store's schema and everything in it (for tests and for removing a store)."""
        self.conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    # ------------------------------------------------------------------ statements
    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def _execute(self, sql: str, params: Sequence = ()):
        return self.conn.execute(self._sql(sql), tuple(params))

    def _executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
        rows = list(rows)
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)

    def _insert_rows(self, table: str, columns: str, rows: list[tuple]) -> None:
        """``COPY``: one statement for any number of rows (an ``INSERT`` per row cost ~100 µs of server time)."""
        if not rows:
            return
        psycopg = _psycopg()
        try:
            with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.errors.UniqueViolation as err:
            found = re.search(r"\(wds_key\)=\((.*)\) already exists", err.diag.message_detail or "")
            if found is None:
                raise
            duplicate = DuplicateKeyError(f"__key__ {found.group(1)!r} is already in the store")
            duplicate.key = found.group(1)
            raise duplicate from None

    def _begin(self) -> None:
        """Begin by taking the next catalog version: a row lock held to the commit, so commits serialise, each sees
        every earlier one, and versions become visible in order."""
        self.conn.execute("BEGIN")
        row = self.conn.execute("UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) "
                                "WHERE name = 'version' RETURNING value").fetchone()
        self._version = int(row[0])

    def _commit(self) -> None:
        psycopg = _psycopg()
        try:
            self.conn.execute("COMMIT")
        except psycopg.OperationalError as err:
            raise CatalogError(
                f"catalog {self.where}: the connection to PostgreSQL was lost while committing ({str(err).strip()}), "
                "so whether this call was committed is unknown: look for its keys (store.contains, "
                "store.new_since) before repeating it; the store reconnects on the next call") from None

    def _rollback(self) -> None:
        with contextlib.suppress(Exception):  # a dropped connection has nothing to roll back
            self.conn.execute("ROLLBACK")

    def bump(self, layout: bool = False) -> None:
        if layout:  # the version was taken when the transaction began
            self._increment("layout")

    def allocate(self, name: str, n: int) -> int:
        """Ids from a counter, in a short transaction of their own on a second connection: never rolled back (a
        failed write leaves a gap), never waiting for another writer's commit."""
        if self._side is None:
            self._side = self._connect()
            self._side.execute(f"SET search_path TO {self.schema}")
        row = self._side.execute(
            "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + %s AS TEXT) WHERE name = %s "
            "RETURNING CAST(value AS BIGINT) - %s", (n, name, n)).fetchone()
        return int(row[0])

    def change_token(self) -> tuple[int, int]:
        return int(self.conn.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()[0]), self.commits

    @contextlib.contextmanager
    def read_view(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ entries by commit
    def _insert_entries(self, rows: list[tuple]) -> None:
        self._insert_rows("entries", f"{ENTRY_COLUMNS}, commit_version", [(*row, self._version) for row in rows])

    def _since_clause(self, since: tuple[int, int] | None, table: str = "") -> str:
        return "1 = 1" if since is None else f"{table}commit_version > ?"

    def _since_params(self, since: tuple[int, int] | None) -> tuple:
        return () if since is None else (since[0],)

    def _key_set(self, column: str, keys) -> tuple[str, tuple]:
        import numpy as np

        return f"{column} = ANY(CAST(? AS BIGINT[]))", (np.asarray(keys, np.int64).tolist(),)

    # ------------------------------------------------------------------ writers
    def register_writer(self) -> int:
        """Register this process as a writer: a number of its own, and a session lock on it that PostgreSQL frees
        when the process or its connection ends. Returns the number."""
        number = self.allocate("next_writer", 1)
        self.conn.execute("SELECT pg_advisory_lock(hashtext(%s), %s)", (self.schema, number))
        self.conn.execute("INSERT INTO writers VALUES (%s, %s, %s, %s)",
                          (number, socket.gethostname(), os.getpid(), int(time.time())))
        self.writer_id = number
        return number

    @contextlib.contextmanager
    def writer_gone(self, number: int) -> Iterator[bool]:
        """Whether writer ``number`` is gone (its lock is free); while the block runs, its lock is held here, so
        it cannot come back in between."""
        if number == self.writer_id:
            yield False
            return
        got = self.conn.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s)", (self.schema, number)).fetchone()[0]
        try:
            yield bool(got)
        finally:
            if got:
                self.conn.execute("DELETE FROM writers WHERE id = %s", (number,))
                self.conn.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", (self.schema, number))
