"""Compaction: the bytes of deleted samples physically gone from every file the store owns — and only from those —
and the many small shards that small appends leave merged into few.

Each owned shard that holds deleted samples is replaced by a new shard of its survivors; owned shards much smaller
than the store's shard limits are merged, several into one (journaled like any new shard). Survivors keep their keys
and every attribute. The catalog switch commits together with a record that each old file is to be erased, then
the files are removed and the records dropped. A removal that fails or is cut short stays recorded and is finished
by the next compaction or writable open: no erasure is forgotten. Shards ingested without ``hand_over=True`` are
the user's and are left as they are; the caller is told which files still hold deleted samples' bytes.

With many writers (PostgreSQL), a group's new shard is written outside any transaction, beside the writers; the
commit checks that nothing in the group changed meanwhile (another process deleted a sample there) and otherwise
writes the group again, so a concurrent delete is never undone and appends never wait for a shard to be copied.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

import numpy as np

from lightning_modyn.store import tarformat
from lightning_modyn.store.catalog import KIND_RECORDS, Catalog, Entry
from lightning_modyn.store.filesystem import StoreFS
from lightning_modyn.store.journal import ShardJournal
from lightning_modyn.store.writing import copy_survivors, shard_name

ReadRanges = Callable[[str, np.ndarray, np.ndarray], list]
"""``read_ranges(shard, starts, ends)``: bytes of each range of a shard (the store's batched reader)."""

SMALL = 4
"""An owned shard is small, and merged with others, when under 1/SMALL of both the store's shard limits."""
ATTEMPTS = 3
"""How often a group is written again when other writers changed it meanwhile, before it waits for the next run."""


class Compaction:
    """Compaction of one store, through its catalog, files and journal. ``publish()`` makes a commit visible to other
    machines (a remote store with an SQLite catalog uploads it); ``url`` names the store in warnings."""

    def __init__(self, catalog: Catalog, files: StoreFS, journal: ShardJournal, read_ranges: ReadRanges,
                 publish: Callable[[], None], url: str) -> None:
        self.catalog = catalog
        self.files = files
        self.journal = journal
        self.read_ranges = read_ranges
        self.publish = publish
        self.url = url

    def run(self, bar, merge_small: bool = True) -> dict[str, int]:
        """Compact every owned shard with deleted samples, and merge small owned shards (``bar``: a progress bar,
        updated per shard); the stats of ``SampleStore.compact``."""
        stats = {"shards_rewritten": 0, "shards_removed": 0, "shards_merged": 0, "bytes_freed": 0,
                 "shards_not_owned": 0, "deleted_kept": 0, "erasures_pending": 0, "groups_left_busy": 0}
        pending = self.finish_erasures()  # of an earlier compaction that did not get to remove its old files
        shards = self.catalog.shards()
        groups = self.plan(shards, merge_small)
        kept = [s for s in shards if not s["owned"] and s["live"] < s["total"]]
        bar.reset(total=sum(len(g) for g in groups))
        for group in groups:
            new_size = self.compact_group(group)
            if new_size is None:
                stats["groups_left_busy"] += 1
            elif len(group) > 1:
                stats["shards_merged"] += len(group)
                stats["bytes_freed"] += sum(s["size"] for s in group) - new_size
            else:
                stats["shards_rewritten" if new_size else "shards_removed"] += 1
                stats["bytes_freed"] += group[0]["size"] - new_size
            bar.update(len(group))
        if groups:
            pending = self.finish_erasures()
        stats["erasures_pending"] = len(pending)
        if kept:
            stats["shards_not_owned"] = len(kept)
            stats["deleted_kept"] = sum(s["total"] - s["live"] for s in kept)
            names = ", ".join(repr(self.files.path(s["path"])) for s in kept[:3]) + (
                f" and {len(kept) - 3} more" if len(kept) > 3 else "")
            warnings.warn(
                f"{self.url}: the bytes of {stats['deleted_kept']} deleted samples are still in {len(kept)} shard(s) "
                f"that were ingested in place and are not the store's to change ({names}); they are hidden from "
                "every read. Remove them from those files yourself, or ingest files with hand_over=True so that "
                "compact() may rewrite them", stacklevel=4)
        return stats

    def plan(self, shards: list[dict], merge_small: bool) -> list[list[dict]]:
        """Groups of owned shards, each to become one new shard (or none): a shard with deleted samples alone, and
        small shards (of one kind) together, up to the store's shard limits."""
        max_bytes, max_samples = self.catalog.number("shard_max_bytes"), self.catalog.number("shard_max_samples")

        def small(s: dict) -> bool:
            count = s["live"] if s["kind"] != KIND_RECORDS else 0  # record blocks are bounded by bytes
            return s["size"] * SMALL < max_bytes and count * SMALL < max_samples

        owned = [s for s in shards if s["owned"]]
        groups = [[s] for s in owned if s["live"] < s["total"] and not (merge_small and small(s))]
        if merge_small:
            for kind in sorted({s["kind"] for s in owned}):
                candidates = [s for s in owned if s["kind"] == kind and small(s)]
                group: list[dict] = []
                for s in candidates:
                    full = group and (sum(g["size"] for g in group) + s["size"] > max_bytes or (
                        kind != KIND_RECORDS and sum(g["live"] for g in group) + s["live"] > max_samples))
                    if full:
                        groups.append(group)
                        group = []
                    group.append(s)
                if group:
                    groups.append(group)
            # a lone small shard is rewritten only if it holds deleted samples
            groups = [g for g in groups if len(g) > 1 or g[0]["live"] < g[0]["total"]]
        return groups

    def _state(self, ids: list[int]) -> list:
        """What a group's new shard is made of: each old shard's row (None if gone), its entries and the deleted
        keys inside its record runs."""
        state = []
        for shard_id in ids:
            shard = self.catalog.shard(shard_id)
            rows = self.catalog.shard_entries(shard_id)
            deleted: list[int] = []
            if shard is not None and shard["kind"] == KIND_RECORDS and rows:  # deleted rows stay in their entries
                deleted = self.catalog.deleted_in(rows[0][0], max(r[0] + r[1] for r in rows)).tolist()
            state.append((shard, rows, deleted))
        return state

    def compact_group(self, group: list[dict]) -> int | None:
        """Replace the shards of ``group`` by one shard of their survivors (none if there are none); returns the new
        shard's size, or None when other writers kept changing the group (it is left for the next run)."""
        ids = [s["id"] for s in group]
        for _ in range(ATTEMPTS):
            try:
                with self.journal.publication() as pub, self.catalog.writing():  # one writer: one transaction
                    state = self._state(ids)
                    if any(row is None for row, _, _ in state):
                        return 0  # another compaction replaced it meanwhile
                    new_id, size, moved = self._write(pub, state)
                    with self.catalog.transaction():
                        if self.catalog.concurrent_writers and self._state(ids) != state:
                            raise _GroupChanged  # the new shard would bring a sample deleted meanwhile back
                        if new_id is not None:
                            self.catalog.add_shard(new_id, shard_name(new_id), True, group[0]["kind"], size,
                                                   sum(e.count for entries in moved for e in entries))
                        for (row, _, _), entries in zip(state, moved):
                            appended = self.catalog.shard_appended(row["id"])
                            self.catalog.replace_shard(row["id"], list(zip(entries, appended_of(entries, appended))))
                            self.catalog.add_erasure(row["path"])
                        self.catalog.bump(layout=True)
            except _GroupChanged:
                continue  # its file was removed by the publication
            self.publish()
            return size
        return None

    def _write(self, pub, state: list) -> tuple[int | None, int, list[list[Entry]]]:
        """The new shard of a group's survivors, written through the publication ``pub`` (not yet in the catalog):
        its id, size, and each old shard's moved entries."""
        if not any(row["live"] for row, _, _ in state):
            return None, 0, [[] for _ in state]
        new_id = self.catalog.allocate("next_shard", 1)
        moved = []
        with pub.shard(shard_name(new_id)) as out:
            writer = tarformat.ShardWriter(out, int(time.time()))
            for row, rows, deleted in state:
                def read(starts, ends, _rel=row["path"]):
                    return self.read_ranges(_rel, starts, ends)
                moved.append(copy_survivors(writer, row["kind"], rows, new_id, read, np.array(deleted, np.int64)))
            size = writer.close()
        return new_id, size, moved

    def finish_erasures(self) -> list[str]:
        """Remove the files that compactions recorded for erasure; return those that could not be removed (each
        also a warning). A record is dropped only once its file is gone, so no erasure is ever forgotten."""
        failed, done = [], False
        for rel in self.catalog.pending_erasures():
            try:
                self.files.remove(rel)
            except OSError as err:
                failed.append(rel)
                warnings.warn(f"{self.url}: could not remove {self.files.path(rel)!r}, which still holds deleted "
                              f"samples' bytes ({err.strerror or err}); the erasure stays recorded and the next "
                              "compact() or writable open tries again", stacklevel=4)
                continue
            with self.catalog.transaction():
                self.catalog.erasure_done(rel)
            done = True
        if done:
            self.publish()
        return failed


class _GroupChanged(Exception):
    """Another writer changed a group's shards while the group was copied."""


def appended_of(entries: list[Entry], appended: dict[int, int]) -> list[int]:
    """When each survivor was appended: that of the old entry (first key -> second) holding its first key (a record
    run split by compaction keeps its run's)."""
    if not entries:
        return []
    firsts = np.array(sorted(appended), np.int64)
    when = np.array([appended[f] for f in firsts.tolist()], np.int64)
    at = np.searchsorted(firsts, np.array([e.first_key for e in entries], np.int64), side="right") - 1
    return when[at].tolist()
