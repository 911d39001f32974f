"""Image files in and out of the TNG codec.

Contract
--------
``open_image(src, max_pixels)`` reads the first frame of any image file Pillow can identify (a path or
the file's bytes) and returns a :class:`SourceImage`:

* ``rgb``: (H, W, 3) uint8, C-contiguous: the colour the codec codes (gray is replicated to 3 channels);
* ``alpha``: (H, W) uint8 whenever the source has an alpha channel or a transparent colour key, else
  None; the caller codes it losslessly beside ``rgb``;
* ``colour``: the colour type the decoder restores (GRAY, GRAY_ALPHA, RGB, RGBA);
* ``flags``: the lossy conversions made on the way in, so the file header tells the truth;
* ``exif`` / ``icc_profile``: the source's metadata. EXIF orientation is NOT applied: pixels stay as
  stored and the orientation tag travels in the EXIF block. (Pillow's TIFF decoder is the exception:
  it rotates the pixels itself and removes the tag, which is just as consistent.) An ICC profile is
  kept only when it describes the coded pixels (an RGB profile for colour, a GRAY one for gray).

The pixel count is checked against ``max_pixels`` from the header, before any pixel is decoded.
Every problem with the input raises TNGError with a one-line message; no Pillow exception escapes.

``to_pil(rgb, alpha, colour)`` turns decoded planes back into a Pillow image of the source's colour
type; ``save_image`` / ``image_bytes`` encode it with its metadata and refuse a format that would
silently drop the alpha channel. ``save_image`` writes atomically.
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import re
import secrets
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from .errors import TNGError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".pnm"}
DEFAULT_MAX_PIXELS = 250_000_000


class Colour(enum.IntEnum):
    """Colour type of a coded image; stored in the file header as one byte, values frozen forever."""

    GRAY = 0
    GRAY_ALPHA = 1
    RGB = 2
    RGBA = 3

    @property
    def has_alpha(self) -> bool:
        return self in (Colour.GRAY_ALPHA, Colour.RGBA)


class Flag(enum.IntFlag):
    """Conversions made when reading the source; the header's flags byte, values frozen forever."""

    REDUCED_16BIT = 1  # source had 16 (or 32) bits per sample; reduced to 8 bits
    FROM_PALETTE = 2  # source was a palette (P/PA) image, coded as RGB(A)
    FROM_CMYK = 4  # source was CMYK, converted to RGB
    FROM_FLOAT = 8  # source was 32-bit float 'F' mode (clipped 0..255)


@dataclass
class SourceImage:
    """One image as the codec codes it, plus what is needed to write it back faithfully."""

    rgb: np.ndarray  # (H, W, 3) uint8, C-contiguous
    alpha: np.ndarray | None  # (H, W) uint8; None when the source has no alpha
    colour: Colour
    flags: Flag
    source_mode: str  # Pillow mode of the source, e.g. "P", "CMYK", "I;16"
    source_format: str | None  # Pillow format name, e.g. "PNG", "JPEG"
    exif: bytes | None  # EXIF block starting with b"Exif\0\0"; orientation not applied
    icc_profile: bytes | None

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


@dataclass
class ImageInfo:
    """What a file's header says, its pixels not decoded: for files an archive keeps byte for byte."""

    width: int
    height: int
    source_mode: str
    source_format: str | None
    exif: bytes | None
    icc_profile: bytes | None


# ---------------------------------------------------------------------------------------------- reading

# Modes Pillow converts itself: source mode -> mode of the pixels coded.
_CONVERT = {
    "1": "L",
    "L": "L",
    "LA": "LA",
    "La": "LA",  # premultiplied; convert() unpremultiplies
    "RGB": "RGB",
    "RGBX": "RGB",  # X is padding
    "YCbCr": "RGB",
    "HSV": "RGB",
    "LAB": "RGB",
    "RGBA": "RGBA",
    "RGBa": "RGBA",  # premultiplied; convert() unpremultiplies
    "P": "RGB",
    "PA": "RGBA",
}
_WITH_ALPHA = {"L": "LA", "RGB": "RGBA"}  # for a transparent colour key (tRNS, GIF transparency)
_INT_GRAY_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
# Raw layouts with 16 bits per sample that Pillow hands over as 8-bit modes (keeping the high byte).
_RAW_16BIT = re.compile(r"^(L|LA|RGB|RGBA|RGBa|RGBX|CMYK);16[BLN]?$")
_COLOUR_BY_CHANNELS = {1: Colour.GRAY, 2: Colour.GRAY_ALPHA, 3: Colour.RGB, 4: Colour.RGBA}

_EXIF_HEADER = b"Exif\x00\x00"
# TIFF tags that describe a TIFF file's own pixel layout (and its ICC tag, kept separately): they are
# not metadata and would be wrong in the EXIF block of another file.
_TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325, 338,
     339, 347, 34675}
)
# Bytes 16..20 of an ICC profile name the colour space it describes.
_ICC_SPACE = {Colour.GRAY: b"GRAY", Colour.GRAY_ALPHA: b"GRAY", Colour.RGB: b"RGB ", Colour.RGBA: b"RGB "}

# Image.MAX_IMAGE_PIXELS is process-wide: the lock keeps concurrent readers from restoring each other's value.
_PILLOW_LIMIT_LOCK = threading.Lock()


def open_image(src: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
    """Read the first frame of an image file (a path or the file's bytes) into what the codec codes."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _read(io.BytesIO(src), max_pixels)
    try:
        fp = open(src, "rb")
    except OSError as e:
        raise TNGError(f"cannot open {os.fspath(src)}: {e.strerror or e}") from None
    with fp:
        return _read(fp, max_pixels)


def _read(fp: io.BufferedIOBase, max_pixels: int) -> SourceImage:
    if not fp.read(1):
        raise TNGError("empty file")
    fp.seek(0)
    with _pillow_reading():
        im = Image.open(fp)
    with im:
        check_size(im.size, max_pixels)
        rawmodes = _tile_rawmodes(im)  # load() empties im.tile
        with _pillow_reading():
            im.load()
        return _source(im, rawmodes, _read_exif(im), im.info.get("icc_profile"))


def from_pil(im: Image.Image, exif: bytes | None = None, icc_profile: bytes | None = None) -> SourceImage:
    """A Pillow image already in memory (what `Image.save` hands a plugin) as the codec codes it;
    exif and icc_profile default to the image's own."""
    rawmodes = _tile_rawmodes(im)
    with _pillow_reading():
        im.load()
    return _source(im, rawmodes, _with_exif_header(exif) if exif else _read_exif(im),
                   icc_profile if icc_profile is not None else im.info.get("icc_profile"))


def _source(im: Image.Image, rawmodes: set[str], exif: bytes | None, icc: bytes | None) -> SourceImage:
    pixels, flags = _decode_pixels(im, rawmodes)
    colour = _COLOUR_BY_CHANNELS[pixels.shape[2]]
    n_colour = 3 if colour in (Colour.RGB, Colour.RGBA) else 1
    rgb = np.broadcast_to(pixels[..., :n_colour], pixels.shape[:2] + (3,))
    return SourceImage(
        rgb=np.ascontiguousarray(rgb),
        alpha=np.ascontiguousarray(pixels[..., -1]) if colour.has_alpha else None,
        colour=colour,
        flags=flags,
        source_mode=im.mode,
        source_format=im.format,
        exif=exif,
        icc_profile=_matching_icc(icc, colour),
    )


def read_info(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """The header of an image file (size, mode, format, EXIF, ICC) without decoding its pixels; TNGError
    when it is not an image or is over the pixel limit."""
    if not data:
        raise TNGError("empty file")
    with _pillow_reading():
        im = Image.open(io.BytesIO(data))
    with im:
        check_size(im.size, max_pixels)
        return ImageInfo(width=im.width, height=im.height, source_mode=im.mode, source_format=im.format,
                         exif=_read_exif(im), icc_profile=im.info.get("icc_profile") or None)


@contextlib.contextmanager
def _pillow_reading() -> Iterator[None]:
    """Run Pillow's reading code with its own size limit off (ours is checked instead, with a clearer
    message), its warnings silenced, and its errors turned into TNGError."""
    with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd but readable files; real problems raise
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        except Image.UnidentifiedImageError:
            raise TNGError("not an image file (cannot identify format)") from None
        except MemoryError:
            raise TNGError("not enough memory to decode the image") from None
        except Exception as e:  # Pillow's plugins raise OSError, SyntaxError, struct.error, ... on bad data
            raise TNGError(_decode_error(e)) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _decode_error(error: Exception) -> str:
    reason = _one_line(error)
    if isinstance(error, EOFError) or "truncated" in reason.lower():
        return f"truncated image file: {reason}"
    return f"cannot decode image file: {reason}"


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def check_size(size: tuple[int, int], max_pixels: int) -> None:
    """TNGError for an image with no pixels or more than max_pixels, before anything is allocated."""
    width, height = size
    if width <= 0 or height <= 0:
        raise TNGError(f"image of {width}x{height} has no pixels")
    if width * height > max_pixels:
        raise TNGError(
            f"image of {width}x{height} = {width * height} pixels exceeds the pixel limit of {max_pixels} "
            "(--max-pixels)"
        )


def _tile_rawmodes(im: Image.Image) -> set[str]:
    """The raw sample layouts Pillow's decoders will read, e.g. "RGB;16B" for a 16-bit RGB PNG."""
    rawmodes = set()
    for tile in getattr(im, "tile", ()):  # in-memory images have no tiles
        args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
        if args and isinstance(args[0], str):
            rawmodes.add(args[0])
    return rawmodes


def _decode_pixels(im: Image.Image, rawmodes: set[str]) -> tuple[np.ndarray, Flag]:
    """The loaded image as (H, W, C) uint8, C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA, with its flags."""
    flags = Flag.REDUCED_16BIT if any(_RAW_16BIT.match(r) for r in rawmodes) else Flag(0)
    if im.mode in _INT_GRAY_MODES:
        return _gray_from_int(im), flags | Flag.REDUCED_16BIT
    if im.mode == "F":
        return _gray_from_float(im), flags | Flag.FROM_FLOAT
    if im.mode == "CMYK":
        return np.array(_cmyk_to_rgb(im)), flags | Flag.FROM_CMYK
    if im.mode not in _CONVERT:
        raise TNGError(f"unsupported colour mode {im.mode}")
    if im.mode in ("P", "PA"):
        flags |= Flag.FROM_PALETTE
    target = _CONVERT[im.mode]
    if im.has_transparency_data:
        target = _WITH_ALPHA.get(target, target)
    if im.mode == "RGBA" and any(r.startswith("LA;") for r in rawmodes):
        target = "LA"  # Pillow opens 16-bit gray+alpha PNGs as RGBA
    pixels = np.array(im.convert(target))
    return (pixels[..., None] if pixels.ndim == 2 else pixels), flags


def _gray_from_int(im: Image.Image) -> np.ndarray:
    """16-bit (or 32-bit int, clipped to 16-bit) gray to 8 bits: round(x / 257)."""
    values = np.clip(np.asarray(im).astype(np.int32), 0, 65535)
    gray = ((values + 128) // 257).astype(np.uint8)
    key = im.info.get("transparency")
    if isinstance(key, int):  # 16-bit gray PNG with a transparent colour key
        return np.dstack([gray, np.where(values == key, 0, 255).astype(np.uint8)])
    return gray[..., None]


def _gray_from_float(im: Image.Image) -> np.ndarray:
    values = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)[..., None]


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK to sRGB through the embedded ICC profile when it works, else Pillow's naive formula."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, source, _srgb_profile(), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # broken profile, or not a CMYK one: fall back
    return im.convert("RGB")


@cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _read_exif(im: Image.Image) -> bytes | None:
    """The EXIF block as stored (JPEG, PNG, WebP), or built from a TIFF's own metadata tags."""
    raw = im.info.get("exif")
    if raw:
        return _with_exif_header(raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF; we drop it
            exif = im.getexif()
            for tag in _TIFF_LAYOUT_TAGS.intersection(exif):
                del exif[tag]
            return exif.tobytes() if len(exif) else None
    except Exception:  # unreadable metadata must not stop the pixels from being coded
        return None


def _with_exif_header(exif: bytes) -> bytes:
    """WebP stores EXIF without the JPEG-style b"Exif\\0\\0" header; Pillow's writers want it."""
    return exif if exif.startswith(_EXIF_HEADER) else _EXIF_HEADER + exif


def _matching_icc(icc: bytes | None, colour: Colour) -> bytes | None:
    """The source's ICC profile if it describes the coded pixels: a CMYK or Lab profile would mislabel
    the converted RGB, a gray one an RGB image."""
    return icc if icc and icc[16:20] == _ICC_SPACE[colour] else None


# ---------------------------------------------------------------------------------------------- writing

# Formats whose Pillow writer keeps an 8-bit alpha channel that Pillow reads back.
_ALPHA_FORMATS = frozenset({"PNG", "WEBP", "TIFF", "TGA", "SGI", "QOI", "JPEG2000", "AVIF", "TNG"})
_METADATA_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "TIFF", "AVIF", "TNG"})  # writers taking exif= and icc_profile=
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}  # WebP: a decoded image is not re-degraded


def to_pil(rgb: np.ndarray, alpha: np.ndarray | None, colour: Colour) -> Image.Image:
    """Decoded planes to a Pillow image of the source's colour type: L, LA, RGB or RGBA."""
    try:
        colour = Colour(colour)
    except ValueError:
        raise TNGError(f"unknown colour type {colour}") from None
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise TNGError(f"decoded colour must be an (H, W, 3) uint8 array, got {_describe_array(rgb)}")
    if colour.has_alpha:
        if not (isinstance(alpha, np.ndarray) and alpha.dtype == np.uint8 and alpha.shape == rgb.shape[:2]):
            raise TNGError(
                f"{colour.name} needs a uint8 alpha plane of shape {rgb.shape[:2]}, got {_describe_array(alpha)}"
            )
    elif alpha is not None:
        raise TNGError(f"{colour.name} has no alpha channel, but an alpha plane was given")
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if colour in (Colour.GRAY, Colour.GRAY_ALPHA):
        image = image.convert("L")  # ITU-R 601 luma: decoded channels may differ slightly
    if colour.has_alpha:
        image.putalpha(Image.fromarray(np.ascontiguousarray(alpha)))
    return image


def _describe_array(a: object) -> str:
    return f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


def save_image(
    image: Image.Image, path: str | os.PathLike, exif: bytes | None = None, icc_profile: bytes | None = None
) -> None:
    """Write image to path in the format its extension names, with the metadata the format can hold."""
    path = Path(path)
    write_atomically(path, image_bytes(image, _format_for(path), exif, icc_profile))


def image_bytes(
    image: Image.Image, fmt: str = "PNG", exif: bytes | None = None, icc_profile: bytes | None = None
) -> bytes:
    """The file save_image would write, in memory; fmt is a Pillow format name such as "PNG" or "JPEG"."""
    fmt = fmt.upper()
    Image.init()  # registers every plugin, so Image.SAVE is complete
    if fmt not in Image.SAVE:
        raise TNGError(f"cannot write {fmt} images (not a format Pillow can write)")
    if "A" in image.getbands() and fmt not in _ALPHA_FORMATS:
        raise TNGError(f"{fmt} cannot store an alpha channel; write .png, .webp or .tiff")
    options = dict(_SAVE_OPTIONS.get(fmt, {}))
    if fmt in _METADATA_FORMATS:
        if exif:
            options["exif"] = _with_exif_header(exif)
        if icc_profile:
            options["icc_profile"] = icc_profile
    out = io.BytesIO()
    try:
        image.save(out, fmt, **options)
    except Exception as e:  # Pillow's writers raise OSError, ValueError, KeyError, ... for what they cannot store
        raise TNGError(f"cannot write {fmt} image: {_one_line(e)}") from None
    return out.getvalue()


def _format_for(path: Path) -> str:
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        named = f"extension '{ext}'" if ext else "no extension"
        raise TNGError(
            f"cannot write {path.name}: {named} is not a writable image format; use .png, .jpg, .webp or .tiff"
        )
    return fmt


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write through a temporary file beside path, so a failure never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:  # "x": never clobber; permissions follow the umask like any new file
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise TNGError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # still there only if something failed
