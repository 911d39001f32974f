"""Rate–distortion of TNG against JPEG, WebP and AVIF on a folder of images.

    .venv/bin/python bench/rd.py FOLDER [--out DIR] [--limit N] [--qualities 1,2,...,8]
                                        [--pil-qualities 5,10,...,95] [--threads 2] [--model-id 1]

What is measured, per image (png/jpg/jpeg/webp found recursively under FOLDER, sorted by path):

* Every codec gets the same pixels: the image as TNG reads it (`codec.open_image`), 8-bit RGB,
  without alpha or metadata. Rate is bits per pixel of the complete file each codec writes
  (TNG: the whole .tng bitstream, container included).
* TNG at each --qualities setting; the stream is decoded again with `Codec.decode` and checked to
  be identical to the encoder's reconstruction. Encode and decode wall times are recorded.
* Pillow, at each --pil-qualities setting: JPEG (libjpeg-turbo, 4:2:0 i.e. subsampling=2,
  optimize=True: Huffman tables optimised, lossless and free), WebP (method 4) and, if Pillow has
  AVIF support, AVIF (libavif, speed 6, 4:4:4). Each file is decoded with Pillow.
* PSNR: on the 8-bit RGB decode vs the source, all three channels' MSE pooled, per image.
* MS-SSIM (`ms_ssim` below): Wang et al. 2003, 5 scales, Gaussian 11x11 σ=1.5 window ('valid'
  filtering, no padding), K1=0.01, K2=0.03, 2x2 average-pool downsampling, the standard weights.
  Computed per RGB channel and averaged over the channels (as pytorch_msssim/CompressAI report it).
  Scales where the image is smaller than the window are skipped and the remaining weights
  renormalised, so small images still get a value (then not strictly comparable to 5-scale ones).

Across images, at each setting (codec, quality): mean bpp, mean PSNR (mean of per-image dB) and mean
MS-SSIM. BD-rates (bench/bdrate.py: PCHIP, exact integration) compare these mean curves within
0.1–1.5 bpp: each curve is first clipped to that window (points outside dropped; where a curve
crosses a window edge a point is interpolated at the edge, see `bdrate.clip_rate`), then BD-rate
averages over the PSNR interval both clipped curves cover. Also given: BD-PSNR, and a BD-rate with
MS-SSIM in dB (−10·log10(1−MS-SSIM)) as the quality axis.

Writes OUT/rd.md (also printed), OUT/rd.json (every point of every image) and OUT/rd.png.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean

import numpy as np
from PIL import Image, features

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bdrate import bd_psnr, bd_rate, clip_rate, overlap_psnr  # noqa: E402
from codec.metrics import ms_ssim, msssim_db, psnr  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
TNG_QUALITIES = "1,2,3,4,5,6,7,8"
PIL_QUALITIES = "5,10,15,20,30,40,50,60,70,80,90,95"
BD_WINDOW = (0.1, 1.5)  # bpp
# (test, anchor) pairs reported; pairs with a missing codec are left out.
BD_PAIRS = [("TNG", "JPEG"), ("TNG", "WebP"), ("TNG", "AVIF"), ("WebP", "JPEG"), ("AVIF", "JPEG")]
PLOT_MAX_BPP = 2.0


@dataclass
class Point:
    codec: str
    setting: float  # the codec's quality parameter
    bytes: int
    bpp: float
    psnr: float
    msssim: float
    encode_s: float
    decode_s: float


# ---------------------------------------------------------------------------------------------- codecs

def pillow_encoders(threads: int) -> dict[str, dict]:
    """Name -> Pillow save() arguments (quality is added per point). AVIF only where Pillow has it."""
    encoders = {
        "JPEG": {"format": "JPEG", "subsampling": 2, "optimize": True},
        "WebP": {"format": "WEBP", "method": 4},
    }
    if features.check("avif"):
        avif = {"format": "AVIF", "speed": 6, "max_threads": threads, "subsampling": "4:4:4"}
        try:
            Image.new("RGB", (16, 16)).save(io.BytesIO(), quality=50, **avif)
        except (TypeError, ValueError):
            print("note: this Pillow's AVIF plugin does not take subsampling='4:4:4'; using its default")
            del avif["subsampling"]
        encoders["AVIF"] = avif
    else:
        print("note: Pillow has no AVIF support (features.check('avif') is False); AVIF skipped")
    return encoders


def measure_pillow(name: str, args: dict, rgb: np.ndarray, quality: int) -> Point:
    buf = io.BytesIO()
    t = time.perf_counter()
    Image.fromarray(rgb).save(buf, quality=quality, **args)
    t_enc = time.perf_counter() - t
    data = buf.getvalue()
    t = time.perf_counter()
    with Image.open(io.BytesIO(data)) as im:
        out = np.asarray(im.convert("RGB"))
    t_dec = time.perf_counter() - t
    return _point(name, quality, data, rgb, out, t_enc, t_dec)


def measure_tng(codec, rgb: np.ndarray, quality: float) -> Point:
    t = time.perf_counter()
    enc = codec.encode(rgb, quality=quality)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    dec = codec.decode(enc.data)
    t_dec = time.perf_counter() - t
    if not np.array_equal(dec.rgb, enc.reconstruction):
        print(f"  WARNING: TNG q{quality:g}: decoder output differs from the encoder's reconstruction; "
              "measuring the decoder's")
    return _point("TNG", quality, enc.data, rgb, dec.rgb, t_enc, t_dec)


def _point(name, setting, data: bytes, src: np.ndarray, out: np.ndarray, t_enc: float, t_dec: float) -> Point:
    pixels = src.shape[0] * src.shape[1]
    return Point(name, setting, len(data), len(data) * 8 / pixels, psnr(src, out), ms_ssim(src, out), t_enc, t_dec)


# ---------------------------------------------------------------------------------------------- running

def find_images(folder: Path, limit: int | None) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return paths[:limit] if limit else paths


def run_image(path: Path, folder: Path, codec, encoders: dict, tng_q: list[float], pil_q: list[int]) -> dict:
    from codec import open_image

    rgb = open_image(path).rgb
    points = [measure_tng(codec, rgb, q) for q in tng_q]
    for name, args in encoders.items():
        points += [measure_pillow(name, args, rgb, q) for q in pil_q]
    return {"image": str(path.relative_to(folder)), "width": rgb.shape[1], "height": rgb.shape[0],
            "points": [asdict(p) for p in points]}


def progress_line(i: int, n: int, result: dict, seconds: float) -> str:
    tng = [p for p in result["points"] if p["codec"] == "TNG"]
    enc, dec = sum(p["encode_s"] for p in tng), sum(p["decode_s"] for p in tng)
    span = f"{tng[0]['bpp']:.3f}–{tng[-1]['bpp']:.3f} bpp, {tng[0]['psnr']:.2f}–{tng[-1]['psnr']:.2f} dB"
    return (f"[{i}/{n}] {result['image']} {result['width']}x{result['height']}: TNG {span}, "
            f"encode {enc:.2f} s + decode {dec:.2f} s for {len(tng)} qualities; all codecs {seconds:.1f} s")


def mean_curves(results: list[dict]) -> dict[str, list[dict]]:
    """Codec -> one point per setting: mean bpp, PSNR (dB) and MS-SSIM over the images."""
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


def bd_results(curves: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for test, anchor in BD_PAIRS:
        if test in curves and anchor in curves:
            rows.append({"test": test, "anchor": anchor, **bd_pair(curves[anchor], curves[test])})
    return rows


def bd_pair(anchor: list[dict], test: list[dict]) -> dict:
    """BD numbers of `test` vs `anchor`, curves clipped to BD_WINDOW, with PSNR and with MS-SSIM (dB)."""
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


def _span(points: list[tuple[float, float]]) -> list[float] | None:
    return [min(q for _, q in points), max(q for _, q in points)] if points else None


def tng_timing(results: list[dict]) -> dict:
    pts = [(r, p) for r in results for p in r["points"] if p["codec"] == "TNG"]
    mp = sum(r["width"] * r["height"] for r, _ in pts) / 1e6
    enc, dec = sum(p["encode_s"] for _, p in pts), sum(p["decode_s"] for _, p in pts)
    per_image = {r["image"]: sum(p["encode_s"] for p in r["points"] if p["codec"] == "TNG") for r in results}
    return {"encodes": len(pts), "encode_s_mean": enc / len(pts), "decode_s_mean": dec / len(pts),
            "encode_mp_per_s": mp / enc, "decode_mp_per_s": mp / dec, "encode_s_per_image_all_qualities": per_image}


# ---------------------------------------------------------------------------------------------- reporting

def environment(args, n_images: int, megapixels: float) -> dict:
    import torch

    from codec import load_model

    lm = load_model(args.model_id)
    cpu = _cpu_name()
    libs = {k: features.version(k) for k in ("jpg", "webp", "avif")}
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "command": shlex.join([sys.executable, *sys.argv]),
        "tng_model_path": os.environ.get("TNG_MODEL_PATH"),
        "threads": args.threads,
        "images": n_images, "megapixels": megapixels, "folder": str(args.folder),
        "tng_model": f"id {lm.model_id} '{lm.name}', weights digest {lm.digest.hex()}",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
                    f"Pillow {Image.__version__} (libjpeg {libs['jpg']}"
                    f"{', turbo ' + features.version('libjpeg_turbo') if features.check_feature('libjpeg_turbo') else ''}, "
                    f"libwebp {libs['webp']}, libavif {libs['avif']})",
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt(v, spec: str, suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{suffix}"


def markdown(env: dict, curves: dict, bd: list[dict], timing: dict, encoders: dict) -> str:
    lo, hi = BD_WINDOW
    lines = [
        "# Rate–distortion: TNG vs JPEG, WebP, AVIF", "",
        f"- date: {env['date']}",
        f"- machine: {env['machine']}; {env['threads']} thread(s)",
        f"- command: `{env['command']}`" + (f" (TNG_MODEL_PATH={env['tng_model_path']})" if env["tng_model_path"] else ""),
        f"- images: {env['images']} from `{env['folder']}`, {env['megapixels']:.2f} MP in all",
        f"- TNG: model {env['tng_model']}",
        f"- baselines: " + "; ".join(f"{n} {_describe(a)}" for n, a in encoders.items()),
        f"- software: {env['software']}",
        "- PSNR: RGB, per image, then the mean of the dB values; MS-SSIM: 5-scale, per RGB channel, averaged; "
        "bpp from the whole file. See the docstring of bench/rd.py.", "",
        f"## BD-rate over {lo:g}–{hi:g} bpp (mean curves; negative = test needs fewer bits)", "",
        "| test | anchor | BD-rate (PSNR) | BD-PSNR | PSNR range used (dB) | BD-rate (MS-SSIM) "
        "| MS-SSIM range used (dB) |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for r in bd:
        p, m = r["psnr"], r["msssim_db"]
        lines.append(f"| {r['test']} | {r['anchor']} | {_fmt(p['bd_rate'], '+.1f', ' %')} | "
                     f"{_fmt(p['bd_quality'], '+.2f', ' dB')} | {_range(p)} | "
                     f"{_fmt(m['bd_rate'], '+.1f', ' %')} | {_range(m)} |")
    lines += ["", "## TNG speed", "",
              f"{timing['encodes']} encodes: mean {timing['encode_s_mean']:.3f} s each "
              f"({timing['encode_mp_per_s']:.2f} MP/s), decode {timing['decode_s_mean']:.3f} s each "
              f"({timing['decode_mp_per_s']:.2f} MP/s). " + _per_image_time(timing),
              "", "## Mean RD points", "",
              "| codec | quality | bpp | PSNR (dB) | MS-SSIM |", "|---|---:|---:|---:|---:|"]
    for name, pts in curves.items():
        for p in pts:
            lines.append(f"| {name} | {p['setting']:g} | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['msssim']:.4f} |")
    return "\n".join(lines) + "\n"


def _per_image_time(timing: dict) -> str:
    per_image = timing["encode_s_per_image_all_qualities"]
    slowest = max(per_image, key=per_image.get)
    return (f"Encoding one image at all qualities: mean {mean(per_image.values()):.2f} s, "
            f"slowest {per_image[slowest]:.2f} s ({slowest}); per image in rd.json.")


def _range(r: dict) -> str:
    """The quality interval BD-rate averaged over, or why there is none."""
    if r["range"]:
        return f"{r['range'][0]:.2f}–{r['range'][1]:.2f}"
    if not r["test_span"] or not r["anchor_span"]:
        return "none: " + r.get("error", "a curve has no points in the window")
    (t0, t1), (a0, a1) = r["test_span"], r["anchor_span"]
    return f"none: test {t0:.2f}–{t1:.2f}, anchor {a0:.2f}–{a1:.2f}"


def _describe(args: dict) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in args.items() if k != "format") + ")"


def plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    metrics = [("psnr", "PSNR, RGB (dB)", lambda p: p["psnr"]),
               ("msssim", "MS-SSIM (dB) = −10·log10(1 − MS-SSIM)", lambda p: msssim_db(p["msssim"]))]
    for ax, (_, label, value) in zip(axes, metrics):
        visible = []
        for name, pts in curves.items():
            xs, ys = [p["bpp"] for p in pts], [value(p) for p in pts]
            ax.plot(xs, ys, marker="o", ms=4, lw=2 if name == "TNG" else 1.4, label=name, zorder=3 if name == "TNG" else 2)
            visible += [y for x, y in zip(xs, ys) if x <= PLOT_MAX_BPP and math.isfinite(y)]
        ax.axvspan(*BD_WINDOW, color="0.93", zorder=0, label=f"BD-rate window {BD_WINDOW[0]:g}–{BD_WINDOW[1]:g} bpp")
        ax.set_xlim(0, PLOT_MAX_BPP)
        if visible:
            pad = 0.04 * (max(visible) - min(visible) or 1)
            ax.set_ylim(min(visible) - pad, max(visible) + pad)
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.35)
        ax.legend(loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="images are read from here, recursively (png/jpg/jpeg/webp)")
    ap.add_argument("--out", type=Path, default=Path("rd-out"), help="where rd.md, rd.json, rd.png go")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by path)")
    ap.add_argument("--qualities", default=TNG_QUALITIES, help="TNG qualities, comma-separated, in [1, 8]")
    ap.add_argument("--pil-qualities", default=PIL_QUALITIES, help="JPEG/WebP/AVIF qualities, comma-separated")
    ap.add_argument("--threads", type=int, default=2, help="torch threads and AVIF encoder threads")
    ap.add_argument("--model-id", type=int, default=1, help="TNG model id")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from codec import Codec

    torch.set_num_threads(args.threads)
    tng_q = [float(q) for q in args.qualities.split(",")]
    pil_q = [int(q) for q in args.pil_qualities.split(",")]
    paths = find_images(args.folder, args.limit)
    if not paths:
        sys.exit(f"no png/jpg/jpeg/webp images under {args.folder}")
    encoders = pillow_encoders(args.threads)
    codec = Codec(model_id=args.model_id, device="cpu")
    print(f"{len(paths)} images; TNG qualities {tng_q}; {', '.join(encoders)} qualities {pil_q}")

    results = []
    for i, path in enumerate(paths, 1):
        t = time.perf_counter()
        results.append(run_image(path, args.folder, codec, encoders, tng_q, pil_q))
        print(progress_line(i, len(paths), results[-1], time.perf_counter() - t), flush=True)

    curves = mean_curves(results)
    bd = bd_results(curves)
    timing = tng_timing(results)
    env = environment(args, len(results), sum(r["width"] * r["height"] for r in results) / 1e6)
    report = markdown(env, curves, bd, timing, encoders)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rd.md").write_text(report)
    (args.out / "rd.json").write_text(json.dumps(
        {"environment": env, "bd_window_bpp": BD_WINDOW, "bd": bd, "tng_timing": timing,
         "encoders": encoders, "mean": curves, "images": results}, indent=1))
    plot(curves, args.out / "rd.png", f"{len(results)} images from {args.folder.name}/, mean over images "
                                      f"(TNG {env['tng_model'].split(',')[0]})")
    print(report)
    print(f"wrote {args.out / 'rd.md'}, {args.out / 'rd.json'}, {args.out / 'rd.png'}")


if __name__ == "__main__":
    main()
