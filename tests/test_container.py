"""The .tng container refuses every damaged stream with a one-line TNGError, before allocating."""
from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tng.codec import TNGError, container
from tng.codec.container import Header, pack, unpack
from conftest import allocation_peak, bomb_stream

HEADER = Header(model_id=1, weights_digest=b"\x01\x02\x03\x04", width=300, height=200, colour=2,
                flags=0, quality_milli=4250, tile=1024)


def test_pack_unpack_round_trip():
    sections = [b"", b"icc", b"x" * 1000, bytes(range(256))]
    header, got = unpack(pack(HEADER, sections), max_pixels=10**9)
    assert header == HEADER and header.quality == 4.25
    assert [bytes(s) for s in got] == sections


def test_header_is_small():
    # bpp counts the header: it must stay a few dozen bytes.
    assert len(pack(HEADER, [b"", b"", b"", b"abcd"])) < 40


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"GIF89a" + bytes(40), "not a TNG file"),
    (b"\x89TN", "not a TNG file"),
    (container.MAGIC + b"\x07", "unsupported TNG format version 7"),
    (container.MAGIC + b"\x01\x01\x00", "truncated"),
])
def test_bad_starts(data, reason):
    with pytest.raises(TNGError, match=reason):
        unpack(data, max_pixels=10**9)


def test_huge_dimensions_refused_before_allocation():
    data = bomb_stream(1)
    with allocation_peak() as mem, pytest.raises(TNGError, match="60000x60000 = 3600000000 pixels exceeds the pixel limit"):
        unpack(data, max_pixels=250_000_000)
    assert mem["peak"] < 100_000  # bytes: the header was read, nothing of the image's size allocated


def test_lengths_must_add_up():
    data = pack(HEADER, [b"abc", b"", b""])
    with pytest.raises(TNGError, match="truncated"):
        unpack(data[:-5], max_pixels=10**9)
    with pytest.raises(TNGError, match="unexpected bytes"):
        unpack(data + b"\0", max_pixels=10**9)


def test_header_checksum_checked_before_sizes():
    data = bytearray(pack(HEADER, [b"abc"]))
    data[11] ^= 0x40  # inside the width varint
    with pytest.raises(TNGError, match="header checksum"):
        unpack(bytes(data), max_pixels=10**9)


def test_payload_checksum():
    data = bytearray(pack(HEADER, [b"abcdef"]))
    data[-6] ^= 1
    with pytest.raises(TNGError, match="payload checksum"):
        unpack(bytes(data), max_pixels=10**9)


def _repack_header(data: bytes, **changes) -> bytes:
    """Re-serialise a real file with header fields changed (valid checksums, so deeper checks run)."""
    header, sections = unpack(data, max_pixels=10**9)
    fields = {**header.__dict__, **changes}
    return pack(Header(**fields), [bytes(s) for s in sections])


def test_unknown_model_id(codec, small_tng):
    with pytest.raises(TNGError, match="unknown model id 999"):
        codec.decode(_repack_header(small_tng, model_id=999))


def test_wrong_weights_digest(codec, small_tng):
    with pytest.raises(TNGError, match="digest mismatch"):
        codec.decode(_repack_header(small_tng, weights_digest=b"\0\0\0\0"))


@pytest.mark.parametrize("change,reason", [
    ({"width": 300}, "corrupt"),
    ({"height": 2000}, "sections for"),
    ({"colour": 9}, "unknown colour mode"),
    ({"quality_milli": 9000}, "quality"),
    ({"tile": 100}, "tile size"),
])
def test_inconsistent_headers(codec, small_tng, change, reason):
    with pytest.raises(TNGError, match=reason):
        codec.decode(_repack_header(small_tng, **change))


def test_garbage_tile_stream_with_valid_checksums(codec, small_tng):
    header, sections = unpack(small_tng, max_pixels=10**9)
    bad = [bytes(s) for s in sections]
    bad[3] = b"\x08" + bytes(range(7, 15)) + b"\xff\x13"
    with pytest.raises(TNGError, match="corrupt"):
        codec.decode(pack(header, bad))


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.just(0)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_mutated_streams_are_refused(codec, small_tng, mutations):
    data = bytearray(small_tng)
    for kind, pos, val in mutations:
        pos %= len(data) + (kind == "insert")
        if kind == "flip":
            data[pos] ^= val
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = bytes([val])
        elif len(data) > 0:
            del data[pos]
        if not data:
            break
    if bytes(data) == small_tng:
        return
    with pytest.raises(TNGError):
        codec.decode(bytes(data))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=300), keep_magic=st.booleans())
def test_garbage_is_refused(codec, junk, keep_magic):
    data = container.MAGIC + b"\x01" + junk if keep_magic else junk
    with pytest.raises(TNGError):
        codec.decode(data)


def test_crc_is_crc32():
    # The format's checksums are plain CRC-32 (zlib), so other implementations can verify files.
    data = pack(HEADER, [b"payload"])
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(b"payload")
