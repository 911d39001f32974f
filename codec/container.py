"""The `.tng` container: a small self-describing header, the payload sections, and two checksums.

Layout (integers little-endian; varint = unsigned LEB128, at most 5 bytes):

    magic        4   b"\\x89TNG"
    version      1   1, or 2 when the payload holds an adaptation section (below)
    model id     2   which weights coded it (codec.registry)
    digest       4   first 4 bytes of the sha256 of those weights
    width        varint  >= 1
    height       varint  >= 1
    colour       1   codec.images.Colour
    flags        1   codec.images.Flag
    quality      2   quality × 1000
    tile         2   tile side in pixels (tiles are coded independently, row-major)
    sections     varint count, then varint length of each
    header crc   4   CRC-32 of every byte above
    payload      the sections, concatenated
    payload crc  4   CRC-32 of the payload

Payload sections, in order (codec/coder.py): exif, icc profile, alpha, then in version 2 the
adaptation section (per-tile decoder adaptations the encoder fitted: codec/postfilter.py; it starts
with its own version byte), then one section per tile. A version-1 decoder refuses version-2 files
by their version byte; every version-1 file is also read as it always was. The default effort
(codec/effort.py, level 1) fits a post-filter, so it writes version 2 wherever one pays (almost every
image); effort 0 writes version 1.

`unpack` checks everything it can before the caller allocates anything: magic, version, sizes
against the pixel limit, the header checksum, that the section lengths add up to the bytes present,
and the payload checksum. Every failure is a `TNGError` with a one-line reason.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import TNGError
from .varint import Reader, uvarint

MAGIC = b"\x89TNG"
FORMAT_VERSION = 1  # files without an adaptation section
ADAPTED_VERSION = 2  # files with one
VERSIONS = (FORMAT_VERSION, ADAPTED_VERSION)
MAX_SECTIONS = 1 << 20
_MODEL = struct.Struct("<H4s")  # model id, weights digest
_MIDDLE = struct.Struct("<BBHH")  # colour, flags, quality×1000, tile


@dataclass(frozen=True)
class Header:
    model_id: int
    weights_digest: bytes
    width: int
    height: int
    colour: int
    flags: int
    quality_milli: int
    tile: int
    version: int = FORMAT_VERSION

    @property
    def quality(self) -> float:
        return self.quality_milli / 1000


def pack(header: Header, sections: list[bytes]) -> bytes:
    """Serialise a header and its payload sections into a complete .tng file."""
    if not (1 <= header.width < 2**31 and 1 <= header.height < 2**31):
        raise TNGError(f"image size {header.width}x{header.height} cannot be stored")
    if len(header.weights_digest) != 4:
        raise TNGError("weights digest must be 4 bytes")
    if header.version not in VERSIONS:
        raise TNGError(f"format version {header.version} cannot be written")
    head = bytearray(MAGIC + bytes([header.version]) + _MODEL.pack(header.model_id, header.weights_digest))
    head += uvarint(header.width) + uvarint(header.height)
    head += _MIDDLE.pack(header.colour, header.flags, header.quality_milli, header.tile)
    head += uvarint(len(sections)) + b"".join(uvarint(len(s)) for s in sections)
    head += struct.pack("<I", zlib.crc32(head))
    payload = b"".join(sections)
    return bytes(head) + payload + struct.pack("<I", zlib.crc32(payload))


def unpack(data: bytes | memoryview, max_pixels: int) -> tuple[Header, list[memoryview]]:
    """Parse and verify a .tng file; returns the header and views of its payload sections."""
    data = memoryview(data)
    if len(data) == 0:
        raise TNGError("empty file")
    r = Reader(data)
    if bytes(data[:4]) != MAGIC:
        raise TNGError("not a TNG file (bad magic bytes)")
    r.take(len(MAGIC), "magic")
    version = r.take(1, "format version")[0]
    if version not in VERSIONS:
        raise TNGError(f"unsupported TNG format version {version} (this decoder reads versions "
                       f"{', '.join(map(str, VERSIONS))})")
    model_id, digest = _MODEL.unpack(r.take(_MODEL.size, "header"))
    width, height = r.uvarint("width"), r.uvarint("height")
    colour, flags, quality_milli, tile = _MIDDLE.unpack(r.take(_MIDDLE.size, "header"))
    count = r.uvarint("section count")
    if count > MAX_SECTIONS:
        raise TNGError(f"corrupt file: {count} sections")
    lengths = [r.uvarint("section table") for _ in range(count)]
    crc_pos = r.pos
    (crc,) = struct.unpack("<I", r.take(4, "header checksum"))
    if zlib.crc32(data[:crc_pos]) != crc:
        raise TNGError("corrupt file: header checksum mismatch")
    # Only now, with a header known to be intact, do its numbers mean anything.
    if width < 1 or height < 1:
        raise TNGError(f"corrupt file: image size {width}x{height}")
    if width * height > max_pixels:
        raise TNGError(
            f"image of {width}x{height} = {width * height} pixels exceeds the pixel limit of {max_pixels} (--max-pixels)"
        )
    need = sum(lengths) + 4
    have = len(data) - r.pos
    if have < need:
        raise TNGError(f"truncated file: {have} payload bytes of {need}")
    if have > need:
        raise TNGError(f"corrupt file: {have - need} unexpected bytes after the payload")
    payload = data[r.pos : r.pos + sum(lengths)]
    (pcrc,) = struct.unpack("<I", bytes(data[-4:]))
    if zlib.crc32(payload) != pcrc:
        raise TNGError("corrupt file: payload checksum mismatch")
    header = Header(model_id, digest, width, height, colour, flags, quality_milli, tile, version)
    sections, pos = [], 0
    for n in lengths:
        sections.append(payload[pos : pos + n])
        pos += n
    return header, sections
