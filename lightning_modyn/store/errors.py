"""Errors raised by the sample store.

Every error names what is wrong (the shard file, the member, the key or the field) so that a user can find the
culprit without a debugger. All of them derive from :class:`StoreError`; the ones about keys also derive from
:class:`KeyError` so that ``except KeyError`` keeps working.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the sample store raises on purpose."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """``open`` was given a URL where no store exists, or a directory that is not a store."""


class StoreExistsError(StoreError, FileExistsError):
    """``create`` was given a URL that already holds a store or other files."""


class ReadOnlyStoreError(StoreError, PermissionError):
    """A mutating call on a store opened with ``readonly=True``."""


class StoreLockedError(StoreError):
    """Another process holds the store open for writing (one writer, many readers), or holds a write transaction
    on its catalog."""


class StoreVersionError(StoreError):
    """The store (``store.json``) or its catalog was written by a newer format than this version reads."""


class CatalogError(StoreError):
    """The catalog is missing, damaged, truncated or cannot be written. The message names the catalog file."""


class ShardWriteError(StoreError, OSError):
    """A shard file could not be written (file-size limit, disk full, read-only folder). Names the file; nothing of
    the call was committed."""


class ShardFormatError(StoreError, ValueError):
    """A shard is not an uncompressed, well-formed, safe tar file. The message names the file and the offset."""


class CompressedShardError(ShardFormatError):
    """A shard is compressed (gzip, bzip2, xz, zstd); random access needs an uncompressed tar."""


class TruncatedShardError(ShardFormatError):
    """A shard ends before its last member (or its end-of-archive marker) does."""


class UnsafeMemberError(ShardFormatError):
    """A member name is absolute or climbs out of the root with ``..``."""


class DuplicateKeyError(StoreError, ValueError):
    """A WebDataset ``__key__`` occurs twice (in one call, or in the call and the store)."""


class SampleEncodingError(StoreError, TypeError):
    """A sample value cannot be stored as bytes (not bytes/str/int/float/numpy/JSON-able)."""


class RecordDtypeError(StoreError, TypeError):
    """Records whose dtype differs from the store's record dtype, or that are not a structured array."""


class UnknownKeyError(StoreError, KeyError):
    """A key that the store never assigned."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the sentence instead
        return str(self.args[0]) if self.args else ""


class DeletedKeyError(UnknownKeyError):
    """A key whose sample was deleted."""


class ShardMissingError(StoreError, FileNotFoundError):
    """A shard file the catalog refers to is gone (removed by hand, or by a compaction after this reader opened)."""
