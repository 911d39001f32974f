"""Measuring one image: every codec codes the same pixels, each point is one (codec, setting).

`sweep` gives the points of one image as dicts (JSON-ready); `evaluation.curves` turns the points
of many images into mean curves and BD numbers. How each codec is run is set here
(`baseline_encoders`, the settings tuples); what is measured is in the package docstring.
"""
from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tng.codec.classic import AVIF, JPEG_XL, unavailable
from tng.codec.metrics import ms_ssim, psnr

if TYPE_CHECKING:
    from tng.codec import Codec

TNG_QUALITIES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
PIL_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
# JPEG XL's Butteraugli distance (lower is better); libjxl takes at most 25, its lowest rate.
JXL_DISTANCES = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 25.0)
BASELINES = ("JPEG", "WebP", "AVIF", "JPEG XL")


@dataclass
class Point:
    codec: str
    setting: float  # the codec's quality parameter (JPEG XL: its distance)
    bytes: int
    bpp: float
    psnr: float
    msssim: float
    encode_s: float
    decode_s: float


def baseline_encoders(threads: int = 2, names: tuple[str, ...] = BASELINES) -> dict[str, dict]:
    """Name -> encoder arguments (the setting is added per point): Pillow's save() arguments, or for
    JPEG XL libjxl's through imagecodecs. AVIF only where Pillow has it, JPEG XL where imagecodecs does."""
    encoders = {
        "JPEG": {"format": "JPEG", "subsampling": 2, "optimize": True},
        "WebP": {"format": "WEBP", "method": 4},
    }
    # AVIF and JPEG XL as an archive stores them (`tng compress --codec`): codec/classic.py
    if not unavailable("avif"):
        encoders["AVIF"] = {"format": "AVIF", **AVIF.OPTIONS, "max_threads": threads}
    if not unavailable("jxl"):
        encoders["JPEG XL"] = {"format": "JXL", **JPEG_XL.OPTIONS, "numthreads": threads}
    return {n: a for n, a in encoders.items() if n in names}


def baseline_settings(args: dict, pil_q: Sequence[int] = PIL_QUALITIES) -> tuple:
    """The settings a baseline is swept over: JPEG XL distances, else Pillow qualities."""
    return JXL_DISTANCES if args["format"] == "JXL" else tuple(pil_q)


def measure_baseline(name: str, args: dict, rgb: np.ndarray, setting: float) -> Point:
    """Encode with Pillow (JPEG XL: libjxl) at `setting`, decode the file again, measure the decoded pixels."""
    if args["format"] == "JXL":
        import imagecodecs

        opts = {k: v for k, v in args.items() if k != "format"}
        t = time.perf_counter()
        data = imagecodecs.jpegxl_encode(rgb, distance=setting, **opts)
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        out = imagecodecs.jpegxl_decode(data, numthreads=args.get("numthreads"))
        t_dec = time.perf_counter() - t
        return _point(name, setting, bytes(data), rgb, out, t_enc, t_dec)
    buf = io.BytesIO()
    t = time.perf_counter()
    Image.fromarray(rgb).save(buf, quality=setting, **args)
    t_enc = time.perf_counter() - t
    data = buf.getvalue()
    t = time.perf_counter()
    with Image.open(io.BytesIO(data)) as im:
        out = np.asarray(im.convert("RGB"))
    t_dec = time.perf_counter() - t
    return _point(name, setting, data, rgb, out, t_enc, t_dec)


def measure_tng(codec: Codec, rgb: np.ndarray, quality: float) -> Point:
    """Encode, then decode the stream again: the decoder's pixels are what is measured."""
    t = time.perf_counter()
    enc = codec.encode(rgb, quality=quality)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    dec = codec.decode(enc.data)
    t_dec = time.perf_counter() - t
    return _point("TNG", quality, enc.data, rgb, dec.rgb, t_enc, t_dec)


def _point(name, setting, data: bytes, src: np.ndarray, out: np.ndarray, t_enc: float, t_dec: float) -> Point:
    pixels = src.shape[0] * src.shape[1]
    return Point(name, setting, len(data), len(data) * 8 / pixels, psnr(src, out), ms_ssim(src, out), t_enc, t_dec)


def sweep(codec: Codec | None, rgb: np.ndarray, encoders: dict[str, dict], tng_q: Sequence[float] = TNG_QUALITIES,
          pil_q: Sequence[int] = PIL_QUALITIES) -> list[dict]:
    """Every point of one image: TNG at each quality, each baseline at each of its settings.

    `codec` may be None when `tng_q` is empty (baselines only).
    """
    points = [measure_tng(codec, rgb, q) for q in tng_q]
    for name, args in encoders.items():
        points += [measure_baseline(name, args, rgb, q) for q in baseline_settings(args, pil_q)]
    return [asdict(p) for p in points]
