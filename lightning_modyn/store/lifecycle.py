"""Opening, holding and closing a store: where its files and catalog are, who may write, what a crashed
writer left behind, and what a forked DataLoader worker must reopen.

:class:`StoreLifecycle` is the base of :class:`~lightning_modyn.store.SampleStore`: it owns the store's URL, files,
catalog connection, writer lock (SQLite: a file lock, or a lease on an object store) or writer registration
(PostgreSQL), and the lock that serialises one store object's calls across threads. The operations on samples live
in the façade.
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
import uuid

import numpy as np

from lightning_modyn._io import is_temp_name
from lightning_modyn.store.catalog import Catalog, catalog_errors
from lightning_modyn.store.catalog_postgres import PostgresCatalog, is_postgres_url, redacted
from lightning_modyn.store.catalog_sqlite import SQLiteCatalog
from lightning_modyn.store.compaction import Compaction
from lightning_modyn.store.errors import (
    CatalogError,
    ReadOnlyStoreError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
    StoreVersionError,
)
from lightning_modyn.store.filesystem import StoreFS
from lightning_modyn.store.journal import JOURNAL, ShardJournal
from lightning_modyn.store.lease import WriterLease
from lightning_modyn.store.reading import Reader
from lightning_modyn.store.writing import SHARDS


log = logging.getLogger(__name__)

MARKER = "store.json"
CATALOG = "catalog.sqlite"
LOCK = "writer.lock"
STORE_FORMAT = "lightning-modyn-store"
STORE_VERSION = 2
"""The newest store format this version reads: 1, a store with its SQLite catalog beside the shards; 2, a store
whose catalog is elsewhere (``store.json`` names it)."""


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


def one_call_at_a_time(method):
    """A call that writes (or closes): serialised, and never repeated (see :func:`_serialised`)."""
    return _serialised(method, read=False)


def one_read_at_a_time(method):
    """A call that only reads: serialised, and repeated once on a new connection if the old one was lost."""
    return _serialised(method, read=True)


class StoreLifecycle:
    """A store opened by this process: its files, its catalog connection and what lets it write (see the module
    docstring). Made through :meth:`SampleStore.create` or :meth:`SampleStore.open`."""

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

    @one_read_at_a_time
    def refresh(self) -> None:
        """See commits made since this store was opened (remote readers of an SQLite catalog re-download it)."""
        if not self.files.local and self.readonly and isinstance(self.catalog, SQLiteCatalog):
            self.catalog.close()
            self.catalog = SQLiteCatalog(self._catalog_local_path(download=True), readonly=False, wal=False)
        self._reader.forget()

    @one_call_at_a_time
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

    def __enter__(self):
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

    def _check_writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyStoreError(f"{what} on {self.url}: the store was opened with readonly=True")
        if self._lease is not None:
            self._lease.check()

    def _compaction(self) -> Compaction:
        return Compaction(self.catalog, self.files, self._journal, self._reader.read_ranges, self._publish_catalog, self.url)


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
