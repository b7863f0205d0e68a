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

This module is the façade: each operation checks its arguments and hands the work to the module of its concept
(``lifecycle`` for opening, locks and closing; ``writing`` and ``ingest`` for the write paths; ``reading`` for the
read paths; ``compaction``; the ``catalog`` backends).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from lightning_modyn._checks import check_int, check_whole
from lightning_modyn.store.batch import MemberBatch
from lightning_modyn.store.catalog import KIND_RECORDS, KIND_SAMPLES, NO_LABEL, Slice
from lightning_modyn.store.catalog_postgres import is_postgres_url
from lightning_modyn.store.codec import encode_sample
from lightning_modyn.store.errors import DuplicateKeyError, RecordDtypeError, ShardFormatError
from lightning_modyn.store.ingest import register_shards, scan_shard, shard_ref, values_from_members
from lightning_modyn.store.lifecycle import StoreLifecycle, one_call_at_a_time, one_read_at_a_time
from lightning_modyn.store.snapshot import Snapshot
from lightning_modyn.store.values import (
    as_int_array,
    as_keys,
    check_record_dtype,
    check_wds_key,
    dtype_from_json,
    dtype_to_json,
)
from lightning_modyn.store.writing import NewShards, write_record_shards, write_sample_shards


def _now() -> int:
    return int(time.time())


class SampleStore(StoreLifecycle):
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

    # ================================================================== making and opening (see lifecycle.py)
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

    @one_read_at_a_time
    def __len__(self) -> int:
        return self.catalog.live_count()

    # ================================================================== settings
    @property
    @one_read_at_a_time
    def record_dtype(self) -> np.dtype | None:
        """The structured dtype of the store's records, or None before the first ``append_records``."""
        if self._record_dtype is None:  # fixed once set, so cache it
            text = self.catalog.get_meta("record_dtype")
            self._record_dtype = None if text is None else dtype_from_json(text)
        return self._record_dtype

    @property
    @one_read_at_a_time
    def attributes(self) -> dict[str, Any]:
        """User attributes kept with the store (JSON values), e.g. how a generated stream was made."""
        prefix = "attr."
        return {name[len(prefix):]: json.loads(value) for name, value in self.catalog.meta().items()
                if name.startswith(prefix)}

    @one_call_at_a_time
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

    # ================================================================== writes
    @one_call_at_a_time
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

    @one_call_at_a_time
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

    @one_call_at_a_time
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

    @one_read_at_a_time
    def _pin(self) -> tuple[Snapshot, int]:
        return self._reader.pin()

    @one_read_at_a_time
    def get(self, keys: Any, meta: bool = True) -> list[dict[str, Any]]:
        """Samples in the order of ``keys``, each a dict of member extension -> exactly the bytes written.

        With ``meta`` (default), each sample also has ``__key__`` (its WebDataset key), ``__store_key__``,
        ``__timestamp__``, ``__label__`` (None when unlabeled) and ``__url__`` (its shard). Record keys come back
        with their row's bytes under ``"rows"``. Unknown or deleted keys raise a ``KeyError`` naming the key.
        """
        return self._reader.get(keys, meta)

    @one_read_at_a_time
    def get_member(self, keys: Any, ext: str) -> MemberBatch:
        """One member (by extension) of many samples as one buffer: the batch form of :meth:`get`.

        No per-sample Python objects: when every member has the same size (e.g. fixed-size images), the batch is
        one vectorized gather and ``batch.array()`` is an ``(n, size)`` uint8 array.
        """
        return self._reader.get_member(keys, ext)

    @one_read_at_a_time
    def read_order(self, keys: Any) -> np.ndarray:
        """A permutation of ``keys`` that groups them by where their bytes lie (shard and row alignment).

        ``get_records(keys[order])`` and ``get_member(keys[order], ext)`` then copy every byte once, straight into
        the result, instead of gathering each shard and scattering into request order. For readers to which the
        order inside a batch does not matter (a training batch); stable, so it is a function of ``keys`` alone.
        Unknown or deleted keys raise as :meth:`get` does.
        """
        return self._reader.read_order(keys)

    @one_read_at_a_time
    def get_records(self, keys: Any) -> np.ndarray:
        """Record rows of ``keys`` as a structured array in the order of ``keys`` (no per-row Python objects)."""
        return self._reader.get_records(keys)

    @one_read_at_a_time
    def lookup(self, keys: Any) -> Slice:
        """Timestamps and labels of ``keys`` (in their order) without reading any sample bytes."""
        return self._reader.lookup(keys)

    @one_read_at_a_time
    def contains(self, keys: Any) -> np.ndarray:
        """Whether each key is live (assigned and not deleted)."""
        return self._reader.contains(keys)

    @one_read_at_a_time
    def holds_only_records(self) -> bool:
        """True when every live key is a record row (so ``get_records`` serves any key)."""
        return self._reader.holds_only_records()

    # ================================================================== queries
    @one_read_at_a_time
    def time_range(self, start: int | None = None, end: int | None = None) -> Slice:
        """Live keys with ``start <= timestamp < end`` (either bound may be None), sorted by key."""
        return self.catalog.time_range(None if start is None else check_whole("start", start),
                                       None if end is None else check_whole("end", end))

    @one_read_at_a_time
    def keys_after(self, key: int) -> Slice:
        """Live keys greater than ``key``: the data appended after it where one process writes (with several
        writers, keys reserved earlier may commit later: follow the store with :meth:`new_since`)."""
        return self.catalog.after_key(check_whole("key", key))

    @one_read_at_a_time
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

    @one_read_at_a_time
    def appended_since(self, when: int) -> Slice:
        """Live keys appended or ingested at or after wall-clock second ``when``."""
        return self.catalog.appended_since(check_whole("when", when))

    @one_read_at_a_time
    def all(self) -> Slice:
        """Every live key with its timestamp and label."""
        return self.catalog.time_range(None, None)

    @one_read_at_a_time
    def label_counts(self) -> dict[int, int]:
        """Live samples per label (unlabeled samples are not counted)."""
        return self.catalog.label_counts()

    @one_read_at_a_time
    def info(self) -> dict[str, Any]:
        """Summary numbers: samples, shards, bytes, time range, label counts, deleted, record dtype."""
        totals = self.catalog.totals()
        dtype = self.record_dtype
        return {"url": self.url, **totals, "label_counts": self.label_counts(),
                "record_dtype": None if dtype is None else str(dtype)}

    # ================================================================== deletes
    @one_call_at_a_time
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

    @one_call_at_a_time
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


def _progress(enabled: bool, total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
