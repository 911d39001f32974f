"""Every form in which an archive row holds an image, behind one interface: `FORMATS[row codec]`.

    restored = FORMATS["avif"].restore(data, exif, icc)   # Restored: the file to write and its hash
    FORMATS["jxl-lossless"].lossless                        # True: the source comes back exactly

| codec          | holds                                              | restores                          |
|----------------|----------------------------------------------------|-----------------------------------|
| `tng`          | a .tng file                                        | its pixels, as PNG (lossy)        |
| `avif`, `jxl`  | lossy AVIF / JPEG XL at the row's target (classic.py) | their pixels, as PNG (lossy)   |
| `jxl-lossless` | a source's exact pixels as lossless JPEG XL        | those pixels, as PNG (16-bit kept) |
| `jpeg-jxl`     | a JPEG recompressed by JPEG XL (jpeg_transcode.py) | the JPEG file, byte for byte      |
| `source`       | the file as it was                                 | the file, byte for byte           |

The hash a row records in `decoded_sha256` is `Restored.sha256` of what it restores: of the decoded
pixels for the pixel forms (`classic.pixels_sha256`), of the file for the file forms (then also the
original's `source_sha256`). A form the archive does not know (a newer TNG wrote the row) is a
TNGError naming it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import classic
from .errors import TNGError
from .images import image_bytes
from .jpeg_transcode import CODEC as JPEG_JXL, restore as restore_jpeg


@dataclass
class Restored:
    file: bytes | None  # what `decompress` writes (None when not asked for: audit)
    suffix: str  # "" (the key's own name: the original file) or ".png"
    sha256: str  # of the decoded pixels (pixel forms) or of the restored file (file forms)
    rgb: np.ndarray | None = None  # the 8-bit RGB of lossy forms: their PSNR against the source


class Format:
    name = ""
    label = ""  # for people: reports and summaries
    lossless = False  # restores the source exactly: its file (file forms) or its pixels
    restores_file = False  # restores the original file itself, under the key's own name

    def restore(self, data: bytes, exif: bytes | None = None, icc: bytes | None = None,
                files: bool = True) -> Restored:
        raise NotImplementedError


class _File(Format):
    lossless = restores_file = True

    def restore(self, data: bytes, exif: bytes | None = None, icc: bytes | None = None,
                files: bool = True) -> Restored:
        file = self.original(data)
        return Restored(file if files else None, "", hashlib.sha256(file).hexdigest())

    def original(self, data: bytes) -> bytes:
        return data


class Source(_File):
    name, label = "source", "kept as source"


class JpegJxl(_File):
    name, label = JPEG_JXL, "JPEG recompressed losslessly (JPEG XL)"

    def original(self, data: bytes) -> bytes:
        return restore_jpeg(data)


class Tng(Format):
    """Decoded by one Codec per process, made when first needed (it loads models as streams name them)."""

    name, label = "tng", "TNG"
    _codec = None

    def restore(self, data: bytes, exif: bytes | None = None, icc: bytes | None = None,
                files: bool = True) -> Restored:
        from .coder import Codec

        if Tng._codec is None:
            Tng._codec = Codec(device=None)
        dec = Tng._codec.decode(data)
        image = dec.image
        png = image_bytes(image, "PNG", dec.exif, dec.icc_profile) if files else None
        return Restored(png, ".png", classic.pixels_sha256(np.asarray(image)), dec.rgb)


class _Lossy(Format):
    codec: classic.LossyCodec

    def restore(self, data: bytes, exif: bytes | None = None, icc: bytes | None = None,
                files: bool = True) -> Restored:
        pixels = self.codec.decode(data)
        image = Image.fromarray(pixels)
        png = image_bytes(image, "PNG", exif, icc) if files else None
        rgb = np.broadcast_to(pixels[..., None], pixels.shape + (3,)) if pixels.ndim == 2 else pixels
        return Restored(png, ".png", classic.pixels_sha256(pixels), rgb)


class Avif(_Lossy):
    name, label, codec = "avif", "AVIF", classic.AVIF


class Jxl(_Lossy):
    name, label, codec = "jxl", "JPEG XL", classic.JPEG_XL


class JxlLossless(Format):
    name, label = classic.LOSSLESS, "exact pixels, lossless JPEG XL"
    lossless = True

    def restore(self, data: bytes, exif: bytes | None = None, icc: bytes | None = None,
                files: bool = True) -> Restored:
        pixels = classic.decode_lossless(data)
        return Restored(_png(pixels, exif, icc) if files else None, ".png", classic.pixels_sha256(pixels))


def _png(pixels: np.ndarray, exif: bytes | None, icc: bytes | None) -> bytes:
    """A PNG of exact pixels: Pillow's for what it holds (8-bit, 16-bit gray), with the metadata; libpng's
    (imagecodecs) for 16-bit colour or gray+alpha, which Pillow has no mode for (no metadata then)."""
    if pixels.dtype == np.uint8 or pixels.ndim == 2:
        image = Image.fromarray(pixels)  # uint16 gray: mode I;16
        return image_bytes(image, "PNG", exif, icc)
    import imagecodecs

    return bytes(imagecodecs.png_encode(pixels))


FORMATS: dict[str, Format] = {f.name: f for f in (Tng(), Avif(), Jxl(), JxlLossless(), JpegJxl(), Source())}
LOSSY = tuple(name for name, f in FORMATS.items() if not f.lossless)  # the forms with a PSNR, in this order


def format_of(codec: str) -> Format:
    try:
        return FORMATS[codec]
    except KeyError:
        raise TNGError(f"unknown codec {codec!r} (a newer TNG wrote this row?)") from None
