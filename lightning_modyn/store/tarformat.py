"""The one place that knows the bytes of a shard: WebDataset-compatible tar members.

A shard is a plain POSIX tar file. A *sample* is a run of consecutive members whose names share a prefix
(``dir/abc.jpg``, ``dir/abc.cls`` -> key ``dir/abc``), exactly as ``webdataset`` groups them. The store indexes a
sample by the byte range ``[start, end)`` that covers all its members, including any PAX or GNU long-name headers
in front of them, so that a range is self-contained: it can be parsed on its own and copied into another shard.

Record blocks (many fixed-size rows in one member) are ordinary members too; their rows start right after the
member's header.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass, field
from typing import IO, Callable, Iterator
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
_EXTENSION_HEADERS = (b"x", b"L", b"g", b"K")  # they describe the member after them
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
    """Header + data + zero padding of one member, as :class:`ShardWriter` writes it."""
    buf = io.BytesIO()
    ShardWriter(buf, mtime).member(name, data)
    return buf.getvalue()


class ShardWriter:
    """Members written into a shard file one after the other, knowing where each one's bytes land: the one writer of
    tar headers and padding, used by every path that writes a shard (append, records, compaction).

    ``pos`` is the number of bytes written so far; :meth:`close` ends the archive and returns the shard's size.
    """

    def __init__(self, out: IO[bytes], mtime: int = 0) -> None:
        self.out = out
        self.mtime = mtime
        self.pos = 0

    def member(self, name: str, data: bytes | memoryview) -> int:
        """Write a regular-file member; return where its data starts."""
        size = len(data)
        header = member_header(name, size, self.mtime)
        self.out.write(header)
        self.out.write(data)
        pad = padded(size) - size
        if pad:
            self.out.write(b"\0" * pad)
        start = self.pos + len(header)
        self.pos = start + size + pad
        return start

    def copy(self, members: bytes) -> int:
        """Write whole members taken from another shard (a sample's range: headers, data, padding); return where
        they start."""
        start = self.pos
        self.out.write(members)
        self.pos += len(members)
        return start

    def close(self) -> int:
        """End the archive (two zero blocks); return the shard's size."""
        self.out.write(END_OF_ARCHIVE)
        self.pos += len(END_OF_ARCHIVE)
        return self.pos


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


def _octal(field_bytes: bytes, what: str, where: str, offset: int) -> int:
    """A numeric header field (octal text, or GNU base-256 for large values) of the header at ``offset``."""
    if field_bytes and field_bytes[0] & 0x80:  # GNU base-256 for large values
        value = int.from_bytes(field_bytes[1:], "big")
        if field_bytes[0] & 0x40:
            raise ShardFormatError(f"{where}: negative {what} in the tar header at offset {offset}")
        return value
    text = field_bytes.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ShardFormatError(
            f"{where}: tar header field {what} at offset {offset} is not a number: {field_bytes!r}"
        ) from None


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


def _pax_records(data: bytes, where: str, offset: int) -> dict[str, bytes]:
    """The ``length keyword=value\\n`` records of the PAX extended header at ``offset``. Values stay bytes: a path
    is decoded by its reader (strictly at ingest, see :func:`_utf8_name`), a size is checked by :func:`_pax_size`."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ShardFormatError(f"{where}: malformed PAX extended header at offset {offset}") from None
        if length <= 0:
            raise ShardFormatError(f"{where}: malformed PAX extended header at offset {offset}")
        record = data[space + 1 : pos + length - 1]
        keyword, _, value = record.partition(b"=")
        records[keyword.decode("utf-8", "replace")] = value
        pos += length
    return records


def _pax_size(value: bytes, where: str, offset: int) -> int:
    """The member size a PAX ``size`` record gives (tarfile writes one for members of 8 GiB or more, with 0 in the
    header's own size field): plain decimal digits, nothing else."""
    if value.isdigit():  # ASCII digits only: no sign, space or fraction
        try:
            return int(value)
        except ValueError:  # more digits than int() converts: no file is that large anyway
            pass
    raise ShardFormatError(
        f"{where}: PAX size record {value!r} in the extended header at offset {offset} is not a non-negative integer"
    )


def _utf8_name(raw: bytes, where: str, offset: int) -> str:
    """A member name as text. Names become WebDataset keys and extensions, which are text (and go into the
    catalog), so bytes that are not UTF-8 are refused at ingest rather than carried along as lone surrogates."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ShardFormatError(
            f"{where}: member name {raw!r} at offset {offset} is not UTF-8; member names must be UTF-8 "
            "(WebDataset keys are text)"
        ) from None


def iter_members(
    read_at: Callable[[int, int], bytes],
    size: int,
    where: str,
    start: int = 0,
    require_end_marker: bool = True,
) -> Iterator[Member]:
    """Regular-file members of a tar archive of ``size`` bytes, read through ``read_at(offset, n)``.

    Headers are validated (checksum, sizes inside the file, safe UTF-8 names); PAX paths and sizes and GNU long
    names are applied. Directories, links and other special members are skipped. ``where`` names the file in error
    messages.
    """
    pos = start
    pending_name: tuple[bytes, int] | None = None  # a long name's raw bytes and the offset of the header giving it
    pending_size: int | None = None  # a PAX size record: overrides the next member header's size field
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
        typeflag = header[156:157]
        extension = typeflag in _EXTENSION_HEADERS
        if pending_size is not None and not extension:
            member_size = pending_size  # the header's own field holds 0 or anything: not read
        else:
            member_size = _octal(header[124:136], "size", where, pos)
        data_offset = pos + BLOCK
        if data_offset + member_size > size:
            raise TruncatedShardError(
                f"{where}: member at offset {pos} declares {member_size} bytes but the file ends at {size}; "
                "the shard is truncated"
            )
        next_pos = data_offset + padded(member_size)
        if aux_start is None:
            aux_start = pos
        if typeflag == b"x":
            records = _pax_records(read_at(data_offset, member_size), where, pos)
            if "path" in records:
                pending_name = (records["path"], pos)
            if "size" in records:
                pending_size = _pax_size(records["size"], where, pos)
            pos = next_pos
            continue
        if typeflag == b"L":
            pending_name = (read_at(data_offset, member_size).split(b"\0", 1)[0], pos)
            pos = next_pos
            continue
        if extension:  # global PAX header, GNU long link name: nothing for us
            pos = next_pos
            aux_start = None if typeflag == b"g" else aux_start
            continue
        if pending_name is not None:
            raw_name, name_at = pending_name
        else:
            raw_name, name_at = header[0:100].split(b"\0", 1)[0], pos
            prefix = header[345:500].split(b"\0", 1)[0]
            if header[257:263] == b"ustar\0" and prefix:
                raw_name = prefix + b"/" + raw_name
        member_start = aux_start
        pending_name = None
        pending_size = None
        aux_start = None
        pos = next_pos
        if typeflag not in _REGULAR:
            continue
        name = _utf8_name(raw_name, where, name_at)
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
                raise ShardFormatError(f"{where}: sample {key!r} has two members with extension {ext!r} (the "
                                       f"second at offset {member.start})")
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


def parse_sample(buf: bytes | memoryview, where: str, base: int = 0) -> tuple[str | None, list[tuple[str, int, int]]]:
    """The sample key and (extension, data offset, size) of each member in a self-contained sample range, offsets
    relative to ``buf``.

    This is the read path: it looks only at the headers inside the range the offset index pointed to, and never
    copies member data (``buf`` may be a view of a mapped shard). Every header's checksum is checked, so that bytes
    overwritten after ingest are a :class:`ShardFormatError` instead of members read from garbage. ``base`` is
    where ``buf`` starts in the shard ``where``: errors name offsets in the file.
    """
    view = memoryview(buf)
    out: list[tuple[str, int, int]] = []
    key: str | None = None
    pos = 0
    n = len(view)
    pending: str | None = None
    pending_size: int | None = None
    while pos + BLOCK <= n:
        header = view[pos : pos + BLOCK].tobytes()  # one small copy; slicing bytes is cheaper than a view's
        if not _checksum_ok(header):
            raise ShardFormatError(f"{where}: bad tar header checksum at offset {base + pos}; the shard changed "
                                   "after it was indexed, or the index is stale")
        typeflag = header[156:157]
        if pending_size is not None and typeflag not in _EXTENSION_HEADERS:
            size = pending_size
            pending_size = None
        else:
            size = _octal(header[124:136], "size", where, base + pos)
        data_offset = pos + BLOCK
        if typeflag in (b"x", b"L"):
            data = view[data_offset : data_offset + size].tobytes()
            if typeflag == b"x":
                records = _pax_records(data, where, base + pos)
                if "path" in records:
                    pending = records["path"].decode("utf-8", "surrogateescape")
                if "size" in records:
                    pending_size = _pax_size(records["size"], where, base + pos)
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
        raise ShardFormatError(f"{where}: sample range does not end on a member boundary; the index is stale (the "
                               f"range at offset {base} ends at {base + n}, its members at {base + pos})")
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


_WORD = np.dtype("<u4")
_PAX_PATH, _PAX_SIZE = np.frombuffer(b"pathsize", _WORD)  # records that change what is read, after a space
_HEAD_BYTES = 346  # a header up to the first byte of the USTAR prefix: all that parse_samples reads of it
_MAX_PAX_SCAN = 1024  # longer PAX headers (long names, many records) are read one sample at a time


def parse_samples(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, where: Callable[[int], str],
                  keys: bool = True, file_starts: np.ndarray | None = None) -> ParsedSamples:
    """:func:`parse_sample` for many ranges ``[starts[i], ends[i])`` of the uint8 array ``buf`` at once.

    The headers of all samples are parsed together, one member position at a time, with numpy: reading a batch of
    small samples costs a few array operations per member instead of ~5 µs of Python per sample. Anything unusual
    — a PAX header that sets a path or a size, a GNU long name, a USTAR prefix, a base-256 or malformed size, a
    name starting with a dot — sends that sample to :func:`parse_sample`, so the result is the same as parsing each
    range on its own. PAX records other than a path or size are not checked here (``ingest`` checked them), nor are
    header checksums (the exact parser checks those; a header without a name, such as a zeroed block, goes there):
    bytes overwritten after ingest give a ShardFormatError or members that lie inside their range, never another
    exception.
    ``where(i)`` names sample ``i``'s shard in errors, and ``file_starts[i]`` (default ``starts[i]``, right when
    ``buf`` is one whole shard) is where the range starts in that file, for the offsets errors name. The caller
    makes sure every range lies inside ``buf``.
    """
    n = len(starts)
    file_starts = np.asarray(starts if file_starts is None else file_starts, np.int64)
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
        odd |= head[:, 0] == 0  # no name: a zeroed block (bytes lost after ingest) or a nameless member
        odd |= regular & (head[:, 345] != 0) & (head[:, 257:263] == _USTAR_MAGIC).all(1)  # a USTAR prefix
        pax = np.flatnonzero((flag == 0x78) & ~odd)
        if len(pax):
            odd[pax] |= _pax_needs_exact_parse(buf, data[pax], size[pax], ends[live[pax]])
        slow[live[odd]] = True
        take = regular & ~odd
        found.append((live[take], head[take, :100], data[take], size[take]))
        cur[live] = data + padded(size)
        live = live[~odd]
        live = live[cur[live] + BLOCK <= ends[live]]
    stale = np.flatnonzero(~slow & (cur != ends))
    if len(stale):
        i = int(stale[0])
        base = int(file_starts[i])
        raise ShardFormatError(f"{where(i)}: sample range does not end on a member boundary; the index is stale (the "
                               f"range at offset {base} ends at {base + int(ends[i] - starts[i])}, its members at "
                               f"{base + int(cur[i] - starts[i])})")
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
            key, members = parse_sample(view[s : int(ends[i])], where(i), int(file_starts[i]))
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


def _pax_needs_exact_parse(buf: np.ndarray, data: np.ndarray, size: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For PAX extended headers with data at ``data``: whether the sample must be parsed on its own — a record that
    may set the member's path or size (" path" or " size" anywhere in the data: false alarms only cost speed), or
    data that does not start like a record (a length from 1). The other records (mtime, comments...) do not change
    what is read."""
    out = size > _MAX_PAX_SCAN
    width = int(size[~out].max(initial=0))  # the widest header read here (garbage may declare any size)
    fits = np.flatnonzero(~out & (data + max(width, 1) <= ends))
    out[np.setdiff1d(np.flatnonzero(~out), fits)] = True  # too near the range's end to read the widest: alone
    if len(fits) and width:
        block = gather(buf, data[fits], width)
        own = size[fits]
        out[fits] = (own > 0) & ((block[:, 0] < 0x31) | (block[:, 0] > 0x39))
        if width >= 5:
            # the 4 bytes after each position, as one little-endian word (overlapping, unaligned: no copy), so that
            # " path" and " size" are a byte and a word compared each
            after = np.ndarray((len(fits), width - 4), _WORD, buffer=block, offset=1, strides=(width, 1))
            hit = (block[:, : width - 4] == 0x20) & ((after == _PAX_PATH) | (after == _PAX_SIZE))
            hit &= np.arange(width - 4) + 5 <= own[:, None]  # only inside this header's own data
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
