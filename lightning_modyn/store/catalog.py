"""The catalog: which keys exist, where their bytes are, and their timestamps and labels — one interface, two backends.

One row of ``entries`` describes either one sample (a byte range in a shard) or a run of record rows with
consecutive keys (``count`` rows of ``length`` bytes from ``offset``). Runs keep the catalog small: a store of
100 M Criteo rows has tens of thousands of entries, so opening it and mapping keys to bytes stays cheap.

Queries return numpy arrays and use indexes, so they cost what they return, not what the store holds:
time ranges use ``min_ts`` and the largest span of any entry (``max_span``), "new since key" uses the primary key.

:class:`Catalog` holds every query, in SQL that SQLite and PostgreSQL both run (``?`` placeholders, ``coalesce``,
``ON CONFLICT``). A backend supplies the connection, the schema, and what differs: how a write is serialised
(:meth:`Catalog.transaction`), where ids come from (:meth:`Catalog.allocate`), and how a reader asks what changed.
``catalog_sqlite.SQLiteCatalog`` is the embedded default (one writer); ``catalog_postgres.PostgresCatalog`` lets
many processes on many machines write one store.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from lightning_modyn.store.errors import CatalogError, StoreVersionError

FORMAT_VERSION = 1
BUSY_TIMEOUT_S = 5
"""How long a write waits for another process's write transaction on the catalog before StoreLockedError."""
NO_LABEL = np.iinfo(np.int64).min
"""Label value in numpy arrays for samples stored without a label."""

KIND_SAMPLES = 0
KIND_RECORDS = 1

ENTRY_COLUMNS = ('first_key, count, shard, "offset", length, min_ts, max_ts, label, appended, wds_key, ts_blob, '
                 'label_blob')
ENTRY_ROW = 'first_key, count, shard, "offset", length, min_ts, max_ts, label, wds_key, ts_blob, label_blob'
"""The columns of an entry row as queries return it (see :meth:`Catalog.entry_rows`)."""


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
    return np.load(io.BytesIO(bytes(blob)), allow_pickle=False).astype(np.int64)


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


ERROR_TRANSLATORS: list[Callable[[Exception, str], Exception | None]] = []
"""A backend's translation of its driver's errors into the store's (None: not one of its errors); each backend
module adds its own when imported."""


@contextlib.contextmanager
def catalog_errors(where: str) -> Iterator[None]:
    """Turn a catalog backend's errors into the store's, naming the catalog: a write lock held too long by another
    process is ``StoreLockedError``; anything else (a damaged file, a failed write, a lost connection) is
    ``CatalogError``. Each backend translates its own driver's errors (:data:`ERROR_TRANSLATORS`)."""
    try:
        yield
    except Exception as err:
        for translate in ERROR_TRANSLATORS:
            mine = translate(err, where)
            if mine is not None:
                raise mine from err
        raise


def check_format_version(value: object, where: str) -> None:
    """Refuse a catalog without a format version, or of a format newer than this version of the package reads."""
    if value is None:
        raise CatalogError(f"catalog {where!r} is not a lightning-modyn catalog (no format_version)")
    try:
        version = int(value)
    except ValueError:
        raise CatalogError(f"catalog {where!r}: format_version {value!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise StoreVersionError(
            f"catalog {where!r} has format_version {version}, newer than the {FORMAT_VERSION} this version "
            "of lightning-modyn reads; upgrade lightning-modyn to open it"
        )


class Catalog:
    """The store's queries and mutations, over a backend's connection. Mutations happen inside :meth:`transaction`.

    Backends set ``conn`` (a DB-API connection in autocommit mode, whose ``execute`` returns a cursor), ``where``
    (how errors name the catalog) and ``readonly``, and implement the abstract methods below.
    """

    where: str
    readonly: bool
    concurrent_writers = False
    """Whether several processes may write through this backend at once (keys then commit out of key order)."""
    key_chunk = 1 << 17
    """Keys per query when rows are fetched for a set of keys."""

    def __init__(self) -> None:
        self.commits = 0
        self._depth = 0

    # ------------------------------------------------------------------ backend hooks
    def _execute(self, sql: str, params: Sequence = ()):
        """Run one statement written with ``?`` placeholders; returns a cursor."""
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A context in which mutations commit together (or not at all), serialised with every other writer's;
        inside another transaction, part of it."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._begin()
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._rollback()
            self.commits += 1
            raise
        self._depth = 0
        self._commit()
        self.commits += 1

    def _begin(self) -> None:
        """Open a write transaction, serialised with every other writer's."""
        raise NotImplementedError

    def _commit(self) -> None:
        self._execute("COMMIT")

    def _rollback(self) -> None:
        self._execute("ROLLBACK")

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """The span of one write call, around writing its shard files and then its :meth:`transaction`. A backend
        with one writer holds its write transaction over the whole span; one with many writers holds nothing here,
        so that writers write their files side by side and only serialise their commits."""
        yield

    def change_token(self):
        """Changes whenever anything commits (checked once per read: cheap)."""
        raise NotImplementedError

    def read_view(self):
        """Run several reads against one committed state (a no-op inside a transaction already open)."""
        raise NotImplementedError

    def allocate(self, name: str, n: int) -> int:
        """Reserve ``n`` consecutive ids from the counter ``name`` (``next_key`` or ``next_shard``)."""
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Make every commit part of the catalog's main file (for backends that are files)."""

    def connection_lost(self) -> bool:
        """Whether the connection to the catalog is gone (not closed on purpose)."""
        return False

    def reconnect_if_lost(self) -> bool:
        """At the start of a call: if the connection to the catalog was lost (a server restart, a network cut),
        connect again and return True, so that the caller can renew what lived in the old session. Never used
        within a call: a call whose connection drops fails as a whole."""
        return False

    def close(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, str]:
        return dict(self._execute("SELECT name, value FROM meta").fetchall())

    def get_meta(self, name: str, default: str | None = None) -> str | None:
        row = self._execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def number(self, name: str) -> int:
        """A numeric meta value: a setting (``shard_max_bytes``...) or a counter (``next_key``...)."""
        return int(self.get_meta(name))

    def set_meta(self, name: str, value: object) -> None:
        self._execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                      (name, str(value)))

    def versions(self) -> tuple[int, int]:
        rows = dict(self._execute("SELECT name, value FROM meta WHERE name IN ('version', 'layout')").fetchall())
        return int(rows["version"]), int(rows["layout"])

    def _increment(self, name: str, n: int = 1) -> None:
        self._execute("UPDATE meta SET value = CAST(CAST(value AS BIGINT) + ? AS TEXT) WHERE name = ?", (n, name))

    def bump(self, layout: bool = False) -> None:
        """Mark a commit that readers must see: ``version`` always, ``layout`` when keys moved or vanished (deletes,
        compaction), which readers cannot follow by extending what they hold."""
        self._increment("version")
        if layout:
            self._increment("layout")

    # ------------------------------------------------------------------ shards
    def add_shard(self, shard_id: int, path: str, owned: bool, kind: int, size: int, total: int) -> None:
        self._execute("INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (shard_id, path, int(owned), kind, size, total, total, int(time.time())))

    def shards(self) -> list[dict]:
        cur = self._execute("SELECT id, path, owned, kind, size, total, live, created FROM shards ORDER BY id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def shard(self, shard_id: int) -> dict | None:
        """One shard's row (see :meth:`shards`), or None when it is gone."""
        cur = self._execute("SELECT id, path, owned, kind, size, total, live, created FROM shards WHERE id = ?",
                            (shard_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row))

    def shard_ids_with_path(self, paths: Sequence[str]) -> list[str]:
        found = []
        for chunk in _chunks(list(paths), 900):
            q = f"SELECT path FROM shards WHERE path IN ({','.join('?' * len(chunk))})"
            found += [r[0] for r in self._execute(q, chunk).fetchall()]
        return found

    # ------------------------------------------------------------------ entries
    def _insert_rows(self, table: str, columns: str, rows: list[tuple]) -> None:
        """Insert ``rows`` (values of ``columns``, comma-separated) into ``table``; a backend may do it in bulk."""
        marks = ",".join("?" * len(columns.split(",")))
        self._executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    def _insert_entries(self, rows: list[tuple]) -> None:
        """Insert entry rows in :data:`ENTRY_COLUMNS` order (a backend may add columns of its own)."""
        self._insert_rows("entries", ENTRY_COLUMNS, rows)

    def add_entries(self, entries: Iterable[Entry], appended: int) -> None:
        rows = []
        max_span = self.number("max_span")
        max_count = self.number("max_count")
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
        self._insert_entries(rows)
        self.set_meta("max_span", max_span)
        self.set_meta("max_count", max_count)
        self.add_label_counts(counts)

    def add_label_counts(self, counts: dict[int, int]) -> None:
        self._executemany(
            "INSERT INTO label_counts VALUES (?, ?) ON CONFLICT (label) DO UPDATE SET "
            "count = label_counts.count + excluded.count",
            [(int(k), int(v)) for k, v in counts.items()],
        )
        self._execute("DELETE FROM label_counts WHERE count = 0")

    def existing_wds_keys(self, wds_keys: Sequence[str]) -> list[str]:
        found = []
        for chunk in _chunks(list(wds_keys), 900):
            q = f"SELECT wds_key FROM entries WHERE wds_key IN ({','.join('?' * len(chunk))})"
            found += [r[0] for r in self._execute(q, chunk).fetchall()]
        return found

    def location_arrays(self, since: tuple[int, int] | None = None, kind: int | None = None) -> np.ndarray:
        """(n, 7) int64: first_key, count, shard, offset, length, min_ts, label (NO_LABEL when NULL), by key — of
        every entry, or of those committed after ``since`` = (catalog version, largest key at that version); only
        those in shards of ``kind`` if given."""
        where = self._since_clause(since)
        params: tuple = self._since_params(since)
        if kind is not None:
            where += " AND shard IN (SELECT id FROM shards WHERE kind = ?)"
            params += (kind,)
        return self._locations(where, params)

    def locations_of(self, keys: np.ndarray) -> np.ndarray:
        """:meth:`location_arrays` rows of the entries that start at one of ``keys`` (a sample's entry starts at its
        key): what a reader needs to read those samples, in one query whatever the store holds."""
        parts = [np.zeros((0, 7), np.int64)]
        for chunk in _key_chunks(keys, self.key_chunk):
            clause, params = self._key_set("first_key", chunk)
            parts.append(self._locations(clause, params))
        return np.concatenate(parts)

    def _locations(self, where: str, params: tuple) -> np.ndarray:
        cur = self._execute(
            'SELECT first_key, count, shard, "offset", length, min_ts, coalesce(label, ?) FROM entries '
            f"WHERE {where} ORDER BY first_key",
            (int(NO_LABEL), *params),
        )
        return _int_rows(cur, 7)

    def _key_set(self, column: str, keys: np.ndarray) -> tuple[str, tuple]:
        """SQL testing ``column`` against a set of keys given as one parameter (any number of keys, one query).
        Here: SQLite's ``json_each`` over a JSON array."""
        return f"{column} IN (SELECT value FROM json_each(?))", (json.dumps(np.asarray(keys).tolist()),)

    def _since_clause(self, since: tuple[int, int] | None, table: str = "") -> str:
        """SQL selecting the entries (of ``table``, an alias with its dot) committed after ``since``. Here: keys
        above the largest key then, exact when keys commit in key order, as with one writer."""
        return "1 = 1" if since is None else f"{table}first_key > ?"

    def _since_params(self, since: tuple[int, int] | None) -> tuple:
        return () if since is None else (since[1],)

    def deleted_among(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` are deleted, sorted."""
        if not len(keys):
            return np.zeros(0, np.int64)
        clause, params = self._key_set("key", keys)
        return _int_rows(self._execute(f"SELECT key FROM deleted WHERE {clause} ORDER BY key", params), 1)[:, 0]

    def deleted_in_runs(self) -> np.ndarray:
        """Deleted keys that still lie inside an entry of several keys (record rows awaiting compaction), sorted:
        a reader must know them to refuse those rows, while a deleted sample simply has no entry."""
        return _int_rows(self._execute(
            "SELECT d.key FROM deleted d WHERE d.key < (SELECT e.first_key + e.count FROM entries e "
            "WHERE e.first_key <= d.key ORDER BY e.first_key DESC LIMIT 1) ORDER BY d.key"), 1)[:, 0]

    def deleted_in(self, lo: int, hi: int) -> np.ndarray:
        return _int_rows(self._execute("SELECT key FROM deleted WHERE key >= ? AND key < ? ORDER BY key", (lo, hi)),
                         1)[:, 0]

    def add_members(self, rows: Iterable[tuple[str, int, int, int]]) -> None:
        """(extension, key, data offset relative to the sample's range, size) of each member of new samples."""
        self._insert_rows("members", 'ext, first_key, "offset", size', list(rows))

    def member_layout(self, ext: str, keys: np.ndarray) -> np.ndarray:
        """(n, 3) int64: key, relative data offset, size of the ``ext`` member of each live sample among ``keys``,
        by key."""
        parts = [np.zeros((0, 3), np.int64)]
        for chunk in _key_chunks(keys, self.key_chunk):
            clause, params = self._key_set("first_key", chunk)
            parts.append(_int_rows(self._execute(
                f'SELECT first_key, "offset", size FROM members WHERE ext = ? AND {clause} ORDER BY first_key',
                (ext, *params)), 3))
        return np.concatenate(parts)

    def entries_for_keys(self, first_keys: Sequence[int]) -> dict[int, tuple]:
        """first_key -> (wds_key, ts_blob, label_blob) for the given entries."""
        out = {}
        for chunk in _key_chunks(np.asarray(first_keys, np.int64), self.key_chunk):
            clause, params = self._key_set("first_key", chunk)
            q = f"SELECT first_key, wds_key, ts_blob, label_blob FROM entries WHERE {clause}"
            for row in self._execute(q, params).fetchall():
                out[row[0]] = row[1:]
        return out

    def entry_rows(self, where: str, params: Sequence) -> list[tuple]:
        """Entry rows (first_key, count, shard, offset, length, min_ts, max_ts, label, wds_key, ts_blob, label_blob)
        matching ``where``, by key."""
        return self._execute(f"SELECT {ENTRY_ROW} FROM entries WHERE {where} ORDER BY first_key", params).fetchall()

    # ------------------------------------------------------------------ deletes, compaction, erasure
    def delete_keys(self, keys: np.ndarray, samples: np.ndarray, per_shard: dict[int, int],
                    label_delta: dict[int, int]) -> None:
        """Mark ``keys`` deleted: ``samples`` (keys that are whole entries) lose their entry and member rows, record
        rows stay inside their run until compaction; shard live counts and label counts follow."""
        self._insert_rows("deleted", "key", [(int(k),) for k in keys])
        for chunk in _key_chunks(samples, self.key_chunk):
            for table in ("entries", "members"):
                clause, params = self._key_set("first_key", chunk)
                self._execute(f"DELETE FROM {table} WHERE {clause}", params)
        self._executemany("UPDATE shards SET live = live - ? WHERE id = ?",
                          [(int(count), int(shard)) for shard, count in per_shard.items()])
        self.add_label_counts(label_delta)

    def shard_entries(self, shard_id: int) -> list[tuple]:
        """The entry rows (see :meth:`entry_rows`) of one shard, by key."""
        return self.entry_rows("shard = ?", (shard_id,))

    def shard_appended(self, shard_id: int) -> dict[int, int]:
        """first_key -> the wall-clock second its entry was appended, for the entries of one shard."""
        return dict(self._execute("SELECT first_key, appended FROM entries WHERE shard = ?", (shard_id,)).fetchall())

    def replace_shard(self, old_id: int, entries: list[tuple[Entry, int]]) -> None:
        """Move a shard's surviving entries (each with its original ``appended`` second) to their new places and
        drop the old shard's rows; label counts already exclude the deleted samples."""
        self._execute("DELETE FROM entries WHERE shard = ?", (old_id,))
        self._execute("DELETE FROM shards WHERE id = ?", (old_id,))
        self._insert_entries([(e.first_key, e.count, e.shard, e.offset, e.length, e.min_ts, e.max_ts, e.label,
                               appended, e.wds_key, e.ts_blob, e.label_blob) for e, appended in entries])

    def add_erasure(self, path: str) -> None:
        """Record that the file ``path`` must be removed (its samples were deleted and its survivors moved)."""
        self._execute("INSERT INTO erasures VALUES (?, ?) ON CONFLICT (path) DO NOTHING", (path, int(time.time())))

    def erasure_done(self, path: str) -> None:
        self._execute("DELETE FROM erasures WHERE path = ?", (path,))

    def pending_erasures(self) -> list[str]:
        """Files that hold deleted bytes and are to be removed, oldest first."""
        return [r[0] for r in self._execute("SELECT path FROM erasures ORDER BY since, path").fetchall()]

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
        span = self.number("max_span")
        clauses, params = [], []
        if start is not None:
            clauses.append("min_ts >= ?")
            params.append(start - span)
            clauses.append("max_ts >= ?")
            params.append(start)
        if end is not None:
            clauses.append("min_ts < ?")
            params.append(end)
        rows = self.entry_rows(" AND ".join(clauses) or "1 = 1", params)
        return self.expand(rows, start, end)

    def after_key(self, key: int) -> Slice:
        first = self._execute("SELECT max(first_key) FROM entries WHERE first_key <= ?", (key,)).fetchone()[0]
        lo = key + 1 if first is None else first
        rows = self.entry_rows("first_key >= ?", (lo,))
        return self.expand(rows, lo_key=key)

    def committed_since(self, since: tuple[int, int] | None) -> tuple[Slice, tuple[int, int]]:
        """Live keys committed after ``since`` (see :meth:`location_arrays`; None: every live key), by key, and
        the ``since`` that names the state read: exact with any number of writers."""
        with self.read_view():
            version = self.versions()[0]
            cursor = (version, self.number("next_key") - 1)
            rows = self.entry_rows(self._since_clause(since), self._since_params(since))
            return self.expand(rows), cursor

    def appended_since(self, when: int) -> Slice:
        return self.expand(self.entry_rows("appended >= ?", (when,)))

    def label_counts(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self._execute("SELECT label, count FROM label_counts ORDER BY label")}

    def live_count(self) -> int:
        return int(self._execute("SELECT coalesce(sum(live), 0) FROM shards").fetchone()[0])

    def totals(self) -> dict[str, int]:
        live = self._execute(
            "SELECT coalesce(sum(live), 0), coalesce(sum(size), 0), count(*), coalesce(sum(total - live), 0) "
            "FROM shards"
        ).fetchone()
        deleted = self._execute("SELECT count(*) FROM deleted").fetchone()[0]
        lo, hi = self._execute("SELECT min(min_ts), max(max_ts) FROM entries").fetchone()
        return {"samples": int(live[0]), "bytes": int(live[1]), "shards": int(live[2]), "deleted": int(deleted),
                "awaiting_compaction": int(live[3]), "min_timestamp": None if lo is None else int(lo),
                "max_timestamp": None if hi is None else int(hi)}


def _int_rows(cursor, width: int, chunk: int = 1 << 16) -> np.ndarray:
    """A cursor's integer rows as an (n, width) int64 array, converted a chunk at a time: a million rows never
    exist as Python tuples all at once (that would take ~5x the array's memory)."""
    parts = []
    while True:
        rows = cursor.fetchmany(chunk)
        if not rows:
            break
        parts.append(np.array(rows, dtype=np.int64).reshape(-1, width))
    return np.concatenate(parts) if parts else np.zeros((0, width), np.int64)


def _key_chunks(keys: np.ndarray, n: int = 1 << 17):
    """Sorted ``keys`` in slices of ``n``: a query per slice, so that no result set (held whole by the database
    client) outgrows a slice's worth of rows, and results come out in key order."""
    keys = np.unique(np.asarray(keys, np.int64))
    for i in range(0, len(keys), n):
        yield keys[i : i + n]


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]
