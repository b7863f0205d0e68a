"""The catalog: which keys exist, where their bytes are, and their timestamps and labels — in embedded SQLite.

One row of ``entries`` describes either one sample (a byte range in a shard) or a run of record rows with
consecutive keys (``count`` rows of ``length`` bytes from ``offset``). Runs keep the catalog small: a store of
100 M Criteo rows has tens of thousands of entries, so opening it and mapping keys to bytes stays cheap.

Queries return numpy arrays and use indexes, so they cost what they return, not what the store holds:
time ranges use ``min_ts`` and the largest span of any entry (``max_span``), "new since key" uses the primary key.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from lightning_modyn.store.errors import CatalogError, StoreLockedError, StoreVersionError

FORMAT_VERSION = 1
BUSY_TIMEOUT_S = 5
"""How long a write waits for another process's write transaction on the catalog before StoreLockedError."""
NO_LABEL = np.iinfo(np.int64).min
"""Label value in numpy arrays for samples stored without a label."""

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
    offset INTEGER NOT NULL,
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
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (first_key, ext)
) WITHOUT ROWID;
""".format(erasures=ERASURES_TABLE)

KIND_SAMPLES = 0
KIND_RECORDS = 1


def pack_array(values: np.ndarray) -> bytes:
    """An int array as ``.npy`` bytes in the smallest integer dtype that holds it (no pickle)."""
    values = np.asarray(values, dtype=np.int64)
    if values.size:
        lo, hi = int(values.min()), int(values.max())
        for dtype in (np.int8, np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                values = values.astype(dtype)
                break
    buf = io.BytesIO()
    np.save(buf, values, allow_pickle=False)
    return buf.getvalue()


def unpack_array(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False).astype(np.int64)


@dataclass
class Entry:
    """One row of ``entries`` as written by an append, ingest or compaction."""

    first_key: int
    count: int
    shard: int
    offset: int
    length: int
    min_ts: int
    max_ts: int
    label: int | None = None
    wds_key: str | None = None
    ts_blob: bytes | None = None
    label_blob: bytes | None = None


@dataclass
class Slice:
    """Keys with their timestamps and labels (``NO_LABEL`` where a sample has none), sorted by key."""

    keys: np.ndarray
    timestamps: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    @staticmethod
    def empty() -> "Slice":
        z = np.zeros(0, np.int64)
        return Slice(z, z.copy(), z.copy())


@contextlib.contextmanager
def catalog_errors(path: str) -> Iterator[None]:
    """Turn SQLite's errors into the store's: a write lock held by another process is ``StoreLockedError``, anything
    else (a damaged file, a failed write) ``CatalogError`` — both naming the catalog file."""
    try:
        yield
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            raise StoreLockedError(
                f"catalog {path!r}: another process holds a write transaction on it (waited {BUSY_TIMEOUT_S} s); "
                "retry when it is done"
            ) from None
        raise CatalogError(f"catalog {path!r}: {err} (disk full, file-size limit, read-only or damaged file?)") from err
    except sqlite3.DatabaseError as err:
        raise CatalogError(f"catalog {path!r} is damaged or not a lightning-modyn catalog: {err}") from err


class Catalog:
    """A thin, typed layer over the SQLite file. Mutations happen inside :meth:`transaction`.

    Opening checks that the file exists (unless ``create``), is a catalog, and is of a format this version reads. A
    read-only catalog on read-only media (where SQLite cannot make the WAL's shared-memory file) is opened
    ``immutable``, or from a private copy when its WAL still holds commits.
    """

    def __init__(self, path: str, readonly: bool = False, wal: bool = True, create: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self.commits = 0
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
        if row is None:
            raise CatalogError(f"catalog {self.path!r} is not a lightning-modyn catalog (no format_version)")
        try:
            version = int(row[0])
        except ValueError:
            raise CatalogError(f"catalog {self.path!r}: format_version {row[0]!r} is not a number") from None
        if version > FORMAT_VERSION:
            raise StoreVersionError(
                f"catalog {self.path!r} has format_version {version}, newer than the {FORMAT_VERSION} this version "
                "of lightning-modyn reads; upgrade lightning-modyn to open it"
            )

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

    def transaction(self):
        return _Transaction(self)

    def change_token(self) -> tuple[int, int]:
        """Changes whenever anything commits: another connection (``data_version``) or this one (a counter)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0], self.commits

    @contextlib.contextmanager
    def read_view(self) -> Iterator[None]:
        """Run several reads against one committed state (a no-op inside a transaction already open)."""
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

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT name, value FROM meta"))

    def get_meta(self, name: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def set_meta(self, name: str, value: object) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, str(value)))

    def versions(self) -> tuple[int, int]:
        rows = dict(self.conn.execute("SELECT name, value FROM meta WHERE name IN ('version', 'layout')"))
        return int(rows["version"]), int(rows["layout"])

    def bump(self, layout: bool = False) -> None:
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'version'")
        if layout:
            self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'layout'")

    def allocate(self, name: str, n: int) -> int:
        """Reserve ``n`` consecutive ids from the counter ``name`` (``next_key`` or ``next_shard``)."""
        first = int(self.get_meta(name))
        self.set_meta(name, first + n)
        return first

    # ------------------------------------------------------------------ shards
    def add_shard(self, shard_id: int, path: str, owned: bool, kind: int, size: int, total: int) -> None:
        self.conn.execute(
            "INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (shard_id, path, int(owned), kind, size, total, total, int(time.time())),
        )

    def shards(self) -> list[dict]:
        cur = self.conn.execute("SELECT id, path, owned, kind, size, total, live, created FROM shards ORDER BY id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur]

    def shard_paths(self) -> dict[int, str]:
        return dict(self.conn.execute("SELECT id, path FROM shards"))

    def shard_ids_with_path(self, paths: Sequence[str]) -> list[str]:
        found = []
        for chunk in _chunks(list(paths), 900):
            q = f"SELECT path FROM shards WHERE path IN ({','.join('?' * len(chunk))})"
            found += [r[0] for r in self.conn.execute(q, chunk)]
        return found

    # ------------------------------------------------------------------ entries
    def add_entries(self, entries: Iterable[Entry], appended: int) -> None:
        rows = []
        max_span = int(self.get_meta("max_span"))
        max_count = int(self.get_meta("max_count"))
        counts: dict[int, int] = {}
        for e in entries:
            rows.append((e.first_key, e.count, e.shard, e.offset, e.length, e.min_ts, e.max_ts, e.label, appended,
                         e.wds_key, e.ts_blob, e.label_blob))
            max_span = max(max_span, e.max_ts - e.min_ts)
            max_count = max(max_count, e.count)
            if e.label is not None:
                counts[e.label] = counts.get(e.label, 0) + e.count
            elif e.label_blob is not None:
                labels, n = np.unique(unpack_array(e.label_blob), return_counts=True)
                for label, c in zip(labels.tolist(), n.tolist()):
                    counts[label] = counts.get(label, 0) + c
        self.conn.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        self.set_meta("max_span", max_span)
        self.set_meta("max_count", max_count)
        self.add_label_counts(counts)

    def add_label_counts(self, counts: dict[int, int]) -> None:
        self.conn.executemany(
            "INSERT INTO label_counts VALUES (?, ?) ON CONFLICT(label) DO UPDATE SET count = count + excluded.count",
            counts.items(),
        )
        self.conn.execute("DELETE FROM label_counts WHERE count = 0")

    def existing_wds_keys(self, wds_keys: Sequence[str]) -> list[str]:
        found = []
        for chunk in _chunks(list(wds_keys), 900):
            q = f"SELECT wds_key FROM entries WHERE wds_key IN ({','.join('?' * len(chunk))})"
            found += [r[0] for r in self.conn.execute(q, chunk)]
        return found

    def location_arrays(self, after_key: int = -1) -> np.ndarray:
        """(n, 7) int64: first_key, count, shard, offset, length, min_ts, label (NO_LABEL when NULL), by key."""
        cur = self.conn.execute(
            "SELECT first_key, count, shard, offset, length, min_ts, ifnull(label, ?) FROM entries "
            "WHERE first_key > ? ORDER BY first_key",
            (int(NO_LABEL), after_key),
        )
        rows = cur.fetchall()
        return np.array(rows, dtype=np.int64).reshape(-1, 7)

    def deleted_keys(self) -> np.ndarray:
        return np.array([r[0] for r in self.conn.execute("SELECT key FROM deleted ORDER BY key")], dtype=np.int64)

    def deleted_in(self, lo: int, hi: int) -> np.ndarray:
        rows = self.conn.execute("SELECT key FROM deleted WHERE key >= ? AND key < ? ORDER BY key", (lo, hi))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def add_members(self, rows: Iterable[tuple[str, int, int, int]]) -> None:
        """(extension, key, data offset relative to the sample's range, size) of each member of new samples."""
        self.conn.executemany("INSERT INTO members VALUES (?, ?, ?, ?)", rows)

    def member_layout(self, ext: str, after_key: int = -1) -> np.ndarray:
        """(n, 3) int64: key, relative data offset, size of every live sample's ``ext`` member (of keys above
        ``after_key``), by key."""
        rows = self.conn.execute(
            "SELECT first_key, offset, size FROM members WHERE first_key > ? AND ext = ? ORDER BY first_key",
            (after_key, ext),
        ).fetchall()
        return np.array(rows, dtype=np.int64).reshape(-1, 3)

    def entries_for_keys(self, first_keys: Sequence[int]) -> dict[int, tuple]:
        """first_key -> (wds_key, ts_blob, label_blob) for the given entries."""
        out = {}
        for chunk in _chunks(sorted(set(map(int, first_keys))), 900):
            q = f"SELECT first_key, wds_key, ts_blob, label_blob FROM entries WHERE first_key IN ({','.join('?' * len(chunk))})"
            for row in self.conn.execute(q, chunk):
                out[row[0]] = row[1:]
        return out

    def entry_rows(self, where: str, params: Sequence) -> list[tuple]:
        """Entry rows (first_key, count, shard, offset, length, min_ts, max_ts, label, wds_key, ts_blob, label_blob)
        matching ``where``, by key."""
        return self.conn.execute(
            "SELECT first_key, count, shard, offset, length, min_ts, max_ts, label, wds_key, ts_blob, label_blob "
            f"FROM entries WHERE {where} ORDER BY first_key",
            params,
        ).fetchall()

    # ------------------------------------------------------------------ deletes, compaction, erasure
    def delete_keys(self, keys: np.ndarray, samples: np.ndarray, per_shard: dict[int, int],
                    label_delta: dict[int, int]) -> None:
        """Mark ``keys`` deleted: ``samples`` (keys that are whole entries) lose their entry and member rows, record
        rows stay inside their run until compaction; shard live counts and label counts follow."""
        self.conn.executemany("INSERT INTO deleted VALUES (?)", ((int(k),) for k in keys))
        if len(samples):
            self.conn.executemany("DELETE FROM entries WHERE first_key = ?", ((int(k),) for k in samples))
            self.conn.executemany("DELETE FROM members WHERE first_key = ?", ((int(k),) for k in samples))
        self.conn.executemany("UPDATE shards SET live = live - ? WHERE id = ?",
                              ((count, shard) for shard, count in per_shard.items()))
        self.add_label_counts(label_delta)

    def shard_entries(self, shard_id: int) -> list[tuple]:
        """The entry rows (see :meth:`entry_rows`) of one shard, by key."""
        return self.entry_rows("shard = ?", (shard_id,))

    def shard_appended(self, shard_id: int) -> dict[int, int]:
        """first_key -> the wall-clock second its entry was appended, for the entries of one shard."""
        return dict(self.conn.execute("SELECT first_key, appended FROM entries WHERE shard = ?", (shard_id,)))

    def replace_shard(self, old_id: int, entries: list[tuple[Entry, int]]) -> None:
        """Move a shard's surviving entries (each with its original ``appended`` second) to their new places and
        drop the old shard's rows; label counts already exclude the deleted samples."""
        self.conn.execute("DELETE FROM entries WHERE shard = ?", (old_id,))
        self.conn.execute("DELETE FROM shards WHERE id = ?", (old_id,))
        self.conn.executemany(
            "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(e.first_key, e.count, e.shard, e.offset, e.length, e.min_ts, e.max_ts, e.label, appended,
              e.wds_key, e.ts_blob, e.label_blob) for e, appended in entries],
        )

    def add_erasure(self, path: str) -> None:
        """Record that the file ``path`` must be removed (its samples were deleted and its survivors moved)."""
        self.conn.execute("INSERT OR IGNORE INTO erasures VALUES (?, ?)", (path, int(time.time())))

    def erasure_done(self, path: str) -> None:
        self.conn.execute("DELETE FROM erasures WHERE path = ?", (path,))

    def pending_erasures(self) -> list[str]:
        """Files that hold deleted bytes and are to be removed, oldest first."""
        try:
            return [r[0] for r in self.conn.execute("SELECT path FROM erasures ORDER BY since, path")]
        except sqlite3.OperationalError as err:  # a read-only catalog written before erasures were recorded
            if "no such table" in str(err):
                return []
            raise

    # ------------------------------------------------------------------ queries
    def expand(self, rows: list[tuple], lo_ts: int | None = None, hi_ts: int | None = None,
               lo_key: int | None = None) -> Slice:
        """Per-key arrays of entry rows, filtered by timestamp ``[lo_ts, hi_ts)``, keys ``> lo_key`` and deletions."""
        if not rows:
            return Slice.empty()
        parts_k, parts_t, parts_l = [], [], []
        for first, count, _shard, _off, _len, min_ts, _max_ts, label, _wk, ts_blob, label_blob in rows:
            keys = np.arange(first, first + count, dtype=np.int64)
            ts = unpack_array(ts_blob) + min_ts if ts_blob is not None else np.full(count, min_ts, np.int64)
            if label_blob is not None:
                labels = unpack_array(label_blob)
            else:
                labels = np.full(count, NO_LABEL if label is None else label, np.int64)
            parts_k.append(keys)
            parts_t.append(ts)
            parts_l.append(labels)
        keys, ts, labels = np.concatenate(parts_k), np.concatenate(parts_t), np.concatenate(parts_l)
        mask = np.ones(len(keys), bool)
        if lo_ts is not None:
            mask &= ts >= lo_ts
        if hi_ts is not None:
            mask &= ts < hi_ts
        if lo_key is not None:
            mask &= keys > lo_key
        # deleted samples lose their entry; deleted record rows stay inside their run until compaction
        dead = self.deleted_in(rows[0][0], rows[-1][0] + rows[-1][1])
        if len(dead):
            mask &= ~np.isin(keys, dead)
        return Slice(keys[mask], ts[mask], labels[mask])

    def time_range(self, start: int | None, end: int | None) -> Slice:
        span = int(self.get_meta("max_span"))
        clauses, params = [], []
        if start is not None:
            clauses.append("min_ts >= ?")
            params.append(start - span)
            clauses.append("max_ts >= ?")
            params.append(start)
        if end is not None:
            clauses.append("min_ts < ?")
            params.append(end)
        rows = self.entry_rows(" AND ".join(clauses) or "1", params)
        return self.expand(rows, start, end)

    def after_key(self, key: int) -> Slice:
        first = self.conn.execute("SELECT max(first_key) FROM entries WHERE first_key <= ?", (key,)).fetchone()[0]
        lo = key + 1 if first is None else first
        rows = self.entry_rows("first_key >= ?", (lo,))
        return self.expand(rows, lo_key=key)

    def appended_since(self, when: int) -> Slice:
        return self.expand(self.entry_rows("appended >= ?", (when,)))

    def label_counts(self) -> dict[int, int]:
        return dict(self.conn.execute("SELECT label, count FROM label_counts ORDER BY label"))

    def live_count(self) -> int:
        return int(self.conn.execute("SELECT ifnull(sum(live), 0) FROM shards").fetchone()[0])

    def totals(self) -> dict[str, int]:
        live = self.conn.execute(
            "SELECT ifnull(sum(live), 0), ifnull(sum(size), 0), count(*), ifnull(sum(total - live), 0) FROM shards"
        ).fetchone()
        deleted = self.conn.execute("SELECT count(*) FROM deleted").fetchone()[0]
        ts = (self.conn.execute("SELECT min(min_ts) FROM entries").fetchone()[0],
              self.conn.execute("SELECT max(max_ts) FROM entries").fetchone()[0])
        return {"samples": live[0], "bytes": live[1], "shards": live[2], "deleted": deleted,
                "awaiting_compaction": live[3], "min_timestamp": ts[0], "max_timestamp": ts[1]}


class _Transaction:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.conn = catalog.conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        self.catalog.commits += 1
        return False


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


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]
