"""Rate–distortion measurement: TNG, Pillow's JPEG, WebP and AVIF, and libjxl's JPEG XL on the same pixels.

Used by `bench/rd.py` (the codec benchmark) and `tng report --source` (an archive's RD study), so
both measure the same way:

* Every codec gets the same 8-bit RGB pixels. Rate is bits per pixel of the complete file each
  codec writes (TNG: the whole .tng bitstream, container included).
* TNG is decoded again from its stream (`Codec.decode`); Pillow files are decoded with Pillow,
  JPEG XL files with libjxl.
* JPEG: libjpeg(-turbo), 4:2:0, optimize=True (optimised Huffman tables, lossless and free).
  WebP: method 4. AVIF (where Pillow has it): libavif, speed 6, 4:4:4. JPEG XL (libjxl through
  imagecodecs): effort 7, swept over distances 0.5–25 (25, libjxl's largest, is its lowest rate).
* PSNR on the decoded 8-bit RGB against the source, the three channels' MSE pooled; MS-SSIM as in
  `codec.metrics.ms_ssim`. Across images: mean bpp, mean of per-image dB, mean MS-SSIM per setting.
* BD-rates (`codec.bdrate`: PCHIP, exact integration) between mean curves clipped to 0.1–1.5 bpp.
"""
from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass
from statistics import mean

import numpy as np
from PIL import Image, features

from codec.bdrate import bd_psnr, bd_rate, clean_curve, clip_rate, overlap_psnr, pchip_eval
from codec.metrics import ms_ssim, msssim_db, psnr

TNG_QUALITIES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
PIL_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
# JPEG XL's Butteraugli distance (lower is better); libjxl takes at most 25, its lowest rate.
JXL_DISTANCES = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 25.0)
BD_WINDOW = (0.1, 1.5)  # bpp
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
    if features.check("avif"):
        avif = {"format": "AVIF", "speed": 6, "max_threads": threads, "subsampling": "4:4:4"}
        try:
            Image.new("RGB", (16, 16)).save(io.BytesIO(), quality=50, **avif)
        except (TypeError, ValueError):  # older plugins have no 4:4:4 option
            del avif["subsampling"]
        encoders["AVIF"] = avif
    if _jxl_available():
        encoders["JPEG XL"] = {"format": "JXL", "effort": 7, "numthreads": threads}
    return {n: a for n, a in encoders.items() if n in names}


def _jxl_available() -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEGXL.available)


def baseline_settings(args: dict, pil_q=PIL_QUALITIES) -> tuple:
    """The settings a baseline is swept over: JPEG XL distances, else Pillow qualities."""
    return JXL_DISTANCES if args["format"] == "JXL" else tuple(pil_q)


def measure_baseline(name: str, args: dict, rgb: np.ndarray, setting: float) -> Point:
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


def measure_tng(codec, rgb: np.ndarray, quality: float) -> Point:
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


def sweep(codec, rgb: np.ndarray, encoders: dict[str, dict], tng_q=TNG_QUALITIES, pil_q=PIL_QUALITIES) -> list[dict]:
    """Every point of one image: TNG at each quality, each baseline at each of its settings."""
    points = [measure_tng(codec, rgb, q) for q in tng_q]
    for name, args in encoders.items():
        points += [measure_baseline(name, args, rgb, q) for q in baseline_settings(args, pil_q)]
    return [asdict(p) for p in points]


def mean_curves(results: list[dict]) -> dict[str, list[dict]]:
    """Codec -> one point per setting: mean bpp, PSNR (dB) and MS-SSIM over the images.

    `results` holds one dict per image with a "points" list (as `sweep` returns).
    """
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in results:
        for p in r["points"]:
            groups.setdefault((p["codec"], p["setting"]), []).append(p)
    curves: dict[str, list[dict]] = {}
    for (name, setting), ps in groups.items():
        curves.setdefault(name, []).append({
            "setting": setting, "bpp": mean(p["bpp"] for p in ps), "psnr": mean(p["psnr"] for p in ps),
            "msssim": mean(p["msssim"] for p in ps), "images": len(ps)})
    for c in curves.values():
        c.sort(key=lambda p: p["bpp"])
    return curves


def bd_pair(anchor: list[dict], test: list[dict]) -> dict:
    """BD numbers of `test` vs `anchor`, curves clipped to BD_WINDOW, with PSNR and with MS-SSIM (dB).

    Each entry: bd_rate (%), bd_quality (dB), range (the quality interval averaged over), the spans
    of both clipped curves, and `error` when there is no shared interval.
    """
    out: dict = {}
    for key, metric in (("psnr", lambda p: p["psnr"]), ("msssim_db", lambda p: msssim_db(p["msssim"]))):
        r = {"bd_rate": None, "bd_quality": None, "range": None, "test_span": None, "anchor_span": None}
        try:
            a = clip_rate([(p["bpp"], metric(p)) for p in anchor], *BD_WINDOW)
            t = clip_rate([(p["bpp"], metric(p)) for p in test], *BD_WINDOW)
            r["test_span"], r["anchor_span"] = _span(t), _span(a)
            r["bd_rate"], r["bd_quality"], r["range"] = bd_rate(a, t), bd_psnr(a, t), overlap_psnr(a, t)
        except ValueError as e:
            r["error"] = str(e)
        out[key] = r
    return out


def bd_results(curves: dict[str, list[dict]], pairs: list[tuple[str, str]]) -> list[dict]:
    """bd_pair for each (test, anchor) whose curves are both present."""
    return [{"test": t, "anchor": a, **bd_pair(curves[a], curves[t])} for t, a in pairs if t in curves and a in curves]


def _span(points: list[tuple[float, float]]) -> list[float] | None:
    return [min(q for _, q in points), max(q for _, q in points)] if points else None


def rate_at_psnr(curve: list[dict], target: float) -> float | None:
    """bpp a mean curve needs for `target` dB (PCHIP of log-rate over PSNR); None outside its range."""
    try:
        rates, psnrs = clean_curve([(p["bpp"], p["psnr"]) for p in curve])
    except ValueError:
        return None
    if len(rates) < 2 or not psnrs[0] <= target <= psnrs[-1]:
        return None
    return float(np.exp(pchip_eval(psnrs, np.log(rates), target)))


def setting_at_psnr(curve: list[dict], target: float) -> float | None:
    """The (interpolated) quality setting whose mean PSNR is `target`; None outside the curve."""
    pts = sorted((p["psnr"], p["setting"]) for p in curve)
    ys = [y for y, _ in pts]
    if len(pts) < 2 or not ys[0] <= target <= ys[-1] or any(b <= a for a, b in zip(ys, ys[1:])):
        return None
    return float(np.interp(target, ys, [s for _, s in pts]))
