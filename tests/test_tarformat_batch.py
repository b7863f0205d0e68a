"""``parse_samples`` (all headers of a batch at once, with numpy) finds exactly what ``parse_sample`` finds per range."""

from __future__ import annotations

import io
import re
import tarfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_modyn.store import tarformat
from lightning_modyn.store.errors import ShardFormatError

NAMES = st.sampled_from([
    "a", "b7", "dir/s", "dir.x/s", "d/e/f", "é/ü", "k" * 90, "p" * 140, "q" * 60 + "/" + "r" * 60, "dir/.h",
    ".hid", "sp ace", "n", "nl\nx", "d.x\n/k", "m" * 96,
])
EXTS = st.sampled_from(["bin", "cls", "json", "c.d", "", "jpg", "tar.gz", "ü"])


@st.composite
def tar_shards(draw):
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for i in range(draw(st.integers(1, 6))):
            base = draw(NAMES)
            key = f"{base}{i}" if not base.startswith(".") else base + str(i)
            for ext in draw(st.lists(EXTS, min_size=1, max_size=3, unique=True)):
                name = f"{key}.{ext}" if ext != "noext" else key
                if fmt == tarfile.USTAR_FORMAT and (len(name.encode()) > 100 or not name.isascii()):
                    continue  # USTAR cannot hold it (prefix splits are still drawn by the long "q/r" names)
                if draw(st.booleans()):
                    d = tarfile.TarInfo(key.rsplit("/", 1)[0] + "/" if "/" in key else "top/")
                    d.type = tarfile.DIRTYPE
                    tf.addfile(d)
                info = tarfile.TarInfo(name)
                data = draw(st.binary(max_size=1100))
                info.size = len(data)
                if fmt == tarfile.PAX_FORMAT and draw(st.booleans()):
                    info.pax_headers = {"mtime": "1796192346.5931754", "comment": draw(st.sampled_from(
                        ["x", "has path=inside", "y" * 600, "a path", "a size"])), }
                    if draw(st.booleans()):  # a size record, as for 8 GiB or more (test_tarformat_pax.py)
                        info.pax_headers["size"] = str(len(data))
                tf.addfile(info, io.BytesIO(data))
                if draw(st.booleans()):  # a member without a key inside the sample: skipped, the sample goes on
                    stray = tarfile.TarInfo(draw(st.sampled_from([".hid", "noext", "d.x\n/k.jpg", "a\n.b/c"])))
                    if fmt == tarfile.USTAR_FORMAT and not stray.name.isascii():
                        continue
                    stray.size = 5
                    tf.addfile(stray, io.BytesIO(b"stray"))
    return buf.getvalue()


def _ranges(data: bytes):
    members = tarformat.iter_members(lambda o, n: data[o : o + n], len(data), "t.tar")
    spans = list(tarformat.iter_samples(members, "t.tar"))
    return np.array([s.start for s in spans], np.int64), np.array([s.end for s in spans], np.int64)


def _per_range(data: bytes, starts, ends):
    out = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        key, members = tarformat.parse_sample(memoryview(data)[s:e], "t.tar")
        out.append((key, [(ext, s + off, size) for ext, off, size in members]))
    return out


def _batched(parsed: tarformat.ParsedSamples, n: int):
    out = [(parsed.keys[i] if parsed.keys is not None else None, []) for i in range(n)]
    for i, x, d, z in zip(parsed.sample.tolist(), parsed.ext.tolist(), parsed.data.tolist(), parsed.size.tolist()):
        out[i][1].append((parsed.exts[x], d, z))
    return out


@settings(max_examples=150, deadline=None)
@given(tar_shards(), st.randoms(use_true_random=False))
def test_parse_samples_equals_parse_sample_on_each_range(data, rnd):
    starts, ends = _ranges(data)
    if not len(starts):
        return
    order = np.array(rnd.sample(range(len(starts)), len(starts)) * 2)  # any order, repeats allowed
    arr = np.frombuffer(data, np.uint8)
    parsed = tarformat.parse_samples(arr, starts[order], ends[order], lambda i: "t.tar")
    assert _batched(parsed, len(order)) == _per_range(data, starts[order], ends[order])
    no_keys = tarformat.parse_samples(arr, starts[order], ends[order], lambda i: "t.tar", keys=False)
    assert no_keys.keys is None and no_keys.data.tolist() == parsed.data.tolist()


def test_the_common_shapes_take_the_vectorized_path_and_the_odd_ones_the_exact_one(monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, pax in [("s0.bin", {}), ("s1.bin", {"mtime": "1.5"}), ("s2/.x", {}), ("s3.bin", {"path": "z.jpg"}),
                          ("l" * 120 + ".bin", {}), ("s5.bin", {"size": "3"})]:
            info = tarfile.TarInfo(name)
            info.size = 3
            info.pax_headers = pax
            tf.addfile(info, io.BytesIO(b"abc"))
    data = buf.getvalue()
    starts, ends = _ranges(data)
    calls = []
    real = tarformat.parse_sample
    monkeypatch.setattr(tarformat, "parse_sample",
                        lambda b, w, base=0: calls.append(bytes(b[:100])) or real(b, w, base))
    parsed = tarformat.parse_samples(np.frombuffer(data, np.uint8), starts, ends, lambda i: "t.tar")
    assert parsed.keys == ["s0", "s1", "s2/", "z", "l" * 120, "s5"]
    assert len(calls) == 4  # the dot-file, the PAX path and size, the long name; plain and mtime-only PAX batched


def _pax_member(records: bytes, name: str = "k.bin", data: bytes = b"abc") -> bytes:
    return _with_type(tarformat.encode_member("PaxHeader/k", records), b"x") + tarformat.encode_member(name, data)


def _with_type(member: bytes, flag: bytes) -> bytes:
    return _with_checksum(member[:156] + flag + member[157:512]) + member[512:]


def _with_checksum(header: bytes | bytearray) -> bytes:
    """A header block with its checksum made right again after an edit."""
    block = bytearray(header)
    block[148:156] = b" " * 8
    block[148:155] = f"{sum(block):06o}\0".encode()
    return bytes(block)


@pytest.mark.parametrize("records", [b"7 path\n", b"13 path=z.jpg\n", b"a b", b"0 x=y\n", b"", b"12 mtime=1.5\n",
                                     b"21 comment=my path\n", b"9 size=3\n", b"9 size=7\n", b"10 size=-3\n",
                                     b"21 comment=my size\n"])
def test_pax_headers_the_batch_does_not_understand_are_parsed_one_sample_at_a_time(records):
    data = _pax_member(records)
    arr = np.frombuffer(data, np.uint8)
    try:
        expected = tarformat.parse_sample(memoryview(data), "t.tar")
    except ShardFormatError as err:
        with pytest.raises(ShardFormatError, match=re.escape(str(err).split(":")[-1].strip())):
            tarformat.parse_samples(arr, np.array([0]), np.array([len(data)]), lambda i: "t.tar")
        return
    got = tarformat.parse_samples(arr, np.array([0]), np.array([len(data)]), lambda i: "t.tar")
    assert _batched(got, 1) == [expected]


def test_a_range_that_does_not_end_on_a_member_is_a_stale_index():
    data = tarformat.encode_member("k.bin", b"x" * 700) + tarformat.encode_member("k.cls", b"1")
    arr = np.frombuffer(data, np.uint8)
    with pytest.raises(ShardFormatError, match="shard-7.tar: sample range does not end on a member boundary"):
        tarformat.parse_samples(arr, np.array([0]), np.array([len(data) - 512]), lambda i: "shard-7.tar")
    ok = tarformat.parse_samples(arr, np.array([0]), np.array([len(data)]), lambda i: "shard-7.tar")
    assert ok.keys == ["k"] and [ok.exts[e] for e in ok.ext] == ["bin", "cls"] and ok.size.tolist() == [700, 1]


@pytest.mark.parametrize("field, size, trusted", [
    (b"00000001750\0", 0o1750, True), (b"    1750 \0\0\0", 0o1750, True), (b"\0" * 12, 0, True),
    (b"777777777777", 0o777777777777, True), (b"12 34\0\0\0\0\0\0\0", None, False), (b"+12\0" + b"\0" * 8, None, False),
    (b"\x80" + b"\0" * 10 + b"\x05", None, False),
])
def test_octal_size_fields(field, size, trusted):
    value, ok = tarformat._octal_sizes(np.frombuffer(field, np.uint8).reshape(1, 12))
    assert bool(ok[0]) is trusted
    if trusted:
        assert int(value[0]) == size


# ====================================================================== bytes overwritten after ingest

DAMAGE_AT = st.sampled_from([0, 1, 99, 124, 125, 130, 134, 135, 148, 155, 156, 257, 345]) | st.integers(0, 511)
DAMAGE = st.sampled_from(list(b"0157xLgK \0\x80\xff/.\n")) | st.integers(0, 255)


def _damaged_or_inside(parse, check_inside) -> None:
    """``parse()`` on damaged bytes raises a ShardFormatError that names the file and an offset, or gives members
    that lie inside their ranges (``check_inside(result)``); any other exception fails the test."""
    try:
        result = parse()
    except ShardFormatError as err:
        assert str(err).startswith("t.tar") and re.search(r"offset \d+", str(err)), str(err)
    else:
        check_inside(result)


@settings(max_examples=200, deadline=None)
@given(tar_shards(), st.data())
def test_bytes_overwritten_in_a_sample_range_are_a_format_error_or_a_clean_result(data, draw):
    starts, ends = _ranges(data)
    if not len(starts):
        return
    i = draw.draw(st.integers(0, len(starts) - 1))
    s, e = int(starts[i]), int(ends[i])
    damaged = bytearray(data)
    how = draw.draw(st.sampled_from(["random bytes", "header bytes", "header bytes, checksums made right"]))
    if how == "random bytes":
        damaged[s:e] = draw.draw(st.randoms(use_true_random=False)).randbytes(e - s)
    else:
        for _ in range(draw.draw(st.integers(1, 6))):
            damaged[s + 512 * draw.draw(st.integers(0, (e - s) // 512 - 1)) + draw.draw(DAMAGE_AT)] = draw.draw(DAMAGE)
        if how == "header bytes, checksums made right":  # garbage that passes the checksum: every field is read
            for block in range(s, e, 512):
                damaged[block : block + 512] = _with_checksum(damaged[block : block + 512])
    buf = bytes(damaged)

    def inside_range(result):
        _, members = result
        assert all(512 <= off and off + size <= e - s for _, off, size in members)

    def inside_ranges(parsed):
        assert (parsed.data >= starts[parsed.sample] + 512).all()
        assert (parsed.data + parsed.size <= ends[parsed.sample]).all()

    _damaged_or_inside(lambda: tarformat.parse_sample(memoryview(buf)[s:e], "t.tar", s), inside_range)
    _damaged_or_inside(lambda: tarformat.parse_samples(np.frombuffer(buf, np.uint8), starts, ends, lambda i: "t.tar"),
                       inside_ranges)
    _damaged_or_inside(lambda: _ranges(buf), lambda ranges: None)  # ingest refuses it, or indexes it anew


@pytest.mark.parametrize("field, value, message", [
    (slice(124, 136), b"12 34\0\0\0\0\0\0\0", "tar header field size at offset 1024 is not a number"),
    (slice(124, 136), b"\xff" + b"\0" * 10 + b"\x05", "negative size in the tar header at offset 1024"),
    (slice(0, 512), b"\0" * 512, "bad tar header checksum at offset 1024"),  # zeroed, as by a lost write
    (slice(148, 156), b"0000000\0", "bad tar header checksum at offset 1024"),  # only the checksum is wrong
])
def test_a_damaged_header_in_a_sample_range_is_a_format_error_naming_file_and_offset(field, value, message):
    undamaged = b"".join(tarformat.encode_member(name, data) for name, data in [
        ("a.bin", b"1"), ("k.bin", b"\0" * 600), ("k.cls", b"2")])  # zeros: a zeroed header reads as end markers
    header = bytearray(undamaged[1024:1536])
    header[field] = value
    if field != slice(148, 156) and field != slice(0, 512):
        header = _with_checksum(header)  # a field that parses wrong behind a right checksum
    arr = np.frombuffer(undamaged[:1024] + bytes(header) + undamaged[1536:], np.uint8)
    starts, ends = np.array([0, 1024]), np.array([1024, len(arr)])
    expected = re.escape(f"shard-2.tar: {message}")
    with pytest.raises(ShardFormatError, match=expected):
        tarformat.parse_sample(memoryview(arr)[1024:], "shard-2.tar", 1024)
    if field == slice(148, 156):  # the batch path does not sum headers (that would slow every read): fields look right
        parsed = tarformat.parse_samples(arr, starts, ends, lambda i: "shard-2.tar")
        assert _batched(parsed, 2) == _per_range(undamaged, starts, ends)
        return
    with pytest.raises(ShardFormatError, match=expected):
        tarformat.parse_samples(arr, starts, ends, lambda i: "shard-2.tar")
