"""The writer's journal: proof of which files in a store the store itself wrote and may remove.

A write makes each new shard durable under its final name *before* the catalog transaction that refers to it
commits. A writer killed in between leaves a shard file that nothing refers to. Such a file is garbage only if the
store can prove it wrote it: a file the catalog does not know may just as well be the user's (copied into
``shards/`` by hand, or the prefix of an object store shared with other data), and the store never removes what is
not its own. So before a shard file gets its final name, the writer records that name here (one small marker per
shard under ``journal/``); once the transaction has committed or rolled back, the markers are settled (removed).
The next writable open removes each marked shard that the catalog does not know, then its marker. Temp files of
the package's own temp-name pattern (``_io.is_temp_name``) are the other proof of ownership.

With many writers (a PostgreSQL catalog), each writer keeps its markers in a folder of its own (``journal/w<n>``),
and a writer's folder is collected only once that writer is gone.
"""

from __future__ import annotations

import contextlib
import re
from typing import IO, Iterator

from lightning_modyn.store.errors import ShardWriteError, StoreError
from lightning_modyn.store.filesystem import StoreFS

JOURNAL = "journal"
_WRITER_FOLDER = re.compile(r"^w([0-9]+)$")


class ShardJournal:
    """Markers of the shard files a writer is publishing, under ``<root>/journal/`` (or ``journal/w<writer>/``)."""

    def __init__(self, files: StoreFS, writer: int | None = None) -> None:
        self.files = files
        self.folder = JOURNAL if writer is None else f"{JOURNAL}/w{writer}"

    @staticmethod
    def writers(files: StoreFS) -> list[tuple[int, "ShardJournal"]]:
        """The journals of every writer that has one (many-writer stores), by writer number."""
        found = [_WRITER_FOLDER.match(name) for name in files.listdir(JOURNAL)]
        return [(int(m.group(1)), ShardJournal(files, int(m.group(1)))) for m in found if m]

    def _marker(self, rel: str) -> str:
        return f"{self.folder}/{rel.replace('/', '%')}"

    def pending(self) -> list[str]:
        """Shard paths (relative to the root) whose writer did not settle them: published or abandoned."""
        return [name.replace("%", "/") for name in self.files.listdir(self.folder) if "%" in name]

    def drop(self) -> None:
        """Remove the journal's own folder (a gone writer's, once collected)."""
        if self.folder != JOURNAL:
            self.files.rmdir(self.folder)

    def settle(self, rels: list[str]) -> None:
        for rel in rels:
            self.files.remove(self._marker(rel))

    @contextlib.contextmanager
    def publication(self) -> Iterator["Publication"]:
        """New shard files of one catalog transaction: on success their markers are settled; on any failure (the
        transaction rolled back, a write failed) the files are removed first, so nothing unreferenced stays."""
        pub = Publication(self)
        try:
            yield pub
        except BaseException:
            for rel in pub.written:
                with contextlib.suppress(OSError):
                    self.files.remove(rel)
            self.settle(pub.intended)
            raise
        self.settle(pub.intended)


class Publication:
    """Shard files written for one transaction (see :meth:`ShardJournal.publication`)."""

    def __init__(self, journal: ShardJournal) -> None:
        self.journal = journal
        self.intended: list[str] = []
        self.written: list[str] = []

    @contextlib.contextmanager
    def shard(self, rel: str) -> Iterator[IO[bytes]]:
        """A new shard file at ``rel``, journaled before it gets its name, complete or absent. A failed write (file
        size limit, disk full, read-only folder) is a ``ShardWriteError`` naming the file."""
        files = self.journal.files
        self.intended.append(rel)
        try:
            files.touch(self.journal._marker(rel))
            with files.atomic_writer(rel) as out:
                yield out
        except StoreError:
            raise
        except OSError as err:
            raise ShardWriteError(
                f"could not write shard {files.path(rel)!r}: {err.strerror or err} (file-size limit, disk full or a "
                "read-only folder?); nothing of this call was stored"
            ) from err
        self.written.append(rel)
