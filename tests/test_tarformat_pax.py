"""PAX ``size`` records (members of 8 GiB or more) and member names that are not UTF-8, in every tar parser."""

from __future__ import annotations

import io
import mmap
import os
import random
import re
import tarfile

import numpy as np
import pytest

from lightning_modyn.store import tarformat
from lightning_modyn.store.errors import ShardFormatError, TruncatedShardError

ZERO_SIZE = b"00000000000\0"  # what tarfile writes in the USTAR size field of a member of 8 GiB or more


def _with_checksum(header: bytes | bytearray) -> bytes:
    """A header block with its checksum made right again after an edit."""
    block = bytearray(header)
    block[148:156] = b" " * 8
    block[148:155] = f"{sum(block):06o}\0".encode()
    return bytes(block)


def _with_size_field(header: bytes, field: bytes) -> bytes:
    """A header block with another size field (and the right checksum)."""
    return _with_checksum(header[:124] + field + header[136:])


def _pax_sized_header(name: str, size: int, size_field: bytes = ZERO_SIZE) -> bytes:
    """The headers tarfile writes for a member of ``size`` bytes that does not fit the USTAR size field: a PAX
    header whose ``size`` record holds the size, then a USTAR header whose size field says ``size_field``."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.pax_headers = {"size": str(size)}
    head = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
    return head[:-512] + _with_size_field(head[-512:], size_field)


def _pax_sized_member(name: str, data: bytes, size_field: bytes = ZERO_SIZE) -> bytes:
    return _pax_sized_header(name, len(data), size_field) + data + b"\0" * (tarformat.padded(len(data)) - len(data))


def _pax_header(records: bytes) -> bytes:
    """An extended header member ('x') holding ``records`` as they are, well-formed or not."""
    member = tarformat.encode_member("PaxHeader/k", records)
    return _with_checksum(member[:156] + b"x" + member[157:512]) + member[512:]


def _indexed(data: bytes, where: str = "t.tar"):
    """(key, start, end, [(ext, data offset, size)]) of each sample, as ingest indexes the shard."""
    members = tarformat.iter_members(lambda o, n: data[o : o + n], len(data), where)
    return [(s.key, s.start, s.end, [(m.ext, m.data_offset, m.size) for m in s.members])
            for s in tarformat.iter_samples(members, where)]


def _tarfile_members(data: bytes):
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m.name, m.offset_data, m.size) for m in tf.getmembers() if m.isreg()]


def _read_back(arr: np.ndarray, samples, monkeypatch) -> tuple[list, list, list[int]]:
    """Members of every indexed sample found by parse_sample per range and by parse_samples for all ranges at once
    (with repeats, in another order), and the starts of the ranges parse_samples sent to the exact parser."""
    starts = np.array([s[1] for s in samples], np.int64)
    ends = np.array([s[2] for s in samples], np.int64)
    view = memoryview(arr)
    single = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        key, members = tarformat.parse_sample(view[s:e], "t.tar", s)
        single.append((key, [(ext, s + off, size) for ext, off, size in members]))
    order = np.array(list(range(len(samples)))[::-1] * 2)
    exact: list[int] = []
    real = tarformat.parse_sample
    monkeypatch.setattr(tarformat, "parse_sample", lambda b, w, base=0: exact.append(base) or real(b, w, base))
    parsed = tarformat.parse_samples(arr, starts[order], ends[order], lambda i: "t.tar")
    monkeypatch.setattr(tarformat, "parse_sample", real)
    batched = [(parsed.keys[i], []) for i in range(len(order))]
    for i, x, d, z in zip(parsed.sample.tolist(), parsed.ext.tolist(), parsed.data.tolist(), parsed.size.tolist()):
        batched[i][1].append((parsed.exts[x], d, z))
    return single, [batched[order.tolist().index(i)] for i in range(len(samples))], sorted(set(exact))


# ====================================================================== PAX size records


def test_tarfile_writes_a_member_of_8_gib_with_a_pax_size_record_and_0_in_its_header():
    info = tarfile.TarInfo("big.bin")
    info.size = 8 << 30
    head = info.tobuf(format=tarfile.PAX_FORMAT)
    assert b" size=8589934592\n" in head[512:1024]
    assert head[-512 + 124 : -512 + 136] == ZERO_SIZE
    assert head == _pax_sized_header("big.bin", 8 << 30)  # the shape the tests below build with small sizes


@pytest.mark.parametrize("payload", [b"abc", bytes(range(256)) * 3, b"\0" * 512 + b"tail", b"\0" * 1024, b""],
                         ids=["short", "long", "zero-block-first", "zero-blocks-only", "empty"])
@pytest.mark.parametrize("size_field", [ZERO_SIZE, b"\0" * 12, b"00000000001\0"], ids=["0", "empty", "wrong"])
def test_a_pax_size_record_gives_the_member_size(payload, size_field, monkeypatch):
    data = b"".join([
        tarformat.encode_member("a.cls", b"1"),
        _pax_sized_member("b.bin", payload, size_field),
        tarformat.encode_member("b.cls", b"2"),
        tarformat.encode_member("c.cls", b"3"),
        tarformat.END_OF_ARCHIVE,
    ])
    b_data = 512 + 512 + 1024 + 512  # a.cls, then the PAX header and its records, then b.bin's own header
    samples = _indexed(data)
    assert [s[0] for s in samples] == ["a", "b", "c"]  # nothing after the sized member is dropped
    assert samples[1][3] == [("bin", b_data, len(payload)), ("cls", b_data + tarformat.padded(len(payload)) + 512, 1)]
    assert samples[1][1] == 1024  # the range starts at the PAX header: self-contained
    assert _tarfile_members(data) == [(f"{k}.{ext}", off, size) for k, _, _, members in samples
                                      for ext, off, size in members]
    single, batched, exact = _read_back(np.frombuffer(data, np.uint8), samples, monkeypatch)
    assert single == batched == [(key, members) for key, _, _, members in samples]
    assert exact == [1024]  # the sample with a size record, and only it, went to the exact parser
    assert data[b_data : b_data + len(payload)] == payload


def test_a_pax_size_record_wins_over_a_size_field_that_is_not_a_number():
    data = _pax_sized_member("k.bin", b"x" * 700, b"garbage!\0\0\0\0") + tarformat.END_OF_ARCHIVE
    assert _indexed(data) == [("k", 0, 2560, [("bin", 1536, 700)])]
    assert tarformat.parse_sample(memoryview(data)[:2560], "t.tar") == ("k", [("bin", 1536, 700)])


def test_a_member_of_8_gib_in_a_sparse_file(tmp_path, monkeypatch):
    """The real thing, without writing 8 GiB: the member's data is a hole of zeros, so before PAX sizes were read
    it was indexed as 0 bytes and the shard ended at its first data block."""
    big = (8 << 30) + 5
    head = _pax_sized_header("big.bin", big)
    after = tarformat.encode_member("big.cls", b"7") + tarformat.encode_member("next.cls", b"8")
    path = tmp_path / "big.tar"
    with open(path, "wb") as f:
        f.write(head)
        f.seek(len(head) + tarformat.padded(big))
        f.write(after + tarformat.END_OF_ARCHIVE)
    if os.stat(path).st_blocks * 512 > 1 << 24:
        pytest.skip("no sparse files here")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        data_offset = len(head)
        cls = data_offset + tarformat.padded(big) + 512
        samples = _indexed(mm)
        assert samples == [("big", 0, cls + 512, [("bin", data_offset, big), ("cls", cls, 1)]),
                           ("next", cls + 512, cls + 1536, [("cls", cls + 1024, 1)])]
        with tarfile.open(path) as tf:
            assert [(m.name, m.offset_data, m.size) for m in tf.getmembers()] == [
                ("big.bin", data_offset, big), ("big.cls", cls, 1), ("next.cls", cls + 1024, 1)]
        arr = np.frombuffer(mm, np.uint8)
        try:
            single, batched, exact = _read_back(arr, samples, monkeypatch)
        finally:
            del arr
        assert single == batched == [(key, members) for key, _, _, members in samples] and exact == [0]


@pytest.mark.parametrize("value", [b"-5", b"abc", b"", b"1.5", b" 5", b"+5", b"0x10", b"5 ", "٣".encode()])
def test_a_pax_size_record_that_is_not_a_non_negative_integer_is_a_format_error(value, monkeypatch):
    record = b" size=" + value + b"\n"
    length = next(len(record) + d for d in (1, 2) if len(str(len(record) + d)) == d)  # counts its own digits
    records = str(length).encode() + record
    good = tarformat.encode_member("a.cls", b"1")
    sample = _pax_header(records) + tarformat.encode_member("k.bin", b"")
    data = good + sample + tarformat.END_OF_ARCHIVE
    message = re.escape(f"t.tar: PAX size record {value!r} in the extended header at offset {len(good)} is not a "
                        "non-negative integer")
    with pytest.raises(ShardFormatError, match=message):
        _indexed(data)
    with pytest.raises(ShardFormatError, match=message):
        tarformat.parse_sample(memoryview(data)[len(good) : len(good) + len(sample)], "t.tar", len(good))
    with pytest.raises(ShardFormatError, match=message):
        tarformat.parse_samples(np.frombuffer(data, np.uint8), np.array([0, len(good)]),
                                np.array([len(good), len(good) + len(sample)]), lambda i: "t.tar")


def test_a_pax_size_past_the_end_of_the_file_is_a_truncated_shard():
    sample = _pax_sized_member("k.bin", b"x" * 100)
    data = sample[:-512]  # the data block cut off: no room for the 100 bytes (nor the end-of-archive marker)
    header = len(sample) - 1024  # k.bin's own header, after the PAX header and its records
    with pytest.raises(TruncatedShardError, match=re.escape(
            f"t.tar: member at offset {header} declares 100 bytes but the file ends at {len(data)}")):
        _indexed(data)
    with pytest.raises(ShardFormatError, match=re.escape(
            f"t.tar: sample range does not end on a member boundary; the index is stale (the range at offset 0 "
            f"ends at {len(data)}, its members at {len(sample)})")):
        tarformat.parse_sample(memoryview(data), "t.tar")


# ====================================================================== names that are not UTF-8


def _tar(members: list[tuple[str, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("name, fmt", [
    ("k\udcff.bin", tarfile.USTAR_FORMAT),  # in the header's name field
    ("d" * 60 + "\udce9/" + "k" * 60 + ".bin", tarfile.USTAR_FORMAT),  # in the USTAR prefix
    ("k\udcff.bin", tarfile.PAX_FORMAT),  # a PAX path record (with hdrcharset=BINARY, as tarfile writes it)
    ("k" * 120 + "\udcc3.bin", tarfile.GNU_FORMAT),  # a GNU long name
])
def test_a_member_name_that_is_not_utf8_is_refused_at_ingest(name, fmt):
    data = _tar([("a.cls", b"1"), (name, b"xyz")], fmt)
    raw = name.encode("utf-8", "surrogateescape")
    with pytest.raises(ShardFormatError) as err:
        _indexed(data, "shard-3.tar")
    assert str(err.value) == (f"shard-3.tar: member name {raw!r} at offset 1024 is not UTF-8; member names must be "
                              "UTF-8 (WebDataset keys are text)")


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_names_in_utf8_beyond_ascii_are_indexed(fmt):
    name = "d" * 60 + "é/" + "ü" * 30 + ".bin"
    samples = _indexed(_tar([("a.cls", b"1"), (name, b"xyz")], fmt))
    assert [s[0] for s in samples] == ["a", name[:-4]]


def test_a_non_utf8_name_of_a_member_that_is_not_indexed_is_no_error():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, errors="surrogateescape") as tf:
        d = tarfile.TarInfo("dir\udcff")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        info = tarfile.TarInfo("k.bin")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"1"))
    assert [s[0] for s in _indexed(buf.getvalue())] == ["k"]


def test_random_sizes_in_pax_records_agree_with_tarfile(monkeypatch):
    rnd = random.Random(5)
    parts = []
    for i in range(30):
        payload = rnd.randbytes(rnd.choice([0, 1, 511, 512, 513, 2000]))
        if rnd.random() < 0.3:
            payload = b"\0" * 512 + payload
        parts.append(_pax_sized_member(f"s{i}.bin", payload) if rnd.random() < 0.5
                     else tarformat.encode_member(f"s{i}.bin", payload))
    data = b"".join(parts) + tarformat.END_OF_ARCHIVE
    samples = _indexed(data)
    assert _tarfile_members(data) == [(f"{k}.bin", m[0][1], m[0][2]) for k, _, _, m in samples]
    single, batched, _ = _read_back(np.frombuffer(data, np.uint8), samples, monkeypatch)
    assert single == batched == [(key, members) for key, _, _, members in samples]
