"""JPEG files recompressed without loss as JPEG XL, and given back byte for byte.

Most photo archives are camera JPEGs. Coding one with TNG is a second lossy generation: the original
file cannot be had back. JPEG XL can instead store the JPEG's own DCT coefficients with what it needs
to rebuild the file exactly (JPEG bitstream reconstruction, ISO/IEC 18181-2); libjxl does both ways
through `imagecodecs`.

    jxl = recompress(jpeg)        # TNGError with the reason when it cannot be done exactly
    assert restore(jxl) == jpeg   # the original file, byte for byte

Exact or not done: `recompress` rebuilds the JPEG from the new file at once and refuses unless the
bytes are identical. libjxl cannot transcode every JPEG (arithmetic coding, 12-bit samples, lossless
JPEG, damaged data); those are refused with the reason, and `store_jpeg` keeps them as they are.

`store_jpeg` is the archive's choice for one JPEG file (`tng compress --jpeg`, JPEG_CHOICES):
'lossless' recompresses when that is exact and smaller, else keeps the file; 'keep' keeps it;
'tng' codes its pixels with TNG, which is the caller's work (it needs the model).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .errors import TNGError
from .images import ImageInfo, _one_line, check_size, read_info

CODEC = "jpeg-jxl"  # the archive's `codec` value for a losslessly recompressed JPEG
JPEG_CHOICES = ("lossless", "tng", "keep")
DEFAULT_JPEG_CHOICE = "lossless"  # an archivist gets the original file back unless they ask otherwise

# Start-of-frame markers and what they say about the coding; 0xC4 (DHT), 0xC8 (JPG), 0xCC (DAC) are not SOFs.
_SOF = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive", 0xC3: "lossless (SOF3)",
        0xC5: "differential sequential", 0xC6: "differential progressive", 0xC7: "differential lossless",
        0xC9: "arithmetic-coded sequential", 0xCA: "arithmetic-coded progressive",
        0xCB: "arithmetic-coded lossless", 0xCD: "arithmetic-coded differential sequential",
        0xCE: "arithmetic-coded differential progressive", 0xCF: "arithmetic-coded differential lossless"}


def is_jpeg(data: bytes) -> bool:
    """True for a JPEG/JFIF/EXIF file by its first bytes (SOI and the next marker), whatever its name."""
    return data[:3] == b"\xff\xd8\xff"


@dataclass(frozen=True)
class Frame:
    """A JPEG's frame header (SOF segment): how it is coded and its size."""

    coding: str  # e.g. 'baseline', 'progressive', 'arithmetic-coded sequential'
    bits: int  # sample precision: 8, or 12 / 16 for JPEGs most tools cannot read
    width: int
    height: int
    components: int

    @property
    def mode(self) -> str:
        """A Pillow-style mode name; ';12' and the like mark precisions Pillow cannot decode."""
        base = {1: "L", 3: "RGB", 4: "CMYK"}.get(self.components, f"{self.components}ch")
        return base if self.bits == 8 else f"{base};{self.bits}"


def frame(jpeg: bytes) -> Frame | str:
    """The frame header of a JPEG, or a short reason why there is none (damaged or truncated file)."""
    i = 2
    while i + 4 <= len(jpeg):
        if jpeg[i] != 0xFF:
            return "damaged: no marker where one is due"
        marker = jpeg[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            return "damaged: no frame header before the image data"
        length = int.from_bytes(jpeg[i + 2:i + 4], "big")
        if marker in _SOF:
            if i + 10 > len(jpeg):
                break
            h, w = int.from_bytes(jpeg[i + 5:i + 7], "big"), int.from_bytes(jpeg[i + 7:i + 9], "big")
            return Frame(_SOF[marker], jpeg[i + 4], w, h, jpeg[i + 9])
        i += 2 + length
    return "damaged: truncated before the frame header"


def describe(jpeg: bytes) -> str:
    """The coding of a JPEG, e.g. 'progressive, 8-bit', or what is wrong with it."""
    f = frame(jpeg)
    return f if isinstance(f, str) else f"{f.coding}, {f.bits}-bit"


def jpeg_info(jpeg: bytes, max_pixels: int) -> ImageInfo:
    """A JPEG's header facts without decoding it: from Pillow, or for JPEGs Pillow cannot read (12-bit,
    say) from the frame header itself, so that such a file can still be kept whole. TNGError when it
    has no frame header or is over the pixel limit."""
    try:
        return read_info(jpeg, max_pixels=max_pixels)
    except TNGError:
        f = frame(jpeg)
        if isinstance(f, str) or not f.width or not f.height:
            raise
        check_size((f.width, f.height), max_pixels)
        return ImageInfo(width=f.width, height=f.height, source_mode=f.mode, source_format="JPEG", exif=None,
                         icc_profile=None)


def recompress(jpeg: bytes) -> bytes:
    """The JPEG XL file that restores exactly `jpeg`; TNGError when libjxl cannot, or not exactly."""
    import imagecodecs

    if not is_jpeg(jpeg):
        raise TNGError("not a JPEG file")
    try:
        jxl = imagecodecs.jpegxl_encode_jpeg(jpeg)
    except Exception as e:  # imagecodecs.JpegxlError; libjxl says only where it failed
        what = describe(jpeg) + ("" if b"\xff\xd9" in jpeg else "; no end-of-image marker: truncated?")
        raise TNGError(f"JPEG XL cannot transcode this JPEG ({what}): {_one_line(e)}") from None
    try:
        back = restore(jxl)
    except TNGError as e:
        raise TNGError(f"JPEG XL transcode does not restore: {e}") from None
    if back != jpeg:
        raise TNGError(f"JPEG XL transcode is not exact ({len(back)} bytes restored of {len(jpeg)}, sha256 "
                       f"{hashlib.sha256(back).hexdigest()[:12]} against {hashlib.sha256(jpeg).hexdigest()[:12]})")
    return jxl


def restore(jxl: bytes) -> bytes:
    """The original JPEG file from a file `recompress` wrote."""
    import imagecodecs

    try:
        return bytes(imagecodecs.jpegxl_decode_jpeg(jxl))
    except Exception as e:
        raise TNGError(f"cannot restore the JPEG from its JPEG XL stream: {_one_line(e)}") from None


@dataclass(frozen=True)
class Stored:
    """What an archive keeps of a file without loss: the codec name, the bytes, and why (when not the choice made)."""

    codec: str  # CODEC, or 'source' (the file as it is), or classic.LOSSLESS (a source's exact pixels)
    data: bytes
    note: str | None = None
    pixels_sha256: str | None = None  # of the exact pixels a pixel form restores (None: a file form)


def store_jpeg(jpeg: bytes, choice: str) -> Stored:
    """The archive's record of a JPEG file under `choice` 'lossless' or 'keep' (see the module docstring).

    Never grows: a recompression that is not smaller keeps the file. Never raises for bad data: the
    reason a file was kept as it is goes into `note`.
    """
    if choice == "keep":
        return Stored("source", jpeg, "kept as it is (--jpeg keep)")
    if choice != "lossless":
        raise ValueError(f"store_jpeg takes 'lossless' or 'keep', not {choice!r}")
    try:
        jxl = recompress(jpeg)
    except TNGError as e:
        return Stored("source", jpeg, f"kept as it is: {e}")
    if len(jxl) >= len(jpeg):
        return Stored("source", jpeg, f"kept as it is: JPEG XL would not make it smaller ({len(jxl)} bytes)")
    return Stored(CODEC, jxl)

