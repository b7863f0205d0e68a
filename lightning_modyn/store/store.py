"""``SampleStore``: every sample of a dynamic dataset addressable by a stable int64 key.

Samples live in WebDataset tar shards (readable by ``webdataset.WebDataset`` and ``tar``); tiny fixed-size records
are packed many to a tar member. A catalog maps keys to byte ranges and holds timestamps and labels for selection
and triggers: an SQLite file inside the store (one writer at a time), or a PostgreSQL database (many writers on
many machines). Reads are batched: keys are grouped by shard, mapped to byte positions with vectorized lookups, and
gathered from a memory map (local) or with coalesced range requests (any fsspec URL); a reader holds the locations
of the keys it reads, not of the whole store.

Appends are atomic (a shard becomes visible together with its catalog rows), deletes hide samples at once, and
:meth:`SampleStore.compact` rewrites shards so that deleted bytes are physically gone and merges small ones. Any
number of processes read; a store is opened by its URL alone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from lightning_modyn._checks import check_int, check_whole
from lightning_modyn._io import is_temp_name
from lightning_modyn.store.batch import MemberBatch
from lightning_modyn.store.catalog import KIND_RECORDS, KIND_SAMPLES, NO_LABEL, Catalog, Slice, catalog_errors
from lightning_modyn.store.catalog_postgres import PostgresCatalog, is_postgres_url, redacted
from lightning_modyn.store.catalog_sqlite import SQLiteCatalog
from lightning_modyn.store.codec import encode_sample
from lightning_modyn.store.compaction import Compaction
from lightning_modyn.store.errors import (
    CatalogError,
    DuplicateKeyError,
    ReadOnlyStoreError,
    RecordDtypeError,
    ShardFormatError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
    StoreVersionError,
)
from lightning_modyn.store.filesystem import StoreFS
from lightning_modyn.store.ingest import register_shards, scan_shard, shard_ref, values_from_members
from lightning_modyn.store.journal import JOURNAL, ShardJournal
from lightning_modyn.store.lease import WriterLease
from lightning_modyn.store.reading import Reader
from lightning_modyn.store.snapshot import Snapshot
from lightning_modyn.store.values import (
    as_int_array,
    as_keys,
    check_record_dtype,
    check_wds_key,
    dtype_from_json,
    dtype_to_json,
)
from lightning_modyn.store.writing import SHARDS, NewShards, write_record_shards, write_sample_shards


log = logging.getLogger(__name__)

MARKER = "store.json"
CATALOG = "catalog.sqlite"
LOCK = "writer.lock"
STORE_FORMAT = "lightning-modyn-store"
STORE_VERSION = 2
"""The newest store format this version reads: 1, a store with its SQLite catalog beside the shards; 2, a store
whose catalog is elsewhere (``store.json`` names it)."""


def _now() -> int:
    return int(time.time())


def _serialised(method, read: bool):
    """Run a public method of a store under the store's lock.

    Threads may share one store object: their calls then run one after the other, so that each sees a consistent
    snapshot and none interleaves its catalog reads with another's transaction (one catalog connection per store
    object). A forked child reopens the store, with a fresh lock, before taking it: a lock held by one of the
    parent's threads at fork time is never waited for. A catalog connection that was lost between calls is made
    again first; a read that loses it midway is run once more on a new one (a write is not: it fails as a whole,
    and the next call reconnects).
    """
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if self._pid != os.getpid():
            self._reopen_in_child()
        with self._calls:
            for attempt in range(2 if read else 1):
                try:
                    with catalog_errors(self._catalog_where):
                        if self._catalog.reconnect_if_lost() and not self.readonly:
                            self._become_writer()
                        return method(self, *args, **kwargs)
                except CatalogError:
                    if attempt or not read or not self._catalog.connection_lost():
                        raise
                    log.warning("%s: the catalog connection was lost during %s; reading again on a new one",
                                self.url, method.__name__)
    return call


def _one_call_at_a_time(method):
    """A call that writes (or closes): serialised, and never repeated (see :func:`_serialised`)."""
    return _serialised(method, read=False)


def _one_read_at_a_time(method):
    """A call that only reads: serialised, and repeated once on a new connection if the old one was lost."""
    return _serialised(method, read=True)


class SampleStore:
    """A key-addressable store of samples over WebDataset shards, local or at any fsspec URL.

    Create one with :meth:`create` and reopen it anywhere with :meth:`open`.

    Args:
        url: Local directory or fsspec URL (``s3://bucket/prefix``, ``memory://x``...).
        readonly: Refuse every mutation; any number of readers may open a store that writers append to.
        storage_options: Passed to fsspec for remote URLs (credentials, endpoint).

    Example:
        >>> import tempfile, numpy as np
        >>> store = SampleStore.create(tempfile.mkdtemp() + "/store")
        >>> keys = store.append([{"txt": "hello", "cls": 1}, {"txt": "world", "cls": 0}], labels=[1, 0])
        >>> keys.tolist()
        [0, 1]
        >>> store.get([1])[0]["txt"]
        b'world'
        >>> store.delete([0]); len(store)
        1
        1
    """

    def __init__(self, url: str, readonly: bool = False, storage_options: dict | None = None,
                 catalog: str | None = None, _create: dict | None = None):
        self.url = str(url)
        self.readonly = readonly
        self.storage_options = storage_options or {}
        self.files = StoreFS(self.url, self.storage_options)
        self._catalog_url = catalog
        self._store_id: str | None = None
        self._lock_handle = None
        self._lease: WriterLease | None = None
        self._tmpdir: str | None = None
        self._reader = Reader(self)
        self._record_dtype: np.dtype | None = None
        self._pid = os.getpid()
        self._calls = threading.RLock()
        self._catalog_where = (redacted(catalog) if is_postgres_url(catalog) else
                               self.files.path(CATALOG) if self.files.local else f"{self.url.rstrip('/')}/{CATALOG}")
        self._journal = ShardJournal(self.files)
        try:
            with catalog_errors(self._catalog_where):
                self._create(_create) if _create is not None else self._open()
        except BaseException:
            self._release()
            raise

    # ================================================================== lifecycle
    @classmethod
    def create(
        cls,
        url: str | os.PathLike,
        *,
        catalog: str | None = None,
        record_dtype: np.dtype | None = None,
        shard_max_bytes: int = 1 << 30,
        shard_max_samples: int = 100_000,
        block_bytes: int = 1 << 20,
        storage_options: dict | None = None,
    ) -> "SampleStore":
        """Create an empty store at ``url`` (which must not exist or be an empty directory).

        Args:
            catalog: Where the catalog lives: None (default) for an SQLite file inside the store, written by one
                process at a time; or a PostgreSQL URL (``postgresql://user@host:5432/db``) for a store that many
                processes on many machines write at once. The store remembers it (without a password: give that in
                ``PGPASSWORD`` or ``~/.pgpass``), so ``open(url)`` alone finds it.
            record_dtype: Structured dtype of fixed-size records; set on the first ``append_records`` otherwise.
            shard_max_bytes: A new shard is started once a shard reaches this size.
            shard_max_samples: ... or this many samples (record rows do not count; their blocks do).
            block_bytes: Target size of one tar member of packed records.
        """
        settings = {name: check_int(name, value, 1) for name, value in (
            ("shard_max_bytes", shard_max_bytes), ("shard_max_samples", shard_max_samples), ("block_bytes", block_bytes))}
        if record_dtype is not None:
            settings["record_dtype"] = dtype_to_json(check_record_dtype(np.dtype(record_dtype)))
        if catalog is not None and not is_postgres_url(catalog):
            raise ValueError(f"catalog must be None (SQLite inside the store) or a postgresql:// URL, got {catalog!r}")
        return cls(os.fspath(url), readonly=False, storage_options=storage_options, catalog=catalog,
                   _create=settings)

    @classmethod
    def open(cls, url: str | os.PathLike, readonly: bool = False, storage_options: dict | None = None,
             catalog: str | None = None) -> "SampleStore":
        """Open an existing store by its URL alone (another process, rank or machine may do the same).

        ``catalog`` is needed only when the store's PostgreSQL catalog is reached by another URL than the one the
        store remembers (another host name, a password, a moved database); the catalog must be this store's.
        """
        if catalog is not None and not is_postgres_url(catalog):
            raise ValueError(f"catalog must be None or a postgresql:// URL, got {catalog!r}")
        return cls(os.fspath(url), readonly=readonly, storage_options=storage_options, catalog=catalog)

    @property
    def catalog_url(self) -> str | None:
        """The PostgreSQL URL of the store's catalog (without a password), or None for the SQLite file inside it."""
        return None if self._catalog_url is None else redacted(self._catalog_url)

    def _create(self, settings: dict) -> None:
        files = self.files
        if files.exists(MARKER):
            raise StoreExistsError(f"{self.url}: a store already exists here; use SampleStore.open")
        if files.local and os.path.exists(files.root) and not os.path.isdir(files.root):
            raise StoreExistsError(f"{self.url}: a file exists here; create a store in a new directory")
        if files.exists("") and files.local and os.listdir(files.root):
            if not _remove_unfinished_create(files.root):
                raise StoreExistsError(f"{self.url}: the directory is not empty; create a store in a new directory")
        if not files.local and files.listdir(""):
            raise StoreExistsError(f"{self.url}: the prefix already holds objects; create a store under a new prefix")
        if self._catalog_url is None:
            files.makedirs(SHARDS)
            files.makedirs(JOURNAL)
            self.catalog = self._open_catalog(create=True)
            self._initialise(settings, {"format": STORE_FORMAT, "version": 1})
            return
        # a PostgreSQL catalog is reached (and its schema made) before anything is written under the URL
        self._store_id = uuid.uuid4().hex[:16]
        self.catalog = self._open_catalog(create=True)
        try:
            files.makedirs(SHARDS)
            files.makedirs(JOURNAL)
            self._initialise(settings, {"format": STORE_FORMAT, "version": 2, "store_id": self._store_id,
                                        "catalog": {"backend": "postgresql", "url": redacted(self._catalog_url)}})
        except BaseException:
            with contextlib.suppress(Exception):
                self.catalog.drop()  # a store that was not made leaves no catalog behind
            raise

    def _initialise(self, settings: dict, marker: dict) -> None:
        """Fill the new catalog, register this writer, then write ``store.json``: the store exists from then on."""
        self.catalog.initialise({k: str(v) for k, v in settings.items()})
        self._become_writer()
        self._publish_catalog()
        self.files.write_bytes(MARKER, json.dumps(marker).encode())

    def _open(self) -> None:
        files = self.files
        if not files.exists(MARKER):
            if files.exists("") and (not files.local or os.path.isdir(files.root)):
                raise StoreNotFoundError(
                    f"{self.url} exists but is not a lightning-modyn store (no {MARKER}); "
                    "create one with SampleStore.create"
                )
            raise StoreNotFoundError(f"no store at {self.url}; create one with SampleStore.create")
        try:
            marker = json.loads(files.read_bytes(MARKER))
        except (ValueError, OSError) as err:
            raise StoreNotFoundError(f"{self.url}/{MARKER} is unreadable: {err}") from None
        if not isinstance(marker, dict) or marker.get("format") != STORE_FORMAT:
            raise StoreNotFoundError(f"{self.url}/{MARKER} does not describe a lightning-modyn store")
        version = marker.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise StoreNotFoundError(f"{self.url}/{MARKER}: version {version!r} is not a store format version")
        if version > STORE_VERSION:
            raise StoreVersionError(
                f"{self.url}/{MARKER}: the store has format version {version}, newer than the {STORE_VERSION} this "
                "version of lightning-modyn reads; upgrade lightning-modyn to open it"
            )
        self._read_catalog_marker(marker)
        self.catalog = self._open_catalog(readonly=self.readonly)
        if not self.readonly:
            self._become_writer()
            self._collect_garbage()

    def _read_catalog_marker(self, marker: dict) -> None:
        """Where ``store.json`` says the catalog is (version 2), checked against a ``catalog`` URL given to open."""
        described = marker.get("catalog")
        if marker["version"] == 1:
            if self._catalog_url is not None:
                raise CatalogError(f"{self.url} keeps its catalog in {CATALOG} inside the store; it has no "
                                   f"PostgreSQL catalog (open it without catalog=)")
            return
        if (not isinstance(described, dict) or described.get("backend") != "postgresql"
                or not is_postgres_url(described.get("url")) or not isinstance(marker.get("store_id"), str)):
            raise StoreNotFoundError(f"{self.url}/{MARKER}: the catalog it names ({described!r}) is not a "
                                     "PostgreSQL catalog this version understands")
        self._store_id = marker["store_id"]
        if self._catalog_url is None:
            self._catalog_url = described["url"]
        self._catalog_where = redacted(self._catalog_url)

    def _open_catalog(self, create: bool = False, readonly: bool = False) -> Catalog:
        """This process's connection to the store's catalog (the PostgreSQL schema, or the SQLite file: then a
        writer first takes the one writer's lock)."""
        if self._catalog_url is not None:
            return PostgresCatalog(self._catalog_url, self._store_id, readonly=readonly, create=create)
        if not readonly:
            self._take_lock()
        path = self._catalog_local_path(download=not create)
        return SQLiteCatalog(path, readonly=readonly and self.files.local, wal=self.files.local, create=create)

    def _become_writer(self) -> None:
        """With many writers (PostgreSQL), register this process: its shard journal is then a folder of its own."""
        if isinstance(self.catalog, PostgresCatalog):
            number = self.catalog.register_writer()
            self._journal = ShardJournal(self.files, writer=number)
            self.files.makedirs(self._journal.folder)

    def _catalog_local_path(self, download: bool = False) -> str:
        if self.files.local:
            return self.files.path(CATALOG)
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="lightning-modyn-catalog-")
        local = os.path.join(self._tmpdir, CATALOG)
        if download:
            try:
                self.files.get_file(CATALOG, local)
            except FileNotFoundError:
                raise CatalogError(f"catalog {self._catalog_where!r} is missing; the store cannot be opened without "
                                   "it") from None
        return local

    def _publish_catalog(self) -> None:
        """Remote stores with an SQLite catalog: upload it after a commit (one atomic PUT). Local stores and
        PostgreSQL catalogs commit in place."""
        if not self.files.local and isinstance(self.catalog, SQLiteCatalog):
            self.catalog.checkpoint()
            if self._lease is not None:
                self._lease.check()
            self.files.put_file(self.catalog.path, CATALOG)
            if self._lease is not None:
                self._lease.renew()

    def _take_lock(self) -> None:
        """One writer at a time on an SQLite catalog: a file lock locally, a lease on an object store."""
        if not self.files.local:
            self._lease = WriterLease(self.files, self.url)
            self._lease.take()
            return
        import fcntl

        handle = open(self.files.path(LOCK), "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreLockedError(
                f"{self.url} is open for writing in another process; open it with readonly=True to read, or create "
                "the store with a PostgreSQL catalog (catalog='postgresql://...') for many writers"
            ) from None
        self._lock_handle = handle

    def _collect_garbage(self) -> None:
        """Remove what a crashed writer left, and only what the store can prove it wrote: shards named in the writer
        journal that the catalog does not know, and the store's own temp files. Any other file (one the user put in
        ``shards/``, other objects under a shared prefix) is left alone. Then finish erasures a compaction recorded.

        With many writers, only the journals of writers that are gone are collected, and a temp file only when no
        live writer's journal names the shard it was becoming."""
        files = self.files
        files.makedirs(JOURNAL)
        if isinstance(self.catalog, PostgresCatalog):
            temps = [(folder, name) for folder in ("", SHARDS) for name in files.listdir(folder) if is_temp_name(name)]
            live: set[str] = set()
            for number, journal in ShardJournal.writers(files):
                with self.catalog.writer_gone(number) as gone:
                    if gone:
                        self._collect_journal(journal)
                        journal.drop()
                    else:
                        live.update(journal.pending())
            for folder, name in temps:
                rel = f"{folder}/{name}" if folder else name
                if f"{folder}/{name.split('-', 2)[2]}".lstrip("/") not in live:
                    files.remove(rel)
        else:
            self._collect_journal(self._journal)
            for folder in ("", SHARDS, JOURNAL):
                for name in files.listdir(folder):
                    if is_temp_name(name):
                        files.remove(f"{folder}/{name}" if folder else name)
        self._compaction().finish_erasures()

    def _collect_journal(self, journal: ShardJournal) -> None:
        """Remove the journaled shards that the catalog does not know (their writer died before its commit)."""
        pending = journal.pending()
        if pending:
            known = set(self.catalog.shard_ids_with_path(pending))
            for rel in pending:
                if rel not in known:
                    self.files.remove(rel)
        journal.settle(pending)

    @property
    def catalog(self) -> Catalog:
        """The catalog connection of this process. A forked child (a DataLoader worker) must not use its parent's
        connection or file maps, so on first use there it reopens the store read-only."""
        if self._pid != os.getpid():
            self._reopen_in_child()
        return self._catalog

    @catalog.setter
    def catalog(self, value: Catalog) -> None:
        self._catalog = value

    def _reopen_in_child(self) -> None:
        self._pid = os.getpid()
        self._calls = threading.RLock()
        self._lock_handle = None  # the parent holds the writer lock; a child never writes
        self._lease = None
        self.readonly = True
        self.files = StoreFS(self.url, self.storage_options)
        # The parent's snapshot (plain arrays, shared copy-on-write) is kept: the first read checks it against the
        # catalog's version and keeps it when nothing changed, so a worker does not rebuild what its parent has
        # (at 200 k samples: 0.4 s of key arrays and 0.2 s per member layout, per worker, per fit).
        self._reader.reset()
        if isinstance(self._catalog, PostgresCatalog):  # the parent's connection is the parent's
            self._catalog = PostgresCatalog(self._catalog_url, self._store_id, readonly=True)
        elif self.files.local:
            self._catalog = SQLiteCatalog(self.files.path(CATALOG), readonly=True, wal=True)
        else:  # the parent's downloaded copy is a file: open our own connection to it
            self._catalog = SQLiteCatalog(self._catalog.path, readonly=False, wal=False)

    @_one_read_at_a_time
    def refresh(self) -> None:
        """See commits made since this store was opened (remote readers of an SQLite catalog re-download it)."""
        if not self.files.local and self.readonly and isinstance(self.catalog, SQLiteCatalog):
            self.catalog.close()
            self.catalog = SQLiteCatalog(self._catalog_local_path(download=True), readonly=False, wal=False)
        self._reader.forget()

    @_one_call_at_a_time
    def close(self) -> None:
        """Release the catalog, the file maps and (for a writer) the writer lock."""
        self._release()

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._catalog.close()
        self.files.close()
        self._reader.drop()
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None
        if self._lease is not None:
            with contextlib.suppress(Exception):
                self._lease.give_back()
            self._lease = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "SampleStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # A pickled store (e.g. sent to DataLoader workers) reopens read-only from its URL.
        return {"url": self.url, "storage_options": self.storage_options, "catalog": self._catalog_url}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], readonly=True, storage_options=state["storage_options"],
                      catalog=state.get("catalog"))

    def __repr__(self) -> str:
        return f"SampleStore({self.url!r}{', readonly=True' if self.readonly else ''})"

    @_one_read_at_a_time
    def __len__(self) -> int:
        return self.catalog.live_count()

    # ================================================================== settings
    @property
    @_one_read_at_a_time
    def record_dtype(self) -> np.dtype | None:
        """The structured dtype of the store's records, or None before the first ``append_records``."""
        if self._record_dtype is None:  # fixed once set, so cache it
            text = self.catalog.get_meta("record_dtype")
            self._record_dtype = None if text is None else dtype_from_json(text)
        return self._record_dtype

    @property
    @_one_read_at_a_time
    def attributes(self) -> dict[str, Any]:
        """User attributes kept with the store (JSON values), e.g. how a generated stream was made."""
        prefix = "attr."
        return {name[len(prefix):]: json.loads(value) for name, value in self.catalog.meta().items()
                if name.startswith(prefix)}

    @_one_call_at_a_time
    def set_attribute(self, name: str, value: Any) -> None:
        """Keep a JSON-able ``value`` under ``name`` with the store (visible to every reader once written)."""
        self._check_writable("set_attribute")
        if not isinstance(name, str) or not name:
            raise ValueError(f"attribute names are non-empty strings, got {name!r}")
        try:
            text = json.dumps(value, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"attribute {name!r} of {self.url}: value is not JSON-able ({err})") from None
        with self.catalog.transaction():
            self.catalog.set_meta("attr." + name, text)

    def _check_writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyStoreError(f"{what} on {self.url}: the store was opened with readonly=True")
        if self._lease is not None:
            self._lease.check()

    # ================================================================== writes
    @_one_call_at_a_time
    def append(self, samples: Iterable[Mapping[str, Any]], timestamps: Any = None, labels: Any = None) -> np.ndarray:
        """Append WebDataset-style samples (``{"jpg": b"...", "cls": 3, "__key__": "optional"}``).

        Values are stored as WebDataset does (bytes as is, str as UTF-8, numbers as text, arrays as ``.npy``,
        dicts/lists as JSON). Nothing is written unless every sample is valid.

        Args:
            timestamps: One int per sample (e.g. unix seconds) or one for all; default: now.
            labels: One int per sample, or the extension of an int member to take it from (e.g. ``"cls"``).

        Returns:
            The new samples' keys (int64), stable for the store's lifetime.
        """
        self._check_writable("append")
        if isinstance(samples, Mapping):
            raise TypeError("append takes a list of samples, got one sample dict; write append([sample])")
        samples = list(samples)
        n = len(samples)
        if n == 0:
            return np.zeros(0, np.int64)
        encoded = [encode_sample(s, f"sample {i}") for i, s in enumerate(samples)]
        wds_keys = [check_wds_key(s.get("__key__"), i) for i, s in enumerate(samples)]
        ts = as_int_array(_now() if timestamps is None else timestamps, n, "timestamps")
        label_arr = self._labels_for_samples(samples, labels, n)
        with self._journal.publication() as pub, self.catalog.writing():
            first_key = self.catalog.allocate("next_key", n)
            keys = np.arange(first_key, first_key + n, dtype=np.int64)
            wds_keys = [w if w is not None else f"{k:012d}" for w, k in zip(wds_keys, keys.tolist())]
            where = [f"sample {i}" for i in range(n)]
            self._check_unique_wds_keys(wds_keys, where)
            new = write_sample_shards(self.catalog, pub, keys, wds_keys, encoded, ts, label_arr, _now())
            with self.catalog.transaction(), _naming_taken_keys(wds_keys, where):
                self._register(new)
        self._publish_catalog()
        return keys

    def _register(self, new: NewShards) -> None:
        """Add the catalog rows of new shards inside the open transaction (the publication removes the shard files
        if it does not commit)."""
        new.register(self.catalog, _now())
        self.catalog.bump()

    def _labels_for_samples(self, samples: list, labels: Any, n: int) -> np.ndarray | None:
        if labels is None:
            return None
        if isinstance(labels, str):
            out = []
            for i, s in enumerate(samples):
                if labels not in s:
                    raise ValueError(f"sample {i} has no {labels!r} member to take its label from")
                value = s[labels]
                try:
                    whole = int(value)
                    if isinstance(value, (float, np.floating)) and whole != value:
                        raise ValueError
                    if isinstance(value, (bool, np.bool_)):
                        raise TypeError
                except (TypeError, ValueError, OverflowError):
                    raise ValueError(f"sample {i}: member {labels!r} = {value!r} is not an integer label") from None
                out.append(whole)
            return as_int_array(np.array(out, dtype=object), n, f"labels (member {labels!r})", reserved=NO_LABEL)
        return as_int_array(labels, n, "labels", reserved=NO_LABEL)

    def _check_unique_wds_keys(self, wds_keys: list[str], where: list[str]) -> None:
        """Refuse a ``__key__`` twice in the call or already in the store, before anything is written. With many
        writers the catalog's unique index refuses it at the commit instead (:func:`_naming_taken_keys`): another
        writer may take a key after any check, and asking first would scan a growing table."""
        seen: dict[str, str] = {}
        for w, loc in zip(wds_keys, where):
            if w in seen:
                raise DuplicateKeyError(f"duplicate __key__ {w!r}: {seen[w]} and {loc}")
            seen[w] = loc
        if self.catalog.concurrent_writers:
            return
        clash = self.catalog.existing_wds_keys(wds_keys)
        if clash:
            raise DuplicateKeyError(_taken(clash[0], seen[clash[0]], len(clash) - 1))

    @_one_call_at_a_time
    def append_records(self, rows: np.ndarray, timestamps: Any = None, labels: Any = None) -> np.ndarray:
        """Append fixed-size records (a numpy structured array), packed many rows to a tar member.

        Every row gets its own key and is read back row-exact by :meth:`get_records`; no row pays a tar header.

        Args:
            rows: Structured array whose dtype equals the store's record dtype (set by the first call).
            timestamps: One int per row or one for all; default: now.
            labels: One int per row, or the name of an integer field of ``rows`` (e.g. ``"label"``).
        """
        self._check_writable("append_records")
        if not isinstance(rows, np.ndarray) or rows.dtype.names is None:
            raise RecordDtypeError(
                f"records must be a numpy structured array, got {type(rows).__name__}"
                + (f" of dtype {rows.dtype}" if isinstance(rows, np.ndarray) else "")
            )
        rows = np.ascontiguousarray(rows.reshape(-1))
        check_record_dtype(rows.dtype)
        n = len(rows)
        if n == 0:
            return np.zeros(0, np.int64)
        ts = as_int_array(_now() if timestamps is None else timestamps, n, "timestamps")
        if isinstance(labels, str):
            if labels not in rows.dtype.names or not np.issubdtype(rows.dtype[labels], np.integer):
                raise ValueError(f"labels={labels!r} is not an integer field of the records (fields: {rows.dtype.names})")
            label_arr = as_int_array(rows[labels], n, f"labels (field {labels!r})", reserved=NO_LABEL)
        else:
            label_arr = None if labels is None else as_int_array(labels, n, "labels", reserved=NO_LABEL)
        with self._journal.publication() as pub, self.catalog.writing():
            self._check_record_dtype(rows.dtype)
            first_key = self.catalog.allocate("next_key", n)
            keys = np.arange(first_key, first_key + n, dtype=np.int64)
            new = write_record_shards(self.catalog, pub, keys, rows, ts, label_arr, _now())
            with self.catalog.transaction():
                if self._check_record_dtype(rows.dtype):
                    self.catalog.set_meta("record_dtype", dtype_to_json(rows.dtype))
                self._register(new)
        self._publish_catalog()
        return keys

    def _check_record_dtype(self, dtype: np.dtype) -> bool:
        """Refuse records of another dtype than the store's; True when the store has none yet (this one is set)."""
        text = self.catalog.get_meta("record_dtype")
        stored = None if text is None else dtype_from_json(text)
        if stored is not None and stored != dtype:
            raise RecordDtypeError(f"records have dtype {dtype}, but this store holds records of dtype {stored}")
        return stored is None

    @_one_call_at_a_time
    def ingest(
        self,
        shards: Sequence[str | os.PathLike],
        timestamps: Any = None,
        labels: Any = None,
        progress: bool = False,
        hand_over: bool = False,
    ) -> np.ndarray:
        """Index existing WebDataset tar shards in place, without rewriting them.

        Shards written by ``webdataset.ShardWriter``/``TarWriter`` and by GNU tar (GNU and PAX long names) are
        understood. They must be uncompressed: random access needs byte offsets into the tar.

        The files stay yours unless you hand them over: the store never removes or changes them, and
        :meth:`compact` leaves deleted samples' bytes in them (it warns and counts them). With ``hand_over=True``
        they belong to the store from then on: :meth:`compact` rewrites one that holds deleted samples into the
        store's ``shards/`` folder and removes the original file.

        Args:
            shards: Paths or URLs of ``.tar`` files, indexed in this order.
            timestamps: One int per sample over all shards, one for all, or the extension of a member holding it.
            labels: One int per sample, or the extension of an integer member (e.g. ``"cls"``).
            progress: Show a progress bar.
            hand_over: Give the files to the store, so that compaction may erase deleted samples from them.

        Returns:
            Keys of the indexed samples, in shard order.
        """
        self._check_writable("ingest")
        if isinstance(shards, (str, os.PathLike)):
            raise TypeError(f"ingest takes a list of shard paths, got one path {os.fspath(shards)!r}; "
                            "write ingest([path])")
        shards = [os.fspath(s) for s in shards]
        refs = [shard_ref(self.files, s) for s in shards]
        for ref in refs:
            if self.files.isdir(ref):
                raise ShardFormatError(f"{self.files.path(ref)}: is a directory, not a tar shard; list the .tar "
                                       "files inside it")
        already = self.catalog.shard_ids_with_path(refs)
        if already:
            raise ShardFormatError(f"{already[0]}: this shard is already part of the store")
        if len(set(refs)) != len(refs):
            twice = next(r for r in refs if refs.count(r) > 1)
            raise ShardFormatError(f"{twice}: the same shard is listed twice")
        scanned = []
        bar = _progress(progress, len(shards), "index shards", "shard")
        try:
            for ref in refs:
                scanned.append(scan_shard(self.files, ref))
                bar.update(1)
                bar.set_postfix(samples=sum(len(s[1]) for s in scanned))
        finally:
            bar.close()
        n = sum(len(spans) for _, spans, _ in scanned)
        if n == 0:
            return np.zeros(0, np.int64)
        ts = values_from_members(self.files, scanned, timestamps, n, "timestamps", default=_now())
        label_arr = values_from_members(self.files, scanned, labels, n, "labels", default=None)
        wds_keys = [span.key for _, spans, _ in scanned for span in spans]
        where = [f"{ref} (sample {span.key!r} at offset {span.start})" for ref, spans, _ in scanned for span in spans]
        with self.catalog.transaction(), _naming_taken_keys(wds_keys, where):
            self._check_unique_wds_keys(wds_keys, where)
            first_key = self.catalog.allocate("next_key", n)
            keys = np.arange(first_key, first_key + n, dtype=np.int64)
            entries = register_shards(self.catalog, scanned, keys, ts, label_arr, hand_over)
            self.catalog.add_entries(entries, _now())
            self.catalog.bump()
        self._publish_catalog()
        return keys

    # ================================================================== reads
    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Reads in this block (on this thread) see one committed state, checked for other processes' commits once.

        For reads that belong together, such as one training batch's read order, bytes and labels: they agree
        with each other and cost one check instead of one each. This store's own writes in the block are seen.
        """
        with self._reader.pinned(self._pin):
            yield

    @_one_read_at_a_time
    def _pin(self) -> tuple[Snapshot, int]:
        return self._reader.pin()

    @_one_read_at_a_time
    def get(self, keys: Any, meta: bool = True) -> list[dict[str, Any]]:
        """Samples in the order of ``keys``, each a dict of member extension -> exactly the bytes written.

        With ``meta`` (default), each sample also has ``__key__`` (its WebDataset key), ``__store_key__``,
        ``__timestamp__``, ``__label__`` (None when unlabeled) and ``__url__`` (its shard). Record keys come back
        with their row's bytes under ``"rows"``. Unknown or deleted keys raise a ``KeyError`` naming the key.
        """
        return self._reader.get(keys, meta)

    @_one_read_at_a_time
    def get_member(self, keys: Any, ext: str) -> MemberBatch:
        """One member (by extension) of many samples as one buffer: the batch form of :meth:`get`.

        No per-sample Python objects: when every member has the same size (e.g. fixed-size images), the batch is
        one vectorized gather and ``batch.array()`` is an ``(n, size)`` uint8 array.
        """
        return self._reader.get_member(keys, ext)

    @_one_read_at_a_time
    def read_order(self, keys: Any) -> np.ndarray:
        """A permutation of ``keys`` that groups them by where their bytes lie (shard and row alignment).

        ``get_records(keys[order])`` and ``get_member(keys[order], ext)`` then copy every byte once, straight into
        the result, instead of gathering each shard and scattering into request order. For readers to which the
        order inside a batch does not matter (a training batch); stable, so it is a function of ``keys`` alone.
        Unknown or deleted keys raise as :meth:`get` does.
        """
        return self._reader.read_order(keys)

    @_one_read_at_a_time
    def get_records(self, keys: Any) -> np.ndarray:
        """Record rows of ``keys`` as a structured array in the order of ``keys`` (no per-row Python objects)."""
        return self._reader.get_records(keys)

    @_one_read_at_a_time
    def lookup(self, keys: Any) -> Slice:
        """Timestamps and labels of ``keys`` (in their order) without reading any sample bytes."""
        return self._reader.lookup(keys)

    @_one_read_at_a_time
    def contains(self, keys: Any) -> np.ndarray:
        """Whether each key is live (assigned and not deleted)."""
        return self._reader.contains(keys)

    @_one_read_at_a_time
    def holds_only_records(self) -> bool:
        """True when every live key is a record row (so ``get_records`` serves any key)."""
        return self._reader.holds_only_records()

    # ================================================================== queries
    @_one_read_at_a_time
    def time_range(self, start: int | None = None, end: int | None = None) -> Slice:
        """Live keys with ``start <= timestamp < end`` (either bound may be None), sorted by key."""
        return self.catalog.time_range(None if start is None else check_whole("start", start),
                                       None if end is None else check_whole("end", end))

    @_one_read_at_a_time
    def keys_after(self, key: int) -> Slice:
        """Live keys greater than ``key``: the data appended after it where one process writes (with several
        writers, keys reserved earlier may commit later: follow the store with :meth:`new_since`)."""
        return self.catalog.after_key(check_whole("key", key))

    @_one_read_at_a_time
    def new_since(self, cursor: tuple[int, int] | None = None) -> tuple[Slice, tuple[int, int]]:
        """Live keys committed since ``cursor`` (None: all of them), sorted by key, and the cursor to pass next time.

        The way to follow a store that others write: exact with any number of writers, whose keys may commit out
        of key order (``keys_after`` is exact only with one writer). A record run part of which was deleted in the
        meantime is returned without the deleted rows.
        """
        if cursor is not None:
            if (not isinstance(cursor, (tuple, list)) or len(cursor) != 2
                    or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in cursor)):
                raise TypeError(f"cursor must be None or the (version, key) pair new_since returned, got {cursor!r}")
            cursor = (int(cursor[0]), int(cursor[1]))
        return self.catalog.committed_since(cursor)

    @_one_read_at_a_time
    def appended_since(self, when: int) -> Slice:
        """Live keys appended or ingested at or after wall-clock second ``when``."""
        return self.catalog.appended_since(check_whole("when", when))

    @_one_read_at_a_time
    def all(self) -> Slice:
        """Every live key with its timestamp and label."""
        return self.catalog.time_range(None, None)

    @_one_read_at_a_time
    def label_counts(self) -> dict[int, int]:
        """Live samples per label (unlabeled samples are not counted)."""
        return self.catalog.label_counts()

    @_one_read_at_a_time
    def info(self) -> dict[str, Any]:
        """Summary numbers: samples, shards, bytes, time range, label counts, deleted, record dtype."""
        totals = self.catalog.totals()
        dtype = self.record_dtype
        return {"url": self.url, **totals, "label_counts": self.label_counts(),
                "record_dtype": None if dtype is None else str(dtype)}

    # ================================================================== deletes
    @_one_call_at_a_time
    def delete(self, keys: Any) -> int:
        """Hide samples at once (new reads fail with ``DeletedKeyError``); bytes go away at :meth:`compact`.

        Deleting an already deleted key does nothing; an unknown key raises and nothing is deleted.
        Returns how many samples were newly deleted.
        """
        self._check_writable("delete")
        keys = np.unique(as_keys(keys))
        if not len(keys):
            return 0
        with self.catalog.transaction():
            self._reader.forget()
            keys = keys[~np.isin(keys, self.catalog.deleted_among(keys))]
            if not len(keys):
                return 0
            snap, pos = self._reader.locate(keys)
            kind = snap.kind[pos]
            labels = snap.label[pos].copy()
            rec = kind == KIND_RECORDS
            if rec.any():
                labels[rec] = self._reader.record_meta(snap, keys[rec], pos[rec])[1]
            found, counts = np.unique(labels[labels != NO_LABEL], return_counts=True)
            shard_ids, per_shard = np.unique(snap.shard[pos], return_counts=True)
            self.catalog.delete_keys(keys, keys[kind == KIND_SAMPLES], dict(zip(shard_ids.tolist(), per_shard.tolist())),
                                     dict(zip(found.tolist(), (-counts).tolist())))
            self.catalog.bump(layout=True)
        self._reader.forget()
        self._publish_catalog()
        return int(len(keys))

    @_one_call_at_a_time
    def compact(self, progress: bool = False, merge_small: bool = True) -> dict[str, int]:
        """Rewrite every shard of the store's own that holds deleted samples, so that their bytes are physically gone,
        and merge the store's small shards (under a quarter of ``shard_max_bytes`` and of ``shard_max_samples``:
        what many small appends leave) into few.

        Survivors keep their keys and every attribute (timestamp, label, WebDataset key, when they were appended); a
        shard with no survivors is removed. Each group of shards is replaced atomically: the new shard, its catalog
        rows and a record of the old files' erasure commit together; then the old files are removed and the records
        dropped. A removal that fails (a read-only folder) or is cut short (the process killed) stays recorded, is
        retried by the next ``compact()`` or writable open, and is counted in ``erasures_pending`` (with a warning)
        meanwhile. On a remote store, survivors are read with a few coalesced range requests per 64 MiB.

        With a PostgreSQL catalog, compaction runs beside other writers: it copies outside any transaction and
        commits only if nothing in the group changed meanwhile (else it copies again, up to 3 times, then leaves the
        group for the next run and counts it in ``groups_left_busy``).

        Shards ingested in place without ``hand_over=True`` are the user's: they are neither rewritten nor removed,
        so the bytes of their deleted samples stay in them. ``compact()`` warns, naming the files, and counts them.

        Args:
            progress: Show a progress bar.
            merge_small: Merge small shards (False: only rewrite shards that hold deleted samples).

        Returns ``{"shards_rewritten", "shards_removed", "shards_merged", "bytes_freed", "shards_not_owned",
        "deleted_kept", "erasures_pending", "groups_left_busy"}``: ``shards_merged`` counts the small shards merged
        (into fewer), ``deleted_kept`` the deleted samples whose bytes are still in files not owned by the store.
        """
        self._check_writable("compact")
        bar = _progress(progress, 0, "compact", "shard")
        try:
            return self._compaction().run(bar, merge_small=merge_small)
        finally:
            bar.close()
            self._reader.forget()

    def _compaction(self) -> Compaction:
        return Compaction(self.catalog, self.files, self._journal, self._reader.read_ranges, self._publish_catalog, self.url)


def _taken(key: str, where: str, more: int = 0) -> str:
    return f"__key__ {key!r} ({where}) is already in the store" + (f" (and {more} more)" if more else "")


@contextlib.contextmanager
def _naming_taken_keys(wds_keys: list[str], where: list[str]) -> Iterator[None]:
    """A ``__key__`` the catalog refused at the commit (``DuplicateKeyError`` with ``.key``), named with where it
    came from in the call."""
    try:
        yield
    except DuplicateKeyError as err:
        key = getattr(err, "key", None)
        if key not in wds_keys:
            raise
        raise DuplicateKeyError(_taken(key, where[wds_keys.index(key)])) from None


def _remove_unfinished_create(root: str) -> bool:
    """A ``create`` killed before writing its marker leaves only an empty catalog, empty folders and perhaps the
    marker's temp file: remove them and say so. Anything else in the folder means it is not ours to clear."""
    names = set(os.listdir(root))
    ours = {CATALOG, CATALOG + "-wal", CATALOG + "-shm", CATALOG + "-journal", SHARDS, JOURNAL, LOCK}
    if not all(name in ours or is_temp_name(name) for name in names):
        return False
    if any(os.listdir(os.path.join(root, d)) for d in (SHARDS, JOURNAL) if d in names):
        return False
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            os.rmdir(path)
        else:
            os.remove(path)
    return True


def _progress(enabled: bool, total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
