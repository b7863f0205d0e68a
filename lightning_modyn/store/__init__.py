"""Key-addressable sample store over WebDataset shards."""

from lightning_modyn.store.catalog import NO_LABEL, Slice
from lightning_modyn.store.codec import decode_sample, decode_value
from lightning_modyn.store.errors import (
    CatalogError,
    CompressedShardError,
    DeletedKeyError,
    DuplicateKeyError,
    ReadOnlyStoreError,
    RecordDtypeError,
    SampleEncodingError,
    ShardFormatError,
    ShardMissingError,
    ShardWriteError,
    StoreError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
    StoreVersionError,
    TruncatedShardError,
    UnknownKeyError,
    UnsafeMemberError,
)
from lightning_modyn.store.store import MemberBatch, SampleStore

__all__ = [
    "NO_LABEL",
    "CatalogError",
    "CompressedShardError",
    "DeletedKeyError",
    "DuplicateKeyError",
    "ReadOnlyStoreError",
    "RecordDtypeError",
    "SampleEncodingError",
    "MemberBatch",
    "SampleStore",
    "ShardFormatError",
    "ShardMissingError",
    "ShardWriteError",
    "Slice",
    "StoreError",
    "StoreExistsError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreVersionError",
    "TruncatedShardError",
    "UnknownKeyError",
    "UnsafeMemberError",
    "decode_sample",
    "decode_value",
]
