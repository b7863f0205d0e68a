"""Compaction: the bytes of deleted samples physically gone from every file the store owns — and only from those.

Each owned shard that holds deleted samples is replaced by a new shard of its survivors (journaled like any new
shard); the catalog switch commits together with a record that the old file is to be erased, then the file is
removed and the record dropped. A removal that fails or is cut short stays recorded and is finished by the next
compaction or writable open: no erasure is forgotten. Shards ingested without ``hand_over=True`` are the user's and
are left as they are; the caller is told which files still hold deleted samples' bytes.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

import numpy as np

from lightning_modyn.store.catalog import Catalog, Entry
from lightning_modyn.store.filesystem import StoreFS
from lightning_modyn.store.journal import ShardJournal
from lightning_modyn.store.writing import shard_name, write_survivors

ReadRanges = Callable[[str, np.ndarray, np.ndarray], list]
"""``read_ranges(shard, starts, ends)``: bytes of each range of a shard (the store's batched reader)."""


class Compaction:
    """Compaction of one store, through its catalog, files and journal. ``publish()`` makes a commit visible to other
    machines (a remote store uploads its catalog); ``url`` names the store in warnings."""

    def __init__(self, catalog: Catalog, files: StoreFS, journal: ShardJournal, read_ranges: ReadRanges,
                 publish: Callable[[], None], url: str) -> None:
        self.catalog = catalog
        self.files = files
        self.journal = journal
        self.read_ranges = read_ranges
        self.publish = publish
        self.url = url

    def run(self, bar) -> dict[str, int]:
        """Compact every owned shard with deleted samples (``bar``: a progress bar, updated per shard); the stats of
        ``SampleStore.compact``."""
        stats = {"shards_rewritten": 0, "shards_removed": 0, "bytes_freed": 0, "shards_not_owned": 0,
                 "deleted_kept": 0, "erasures_pending": 0}
        pending = self.finish_erasures()  # of an earlier compaction that did not get to remove its old files
        shards = [s for s in self.catalog.shards() if s["live"] < s["total"]]
        targets = [s for s in shards if s["owned"]]
        kept = [s for s in shards if not s["owned"]]
        bar.reset(total=len(targets))
        for shard in targets:
            new_size = self.compact_shard(shard)
            stats["shards_rewritten" if new_size else "shards_removed"] += 1
            stats["bytes_freed"] += shard["size"] - new_size
            bar.update(1)
        if targets:
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

    def compact_shard(self, shard: dict) -> int:
        """Replace one owned shard by its survivors (none: no new shard); returns the new shard's size.

        The shard's rows are read inside the transaction that replaces it, so that a delete committed by another
        writer since the shard was listed is honoured."""
        old_rel = shard["path"]
        with self.journal.publication() as pub, self.catalog.transaction():
            shard = self.catalog.shard(shard["id"])
            if shard is None or shard["live"] == shard["total"]:  # another compaction got there first
                return 0 if shard is None else shard["size"]
            rows = self.catalog.shard_entries(shard["id"])
            appended = self.catalog.shard_appended(shard["id"])
            new_entries: list[Entry] = []
            size = 0
            if shard["live"] > 0:
                new_id = self.catalog.allocate("next_shard", 1)
                rel = shard_name(new_id)

                def read_range(start: int, end: int) -> bytes:
                    return self.read_ranges(old_rel, np.array([start]), np.array([end]))[0]

                with pub.shard(rel) as out:
                    size, new_entries = write_survivors(out, shard["kind"], rows, new_id, read_range,
                                                        self.catalog.deleted_in, int(time.time()))
                self.catalog.add_shard(new_id, rel, True, shard["kind"], size, sum(e.count for e in new_entries))
            self.catalog.replace_shard(shard["id"], list(zip(new_entries, appended_of(new_entries, appended))))
            self.catalog.add_erasure(old_rel)
            self.catalog.bump(layout=True)
        self.publish()
        return size

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


def appended_of(entries: list[Entry], appended: dict[int, int]) -> list[int]:
    """When each survivor was appended: that of the old entry (first key -> second) holding its first key (a record
    run split by compaction keeps its run's)."""
    firsts = np.array(sorted(appended), np.int64)
    when = np.array([appended[f] for f in firsts.tolist()], np.int64)
    at = np.searchsorted(firsts, np.array([e.first_key for e in entries], np.int64), side="right") - 1
    return when[at].tolist()
