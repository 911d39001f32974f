"""The classic codecs an archive row can hold beside TNG: lossy AVIF and JPEG XL at a quality target,
and JPEG XL lossless for the exact pixels of a source.

    search(AVIF, src, target_psnr=34.0, bound=None)      # the smallest AVIF file reaching 34 dB, or None
    choose(src, 34.0, [AVIF, JPEG_XL], tng=candidate)     # the smallest file of all that reach it
    exact_pixels(file_bytes) -> array | None; store_lossless(file_bytes, max_pixels) -> Stored

AVIF is libavif through Pillow (speed 6, 4:4:4, as bench/rd.py measures it), JPEG XL is libjxl through
imagecodecs (effort 7). Both code the 8-bit RGB pixels TNG codes (gray as gray); PSNR is measured as
for TNG (`metrics.psnr`, on the decoded 8-bit RGB). Images with alpha are left to TNG, which keeps the
alpha plane without loss; the lossy classic codecs would not.

A search for the smallest file that reaches a target bisects the codec's setting (AVIF quality 0–100;
JPEG XL distance, on a log scale), assuming a better setting never makes a smaller file. It stops as
soon as the codec cannot win: a setting that misses the target and already makes a file at least as
large as the best one found (by any codec) shows that every setting reaching the target is larger.
"""
from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .errors import TNGError
from .images import Colour, SourceImage, _one_line, _pillow_reading, _tile_rawmodes, check_size
from .jpeg_transcode import Stored
from .metrics import psnr


@dataclass
class Candidate:
    """One way to store an image: the codec's name and setting, its file, and what a decoder makes of it."""

    codec: str  # the archive's `codec` value: 'tng', 'avif', 'jxl'
    setting: float  # TNG quality, AVIF quality, JPEG XL distance
    data: bytes
    psnr: float  # of the decoded RGB against the source RGB
    rgb: np.ndarray | None  # (H, W, 3) uint8: what a decoder gives (None: not at hand)
    target_met: bool = True


class LossyCodec:
    """A classic lossy codec searched over its settings: `encode` and `decode` as a row stores them."""

    name = ""
    label = ""
    higher_is_better = True  # whether a larger setting means better quality (and a larger file)

    def encode(self, pixels: np.ndarray, setting: float) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        """(H, W) gray or (H, W, 3) RGB uint8, as encoded."""
        raise NotImplementedError

    def grid(self) -> list[float]:
        """The settings a search may try, from the worst quality to the best."""
        raise NotImplementedError

    def candidate(self, src: SourceImage, setting: float) -> Candidate:
        gray = src.colour == Colour.GRAY
        try:
            data = self.encode(src.rgb[..., 0] if gray else src.rgb, setting)
            out = self.decode(data)
        except TNGError:
            raise
        except Exception as e:  # libavif / libjxl limits (size, memory) and their errors
            raise TNGError(f"{self.label} cannot code this image: {_one_line(e)}") from None
        rgb = np.ascontiguousarray(np.broadcast_to(out[..., None], out.shape + (3,)) if out.ndim == 2 else out[..., :3])
        if rgb.shape != src.rgb.shape:
            raise TNGError(f"{self.label} decoded {rgb.shape[1]}x{rgb.shape[0]} for a {src.width}x{src.height} image")
        return Candidate(self.name, setting, data, psnr(src.rgb, rgb), rgb)


class Avif(LossyCodec):
    name, label = "avif", "AVIF"
    OPTIONS = {"speed": 6, "subsampling": "4:4:4", "max_threads": 2}

    def encode(self, pixels: np.ndarray, setting: float) -> bytes:
        buf = io.BytesIO()
        options = {**self.OPTIONS, "subsampling": "4:0:0"} if pixels.ndim == 2 else self.OPTIONS  # gray: monochrome
        Image.fromarray(pixels).save(buf, "AVIF", quality=int(setting), **options)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with _pillow_reading(), Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("L" if im.mode in ("L", "LA") else "RGB"))

    def grid(self) -> list[float]:
        return list(range(0, 101))


class JpegXl(LossyCodec):
    name, label = "jxl", "JPEG XL"
    higher_is_better = False
    OPTIONS = {"effort": 7, "numthreads": 2}
    MIN_DISTANCE, MAX_DISTANCE = 0.05, 25.0  # libjxl's range: 25 is its lowest rate

    def encode(self, pixels: np.ndarray, setting: float) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.jpegxl_encode(pixels, distance=setting, **self.OPTIONS))

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return imagecodecs.jpegxl_decode(data, numthreads=self.OPTIONS["numthreads"])

    def grid(self) -> list[float]:
        # 100 distances, log-spaced from the largest (worst) to the smallest, rounded to 3 digits
        lo, hi = math.log(self.MIN_DISTANCE), math.log(self.MAX_DISTANCE)
        return [round(math.exp(hi + (lo - hi) * i / 99), 3) for i in range(100)]


AVIF, JPEG_XL = Avif(), JpegXl()
LOSSY = {c.name: c for c in (AVIF, JPEG_XL)}
# `tng compress --codec`, for sources other than JPEG: TNG alone, one classic codec, or per image the smallest
CHOICES = ("tng", *LOSSY, "auto")
DEFAULT_CHOICE = "tng"


def unavailable(name: str) -> str | None:
    """What the classic codec `name` lacks on this installation (None: nothing)."""
    if name == "avif":
        from PIL import features

        return None if features.check("avif") else "Pillow built with AVIF (libavif)"
    import imagecodecs

    return None if imagecodecs.JPEGXL.available else "imagecodecs built with JPEG XL (libjxl)"


def search(codec: LossyCodec, src: SourceImage, target_psnr: float,
           bound: int | None = None) -> tuple[Candidate | None, int | None]:
    """The smallest file of `codec` whose PSNR reaches target_psnr (bisection over its grid of settings),
    and its bytes. Given `bound` (the bytes of the best file found so far), the search stops as soon as
    it shows that every file reaching the target is at least that large: then (None, a lower bound of
    the bytes it needs). (None, None) when no setting reaches the target. TNGError when the codec cannot
    code the image at all."""
    grid = codec.grid()
    lo, hi, best = 0, len(grid), None  # every setting below lo misses the target; grid[hi] reaches it
    while lo < hi:
        mid = (lo + hi) // 2
        c = codec.candidate(src, grid[mid])
        if c.psnr >= target_psnr:
            best, hi = c, mid
        elif bound is not None and len(c.data) >= bound:
            return None, len(c.data)  # every setting that reaches the target makes a file at least this large
        else:
            lo = mid + 1
    if best is None:
        return None, None
    return (None if bound is not None and len(best.data) >= bound else best), len(best.data)


@dataclass
class Choice:
    """The file an archive keeps for one image at a target, and the evidence: what each codec tried needed."""

    winner: Candidate | None  # None when no codec reaches the target
    tried: dict[str, int | None] = field(default_factory=dict)  # codec -> bytes of its smallest file reaching
    # the target, or a lower bound of them where its search stopped once it could not win; None: no
    # setting of it reaches the target
    notes: list[str] = field(default_factory=list)  # codecs that failed on the image, and why


def choose(src: SourceImage, target_psnr: float, codecs: list[LossyCodec], tng: Candidate | None = None) -> Choice:
    """The smallest file reaching target_psnr among `tng` (already coded, by the caller's codec actor) and
    the classic `codecs`, tried in order; each search stops once it cannot win. With alpha, the classic
    codecs are not tried (they would lose the alpha plane): a note says so."""
    choice = Choice(tng if tng is not None and tng.target_met and tng.psnr >= target_psnr else None)
    if tng is not None:
        choice.tried["tng"] = len(tng.data) if choice.winner is not None else None
    if src.alpha is not None:
        if codecs:
            choice.notes.append("alpha: only TNG keeps it without loss, the classic codecs were not tried")
        return choice
    for codec in codecs:
        bound = len(choice.winner.data) if choice.winner is not None else None
        try:
            found, needed = search(codec, src, target_psnr, bound)
        except TNGError as e:
            choice.notes.append(str(e))
            continue
        choice.tried[codec.name] = needed
        if found is not None:
            choice.winner = found
    return choice


# ---------------------------------------------------------------------------------------------- lossless

LOSSLESS = "jxl-lossless"  # the archive's `codec` value for a source's exact pixels as lossless JPEG XL


def exact_pixels(data: bytes, max_pixels: int) -> np.ndarray | None:
    """A source file's pixels exactly as stored: (H, W) or (H, W, C) uint8 or uint16, C = 2 gray+alpha,
    3 RGB, 4 RGBA; palettes expanded to RGB(A). None when they cannot be had exactly (CMYK, floats,
    32-bit integers, ...): such a file is kept as it is. TNGError when it is not an image."""
    with _pillow_reading():
        im = Image.open(io.BytesIO(data))
    with im:
        check_size(im.size, max_pixels)
        if getattr(im, "n_frames", 1) > 1:  # animations, multi-page files: more than one image's pixels
            return None
        rawmodes = _tile_rawmodes(im)
        wide = any(r.split(";")[-1].startswith("16") for r in rawmodes)
        if wide and im.format == "PNG" and im.mode not in ("I;16", "I;16B", "I"):
            import imagecodecs  # Pillow has no 16-bit RGB(A) or gray+alpha: libpng's own samples

            try:
                return imagecodecs.png_decode(data)
            except Exception as e:
                raise TNGError(f"cannot decode image file: {_one_line(e)}") from None
        with _pillow_reading():
            im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N") or (im.mode == "I" and wide):
            values = np.asarray(im)
            return values.astype(np.uint16) if values.min() >= 0 and values.max() < 65536 else None
        if wide:
            return None
        if im.mode in ("P", "PA"):
            target = "RGBA" if im.mode == "PA" or im.has_transparency_data else "RGB"
            return np.asarray(im.convert(target))
        if im.mode == "1":
            return np.asarray(im.convert("L"))
        if im.mode in ("L", "LA", "RGB", "RGBA"):
            return np.asarray(im)
        return None


def pixels_sha256(pixels: np.ndarray) -> str:
    """The hash an archive row records of decoded pixels (TNG and lossy rows hash their image the same way)."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def encode_lossless(pixels: np.ndarray) -> bytes:
    """Lossless JPEG XL (modular) of exact pixels; TNGError unless it decodes to them exactly."""
    import imagecodecs

    try:
        data = bytes(imagecodecs.jpegxl_encode(pixels, lossless=True, effort=7, numthreads=2))
    except Exception as e:
        raise TNGError(f"JPEG XL cannot store these pixels: {_one_line(e)}") from None
    if not np.array_equal(decode_lossless(data), pixels):
        raise TNGError("JPEG XL lossless does not give the pixels back exactly")
    return data


def decode_lossless(data: bytes) -> np.ndarray:
    import imagecodecs

    try:
        return imagecodecs.jpegxl_decode(data, numthreads=2)
    except Exception as e:
        raise TNGError(f"cannot decode the JPEG XL stream: {_one_line(e)}") from None


def store_lossless(data: bytes, max_pixels: int) -> Stored:
    """What `tng compress --lossless` keeps of a file that is not a JPEG: its exact pixels as lossless
    JPEG XL, or the file as it is where that is smaller or its pixels cannot be had exactly (the reason
    in `note`). TNGError when it is not an image, or over the pixel limit."""
    pixels = exact_pixels(data, max_pixels)
    if pixels is None:
        return Stored("source", data, "kept as it is: its pixels have no exact lossless JPEG XL form here")
    try:
        jxl = encode_lossless(pixels)
    except TNGError as e:
        return Stored("source", data, f"kept as it is: {e}")
    if len(jxl) >= len(data):
        return Stored("source", data, f"kept as it is: lossless JPEG XL would not make it smaller ({len(jxl)} bytes)")
    return Stored(LOSSLESS, jxl, None, pixels_sha256(pixels))
