"""The one place that knows the bytes of a shard: WebDataset-compatible tar members.

A shard is a plain POSIX tar file. A *sample* is a run of consecutive members whose names share a prefix
(``dir/abc.jpg``, ``dir/abc.cls`` -> key ``dir/abc``), exactly as ``webdataset`` groups them. The store indexes a
sample by the byte range ``[start, end)`` that covers all its members, including any PAX or GNU long-name headers
in front of them, so that a range is self-contained: it can be parsed on its own and copied into another shard.

Record blocks (many fixed-size rows in one member) are ordinary members too; their rows start right after the
member's header.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from typing import Callable, Iterator
from zlib import adler32

import numpy as np
from lightning_modyn.store.errors import (
    ShardFormatError,
    TruncatedShardError,
    UnsafeMemberError,
)
from lightning_modyn.store.spanmap import gather

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)

_COMPRESSION_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}

_SAMPLE_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_REGULAR = (b"0", b"\0", b"7")
_PATH_CHARS = re.compile(r"[/\\:\0]")


def padded(size):
    """Bytes a member's data occupies in the archive (rounded up to whole 512-byte blocks); also for size arrays."""
    return (size + BLOCK - 1) // BLOCK * BLOCK


def split_name(name: str) -> tuple[str, str] | tuple[None, None]:
    """Split a member name into (sample key, extension) the way ``webdataset`` does; (None, None) if it has none."""
    match = _SAMPLE_NAME.match(name)
    if match is None:
        return None, None
    return match.group(1), match.group(2)


def check_member_name(name: str, where: str) -> None:
    """Refuse names that would escape the extraction root: absolute paths, ``..`` components, NUL bytes."""
    if name != ".." and _PATH_CHARS.search(name) is None:
        return  # a plain file name (the usual case): nothing to escape with
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\0" in name:
        raise UnsafeMemberError(f"{where}: unsafe member name {name!r} (absolute or escaping the root with '..')")


def member_header(name: str, size: int, mtime: int = 0) -> bytes:
    """The header block(s) of a regular-file member; long or non-ASCII names get a PAX header like GNU tar."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = mtime
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def encode_member(name: str, data: bytes | memoryview, mtime: int = 0) -> bytes:
    """Header + data + zero padding of one member, ready to be written to a shard."""
    header = member_header(name, len(data), mtime)
    return b"".join((header, data, b"\0" * (padded(len(data)) - len(data))))


@dataclass
class Member:
    """One regular-file member: ``start`` is where its first header (PAX or long-name header included) begins."""

    name: str
    start: int
    data_offset: int
    size: int
    ext: str | None = None  # set by iter_samples

    @property
    def end(self) -> int:
        return self.data_offset + padded(self.size)


@dataclass
class SampleSpan:
    """A sample as it lies in a shard: its WebDataset key, its byte range and its members."""

    key: str
    start: int
    end: int
    members: list[Member] = field(default_factory=list)


def detect_compression(head: bytes) -> str | None:
    """The compression format of a file from its first bytes, or None for anything else."""
    for magic, name in _COMPRESSION_MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def _octal(field_bytes: bytes, what: str, where: str) -> int:
    if field_bytes and field_bytes[0] & 0x80:  # GNU base-256 for large values
        value = int.from_bytes(field_bytes[1:], "big")
        if field_bytes[0] & 0x40:
            raise ShardFormatError(f"{where}: negative {what} in tar header")
        return value
    text = field_bytes.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ShardFormatError(f"{where}: tar header field {what} is not a number: {field_bytes!r}") from None


def _checksum_ok(header: bytes) -> bool:
    stored = header[148:156].split(b"\0", 1)[0].strip(b" \0")
    if not stored:
        return False
    try:
        expected = int(stored, 8)
    except ValueError:
        return False
    # the unsigned byte sum with the checksum field as spaces, by Adler-32's plain sum (A = 1 + sum mod 65521),
    # exact on pieces of at most 256 bytes: about 4x faster than sum() over the header's bytes
    unsigned = (adler32(header[:148]) & 0xFFFF) + (adler32(header[156:256]) & 0xFFFF) + (
        adler32(header[256:512]) & 0xFFFF) - 3 + 8 * 32
    if unsigned == expected:
        return True
    signed = np.frombuffer(header, dtype=np.int8)  # some old tars sum signed bytes
    return int(signed.sum(dtype=np.int64)) - int(signed[148:156].sum(dtype=np.int64)) + 8 * 32 == expected


def _pax_records(data: bytes, where: str) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ShardFormatError(f"{where}: malformed PAX extended header") from None
        if length <= 0:
            raise ShardFormatError(f"{where}: malformed PAX extended header")
        record = data[space + 1 : pos + length - 1]
        keyword, _, value = record.partition(b"=")
        records[keyword.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def iter_members(
    read_at: Callable[[int, int], bytes],
    size: int,
    where: str,
    start: int = 0,
    require_end_marker: bool = True,
) -> Iterator[Member]:
    """Regular-file members of a tar archive of ``size`` bytes, read through ``read_at(offset, n)``.

    Headers are validated (checksum, sizes inside the file, safe names); PAX and GNU long names are applied.
    Directories, links and other special members are skipped. ``where`` names the file in error messages.
    """
    pos = start
    pending_name: str | None = None
    aux_start: int | None = None
    while True:
        if pos >= size:
            if require_end_marker:
                raise TruncatedShardError(
                    f"{where}: no end-of-archive marker at offset {pos}; the file is truncated or not a tar archive"
                )
            return
        header = read_at(pos, BLOCK)
        if len(header) < BLOCK:
            raise TruncatedShardError(f"{where}: truncated tar header at offset {pos} (file has {size} bytes)")
        if header == b"\0" * BLOCK:
            return
        if not _checksum_ok(header):
            raise ShardFormatError(f"{where}: bad tar header checksum at offset {pos}; the shard is corrupted")
        member_size = _octal(header[124:136], "size", f"{where} at offset {pos}")
        typeflag = header[156:157]
        data_offset = pos + BLOCK
        if data_offset + member_size > size:
            raise TruncatedShardError(
                f"{where}: member at offset {pos} declares {member_size} bytes but the file ends at {size}; "
                "the shard is truncated"
            )
        next_pos = data_offset + padded(member_size)
        if aux_start is None:
            aux_start = pos
        if typeflag in (b"x", b"L"):
            data = read_at(data_offset, member_size)
            if typeflag == b"x":
                path = _pax_records(data, f"{where} at offset {pos}").get("path")
                if path is not None:
                    pending_name = path
            else:
                pending_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            pos = next_pos
            continue
        if typeflag in (b"g", b"K"):  # global PAX header, GNU long link name: nothing for us
            pos = next_pos
            aux_start = None if typeflag == b"g" else aux_start
            continue
        if pending_name is not None:
            name = pending_name
        else:
            name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            magic = header[257:265]
            prefix = header[345:500].split(b"\0", 1)[0]
            if magic[:6] == b"ustar\0" and prefix:
                name = prefix.decode("utf-8", "surrogateescape") + "/" + name
        member_start = aux_start
        pending_name = None
        aux_start = None
        pos = next_pos
        if typeflag not in _REGULAR:
            continue
        check_member_name(name, f"{where} at offset {member_start}")
        yield Member(name=name, start=member_start, data_offset=data_offset, size=member_size)


def iter_samples(members: Iterator[Member], where: str) -> Iterator[SampleSpan]:
    """Group consecutive members with the same key into samples; members without an extension are skipped."""
    current: SampleSpan | None = None
    exts: set[str] = set()
    for member in members:
        key, ext = split_name(member.name)
        if key is None:
            continue
        member.ext = ext
        if current is not None and key == current.key:
            if ext in exts:
                raise ShardFormatError(f"{where}: sample {key!r} has two members with extension {ext!r}")
            exts.add(ext)
            current.members.append(member)
            current.end = member.end
            continue
        if current is not None:
            yield current
        current = SampleSpan(key=key, start=member.start, end=member.end, members=[member])
        exts = {ext}
    if current is not None:
        yield current


def parse_sample(buf: bytes | memoryview, where: str) -> tuple[str | None, list[tuple[str, int, int]]]:
    """The sample key and (extension, data offset, size) of each member in a self-contained sample range, offsets
    relative to ``buf``.

    This is the read path: it looks only at the headers inside the range the offset index pointed to, and never
    copies member data (``buf`` may be a view of a mapped shard).
    """
    view = memoryview(buf)
    out: list[tuple[str, int, int]] = []
    key: str | None = None
    pos = 0
    n = len(view)
    pending: str | None = None
    while pos + BLOCK <= n:
        header = view[pos : pos + BLOCK].tobytes()  # one small copy; slicing bytes is cheaper than a view's
        typeflag = header[156:157]
        size_field = header[124:136]
        if size_field[0] & 0x80:
            size = int.from_bytes(size_field[1:], "big")
        else:
            size = int(size_field.split(b"\0", 1)[0].strip(b" \0") or b"0", 8)
        data_offset = pos + BLOCK
        if typeflag in (b"x", b"L"):
            data = view[data_offset : data_offset + size].tobytes()
            if typeflag == b"x":
                pending = _pax_records(data, where).get("path", pending)
            else:
                pending = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif typeflag in _REGULAR:
            if pending is not None:
                name = pending
            else:
                name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if header[257:263] == b"ustar\0" and header[345] != 0:
                    name = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape") + "/" + name
            pending = None
            sample_key, ext = split_name(name)
            if ext is not None:
                key = sample_key if key is None else key
                out.append((ext, data_offset, size))
        else:  # as iter_members: a global PAX header or a GNU long link name keeps a pending long name
            pending = pending if typeflag in (b"g", b"K") else None
        pos = data_offset + padded(size)
    if pos != n:
        raise ShardFormatError(f"{where}: sample range does not end on a member boundary; the index is stale")
    return key, out


@dataclass
class ParsedSamples:
    """Members of a batch of sample ranges, found by :func:`parse_samples`, without a Python object per member.

    ``sample[j]``, ``ext[j]`` (an index into ``exts``), ``data[j]`` and ``size[j]`` describe member ``j``; members are
    ordered by sample, then by their order in the tar. ``keys[i]`` is sample ``i``'s WebDataset key (None where no
    member has one), or None altogether when keys were not asked for.
    """

    sample: np.ndarray
    ext: np.ndarray
    data: np.ndarray
    size: np.ndarray
    exts: list[str]
    keys: list[str | None] | None


_PAX_PATH = np.frombuffer(b" path", np.uint8)
_HEAD_BYTES = 346  # a header up to the first byte of the USTAR prefix: all that parse_samples reads of it
_MAX_PAX_SCAN = 1024  # longer PAX headers (long names, many records) are read one sample at a time


def parse_samples(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, where: Callable[[int], str],
                  keys: bool = True) -> ParsedSamples:
    """:func:`parse_sample` for many ranges ``[starts[i], ends[i])`` of the uint8 array ``buf`` at once.

    The headers of all samples are parsed together, one member position at a time, with numpy: reading a batch of
    small samples costs a few array operations per member instead of ~5 µs of Python per sample. Anything unusual
    — a PAX header that sets a path, a GNU long name, a USTAR prefix, a base-256 size, a name starting with a dot —
    sends that sample to :func:`parse_sample`, so the result is the same as parsing each range on its own. PAX
    records other than a path are not checked here (``ingest`` checked them).
    ``where(i)`` names sample ``i``'s shard in errors. The caller makes sure every range lies inside ``buf``.
    """
    n = len(starts)
    cur = np.asarray(starts, np.int64).copy()
    ends = np.asarray(ends, np.int64)
    slow = np.zeros(n, bool)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # (sample, name rows, data, size)
    live = np.flatnonzero(cur + BLOCK <= ends)
    while len(live):
        head = gather(buf, cur[live], _HEAD_BYTES)
        flag = head[:, 156]
        size, size_ok = _octal_sizes(head[:, 124:136])
        data = cur[live] + BLOCK
        regular = (flag == 0x30) | (flag == 0) | (flag == 0x37)
        odd = ~size_ok | (flag == 0x4C)  # base-256 or malformed size, GNU long name
        odd |= regular & (head[:, 345] != 0) & (head[:, 257:263] == _USTAR_MAGIC).all(1)  # a USTAR prefix
        pax = np.flatnonzero((flag == 0x78) & ~odd)
        if len(pax):
            odd[pax] |= _pax_sets_path(buf, data[pax], size[pax], ends[live[pax]])
        slow[live[odd]] = True
        take = regular & ~odd
        found.append((live[take], head[take, :100], data[take], size[take]))
        cur[live] = data + padded(size)
        live = live[~odd]
        live = live[cur[live] + BLOCK <= ends[live]]
    stale = np.flatnonzero(~slow & (cur != ends))
    if len(stale):
        raise ShardFormatError(f"{where(int(stale[0]))}: sample range does not end on a member boundary; the index "
                               "is stale")
    if not found:  # no range holds a whole header
        none = np.zeros(0, np.int64)
        found.append((none, np.zeros((0, 100), np.uint8), none, none))
    sample, names, data, size = (np.concatenate(parts) for parts in zip(*found))
    longest = int((names != 0).any(0).nonzero()[0].max(initial=-1)) + 1  # names are usually far shorter than 100
    names = np.ascontiguousarray(names[:, : max(longest, 1)])
    key_end, ext_start, name_end, named, odd_name = _split_names(names)
    slow[sample[odd_name]] = True
    keep = named & ~odd_name & ~slow[sample]
    sample, names, data, size = sample[keep], names[keep], data[keep], size[keep]
    key_end, ext_start, name_end = key_end[keep], ext_start[keep], name_end[keep]
    ext_ids, exts = _ext_ids(names, ext_start, name_end)
    order = np.argsort(sample, kind="stable")  # by sample; members of a sample stay in tar order
    sample, names, data, size, ext_ids, key_end = (sample[order], names[order], data[order], size[order],
                                                   ext_ids[order], key_end[order])
    key_list: list[str | None] | None = None
    if keys:
        key_list = [None] * n
        first = np.flatnonzero(np.r_[True, sample[1:] != sample[:-1]]) if len(sample) else np.zeros(0, np.int64)
        rows = np.where(np.arange(names.shape[1]) < key_end[first, None], names[first], 0)
        raw = rows.view(f"S{names.shape[1]}").ravel()
        if (rows < 0x80).all():  # ASCII (the usual case): numpy makes the strings
            found_keys = raw.astype(f"U{names.shape[1]}").tolist()
        else:
            found_keys = [r.decode("utf-8", "surrogateescape") for r in raw.tolist()]
        if len(first) == n:  # every sample has a named member (the usual case): keys in sample order
            key_list = found_keys
        else:
            for i, key in zip(sample[first].tolist(), found_keys):
                key_list[i] = key
    slow_idx = np.flatnonzero(slow)
    if len(slow_idx):  # one sample at a time, exactly as the single-range parser does
        view = memoryview(buf)
        more = [[], [], [], []]
        index = {e: i for i, e in enumerate(exts)}
        for i in slow_idx.tolist():
            s = int(starts[i])
            key, members = parse_sample(view[s : int(ends[i])], where(i))
            if key_list is not None:
                key_list[i] = key
            for ext, off, sz in members:
                more[0].append(i)
                more[1].append(index.setdefault(ext, len(index)))
                more[2].append(s + off)
                more[3].append(sz)
        exts = list(index)
        sample, ext_ids, data, size = (np.concatenate([a, np.array(b, np.int64)]) for a, b in
                                       zip((sample, ext_ids, data, size), more))
        order = np.argsort(sample, kind="stable")
        sample, ext_ids, data, size = sample[order], ext_ids[order], data[order], size[order]
    return ParsedSamples(sample, ext_ids, data, size, exts, key_list)


_USTAR_MAGIC = np.frombuffer(b"ustar\0", np.uint8)
_OCTAL_WEIGHTS = 8 ** np.arange(11, -1, -1, dtype=np.int64)


def _octal_sizes(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sizes from 12-byte octal size fields, and which rows are plain enough to trust: spaces, octal digits, then
    only spaces up to a NUL or the field's end. Others (base-256, signs, garbage) are left to :func:`parse_sample`."""
    col = np.arange(12)
    digit = (fields >= 0x30) & (fields <= 0x37)
    space = fields == 0x20
    first_digit = np.where(digit.any(1), digit.argmax(1), 12)
    stop = ~(digit | (space & (col < first_digit[:, None])))  # the run is spaces, then digits, up to here
    length = np.where(stop.any(1), stop.argmax(1), 12)
    run = col < length[:, None]
    total = (np.where(run & digit, fields.astype(np.int64) - 0x30, 0) * _OCTAL_WEIGHTS).sum(1)
    value = total // 8 ** (12 - length)
    zero = fields == 0
    first_nul = np.where(zero.any(1), zero.argmax(1), 12)
    ok = (run | space | (col >= first_nul[:, None])).all(1) & ((fields[:, 0] & 0x80) == 0)
    return value, ok


def _pax_sets_path(buf: np.ndarray, data: np.ndarray, size: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For PAX extended headers with data at ``data``: whether the sample must be parsed on its own — a record that
    may set the member's path (" path" anywhere in the data: false alarms only cost speed), or data that does not
    start like a record (a length from 1). The other records (mtime, comments...) do not change what is read."""
    width = int(size.max()) if len(size) else 0
    out = size > _MAX_PAX_SCAN
    fits = np.flatnonzero(~out & (data + max(width, 1) <= ends))
    out[np.setdiff1d(np.flatnonzero(~out), fits)] = True  # too near the range's end to read the widest: alone
    if len(fits) and width:
        block = gather(buf, data[fits], width)
        own = size[fits]
        out[fits] = (own > 0) & ((block[:, 0] < 0x31) | (block[:, 0] > 0x39))
        k = len(_PAX_PATH)
        if width >= k:
            hit = np.arange(width - k + 1) + k <= own[:, None]  # only inside this header's own data
            for j in range(k):
                hit &= block[:, j : width - k + 1 + j] == _PAX_PATH[j]
            out[fits] |= hit.any(1)
    return out


def _split_names(names: np.ndarray):
    """Per member name (rows of the 100-byte name field): where its key ends, its extension starts and the name
    ends; whether it has a key and extension at all; and whether it is a case left to :func:`split_name` (a base
    name starting with a dot, which the regular expression may still split at an earlier slash)."""
    col = np.arange(names.shape[1])
    zero = names == 0
    name_end = np.where(zero.any(1), zero.argmax(1), names.shape[1])
    inside = col < name_end[:, None]
    last_slash = np.where((names == 0x2F) & inside, col, -1).max(1, initial=-1)
    dot = (names == 0x2E) & inside & (col > last_slash[:, None])
    has_dot = dot.any(1)
    first_dot = np.where(has_dot, dot.argmax(1), -1)
    odd = has_dot & (first_dot == last_slash + 1)
    odd |= ((names == 0x0A) & inside).any(1)  # a newline: the expression's "." and "$" treat it specially
    return first_dot, first_dot + 1, name_end, has_dot & ~odd, odd


def _ext_ids(names: np.ndarray, ext_start: np.ndarray, name_end: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each member's extension as a small integer, and the extensions they stand for."""
    if not len(names):
        return np.zeros(0, np.int64), []
    width = max(int((name_end - ext_start).max()), 1)
    cols = ext_start[:, None] + np.arange(width)
    ext = np.where(cols < name_end[:, None],
                   names[np.arange(len(names))[:, None], np.minimum(cols, names.shape[1] - 1)], 0)
    unique, ids = np.unique(ext.view(f"S{width}").ravel(), return_inverse=True)
    return ids.astype(np.int64), [u.decode("utf-8", "surrogateescape") for u in unique.tolist()]
