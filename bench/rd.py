"""Rate–distortion of TNG against JPEG, WebP, AVIF and JPEG XL on a folder of images.

    .venv/bin/python bench/rd.py FOLDER [--out DIR] [--limit N] [--qualities 1,2,...,8]
                                        [--pil-qualities 5,10,...,95] [--threads 2] [--model-id 1]
                                        [--analysis-dtype auto|fp32|bf16] [--baselines-from EARLIER/rd.json]

Images: png/jpg/jpeg/webp found recursively under FOLDER, sorted by path, read as TNG reads them
(`codec.open_image`), 8-bit RGB without alpha or metadata. How each codec is run and measured, the
means over images and the BD-rate window are in `evaluation/` (shared with `tng report --source`).
Encode and decode wall times are recorded per point.

Writes OUT/rd.md (also printed), OUT/rd.json (every point of every image) and OUT/rd.png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from statistics import mean

import numpy as np
from PIL import Image, features

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tng.codec.registry import DEFAULT_MODEL_ID  # noqa: E402
from tng.evaluation import measure  # noqa: E402
from tng.evaluation.curves import BD_WINDOW, bd_results, mean_curves  # noqa: E402
from tng.evaluation.plots import rd_plot  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
ANALYSIS_DTYPES = ("auto", "fp32", "bf16")  # --analysis-dtype here and in bench/codec_speed.py
TNG_QUALITIES = ",".join(f"{q:g}" for q in measure.TNG_QUALITIES)
PIL_QUALITIES = ",".join(str(q) for q in measure.PIL_QUALITIES)
# (test, anchor) pairs reported; pairs with a missing codec are left out.
BD_PAIRS = [("TNG", "JPEG"), ("TNG", "WebP"), ("TNG", "AVIF"), ("TNG", "JPEG XL"), ("WebP", "JPEG"), ("AVIF", "JPEG"),
            ("JPEG XL", "JPEG")]


# ---------------------------------------------------------------------------------------------- running

def find_images(folder: Path, limit: int | None) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return paths[:limit] if limit else paths


def run_image(path: Path, folder: Path, codec, encoders: dict, tng_q: list[float], pil_q: list[int],
              earlier: dict[str, list[dict]] | None = None) -> dict:
    """Every point of one image; the baselines' taken from `earlier` (image -> points) when it has them."""
    from tng.codec import open_image

    rgb = open_image(path).rgb
    name = str(path.relative_to(folder))
    if earlier and name in earlier:
        points = measure.sweep(codec, rgb, {}, tng_q, pil_q) + earlier[name]
    else:
        points = measure.sweep(codec, rgb, encoders, tng_q, pil_q)
    return {"image": name, "width": rgb.shape[1], "height": rgb.shape[0], "points": points}


def earlier_baselines(path: Path, encoders: dict, pil_q: list[int]) -> dict[str, list[dict]]:
    """The baseline points of an earlier rd.json, by image, if it measured them as this run would
    (same encoders and settings); the baselines do not change when only TNG does."""
    old = json.loads(path.read_text())
    want = {(name, float(q)) for name, a in encoders.items() for q in measure.baseline_settings(a, pil_q)}
    found = {im["image"]: [p for p in im["points"] if p["codec"] != "TNG"] for im in old["images"]}
    if old["encoders"] != json.loads(json.dumps(encoders)) or any(
            {(p["codec"], float(p["setting"])) for p in pts} != want for pts in found.values()):
        sys.exit(f"{path} measured the baselines with other settings; run without --baselines-from")
    return found


def progress_line(i: int, n: int, result: dict, seconds: float) -> str:
    tng = [p for p in result["points"] if p["codec"] == "TNG"]
    enc, dec = sum(p["encode_s"] for p in tng), sum(p["decode_s"] for p in tng)
    span = f"{tng[0]['bpp']:.3f}–{tng[-1]['bpp']:.3f} bpp, {tng[0]['psnr']:.2f}–{tng[-1]['psnr']:.2f} dB"
    return (f"[{i}/{n}] {result['image']} {result['width']}x{result['height']}: TNG {span}, "
            f"encode {enc:.2f} s + decode {dec:.2f} s for {len(tng)} qualities; all codecs {seconds:.1f} s")


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

    from tng.codec import load_model

    lm = load_model(args.model_id)
    cpu = _cpu_name()
    libs = {k: features.version(k) for k in ("jpg", "webp", "avif")}
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "command": shlex.join([sys.executable, *sys.argv]),
        "tng_model_path": os.environ.get("TNG_MODEL_PATH"),
        "threads": args.threads, "tng_effort": args.effort, "tng_analysis_dtype": args.analysis_dtype,
        "baselines_from": str(args.baselines_from) if args.baselines_from else None,
        "images": n_images, "megapixels": megapixels, "folder": str(args.folder),
        "tng_model": f"id {lm.model_id} '{lm.name}', weights digest {lm.digest.hex()}",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
                    f"Pillow {Image.__version__} (libjpeg {libs['jpg']}"
                    f"{', turbo ' + features.version('libjpeg_turbo') if features.check_feature('libjpeg_turbo') else ''}, "
                    f"libwebp {libs['webp']}, libavif {libs['avif']}){_jxl_version()}",
    }


def _jxl_version() -> str:
    try:
        import imagecodecs
    except ImportError:
        return ""
    return f", imagecodecs {imagecodecs.__version__} ({imagecodecs.jpegxl_version()})"


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
        "# Rate–distortion: TNG vs " + ", ".join(encoders), "",
        f"- date: {env['date']}",
        f"- machine: {env['machine']}; {env['threads']} thread(s)",
        f"- command: `{env['command']}`" + (f" (TNG_MODEL_PATH={env['tng_model_path']})" if env["tng_model_path"] else ""),
        f"- images: {env['images']} from `{env['folder']}`, {env['megapixels']:.2f} MP in all",
        f"- TNG: model {env['tng_model']}",
        "- baselines: " + "; ".join(f"{n} {_describe(a)}" for n, a in encoders.items())
        + (f" (points measured by an earlier run, {env['baselines_from']})" if env.get("baselines_from") else ""),
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


def analysis_dtype(name: str):
    """Codec's analysis_dtype for an --analysis-dtype choice (auto: None, the codec's own rule)."""
    import torch

    return {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16}[name]


# ---------------------------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="images are read from here, recursively (png/jpg/jpeg/webp)")
    ap.add_argument("--out", type=Path, default=Path("rd-out"), help="where rd.md, rd.json, rd.png go")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by path)")
    ap.add_argument("--qualities", default=TNG_QUALITIES, help="TNG qualities, comma-separated, in [1, 8]")
    ap.add_argument("--pil-qualities", default=PIL_QUALITIES, help="JPEG/WebP/AVIF qualities, comma-separated "
                                                                   "(JPEG XL is swept over evaluation.measure.JXL_DISTANCES)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads and AVIF encoder threads")
    ap.add_argument("--model-id", type=int, default=DEFAULT_MODEL_ID, help="TNG model id")
    ap.add_argument("--effort", type=int, default=0, help="TNG's effort level (tng encode --effort; default 0, the plain encode)")
    ap.add_argument("--analysis-dtype", choices=ANALYSIS_DTYPES, default="auto",
                    help="TNG's analysis transform (Codec's analysis_dtype; auto: bf16 where the CPU runs it natively)")
    ap.add_argument("--baselines-from", type=Path, help="an earlier rd.json: reuse its JPEG/WebP/AVIF/JPEG XL points "
                                                        "of the same images (same settings), measure TNG only")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from tng.codec import Codec

    torch.set_num_threads(args.threads)
    tng_q = [float(q) for q in args.qualities.split(",")]
    pil_q = [int(q) for q in args.pil_qualities.split(",")]
    paths = find_images(args.folder, args.limit)
    if not paths:
        sys.exit(f"no png/jpg/jpeg/webp images under {args.folder}")
    encoders = measure.baseline_encoders(args.threads)
    if "AVIF" not in encoders:
        print("note: Pillow has no AVIF support (features.check('avif') is False); AVIF skipped")
    if "JPEG XL" not in encoders:
        print("note: imagecodecs with libjxl is not installed; JPEG XL skipped")
    codec = Codec(model_id=args.model_id, device="cpu", effort=args.effort,
                  analysis_dtype=analysis_dtype(args.analysis_dtype))
    print(f"{len(paths)} images; TNG qualities {tng_q}; Pillow qualities {pil_q}; {', '.join(encoders)}")

    earlier = earlier_baselines(args.baselines_from, encoders, pil_q) if args.baselines_from else None
    results = []
    for i, path in enumerate(paths, 1):
        t = time.perf_counter()
        results.append(run_image(path, args.folder, codec, encoders, tng_q, pil_q, earlier))
        print(progress_line(i, len(paths), results[-1], time.perf_counter() - t), flush=True)

    curves = mean_curves(results)
    bd = bd_results(curves, BD_PAIRS)
    timing = tng_timing(results)
    env = environment(args, len(results), sum(r["width"] * r["height"] for r in results) / 1e6)
    report = markdown(env, curves, bd, timing, encoders)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rd.md").write_text(report)
    (args.out / "rd.json").write_text(json.dumps(
        {"environment": env, "bd_window_bpp": BD_WINDOW, "bd": bd, "tng_timing": timing,
         "encoders": encoders, "mean": curves, "images": results}, indent=1))
    (args.out / "rd.png").write_bytes(rd_plot(curves, f"{len(results)} images from {args.folder.name}/, mean over images "
                                                      f"(TNG {env['tng_model'].split(',')[0]})"))
    print(report)
    print(f"wrote {args.out / 'rd.md'}, {args.out / 'rd.json'}, {args.out / 'rd.png'}")


if __name__ == "__main__":
    main()
