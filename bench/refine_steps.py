#!/usr/bin/env python3
"""What encoder-side refinement (`--refine STEPS`) gains against what it costs, per number of steps.

    .venv/bin/python bench/refine_steps.py ../shared/datasets/val-photos --steps 10,20,40,150 --crop 384 \
        --out bench/results/refine-steps

Every image (or its centre crop) is encoded plainly and with each number of steps, at each quality;
the table gives, per number of steps, the BD-rate of the refined curve against the plain one (mean
curves over the images, PSNR and MS-SSIM, as `bench/rd.py` computes them), the share of the largest
number of steps' gain that it reaches, and the encode time per megapixel. Refinement is measured as
shipped (codec/refine.py); its decoder is the plain one, so only the encode is timed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tng.codec import Codec  # noqa: E402
from tng.codec.metrics import ms_ssim  # noqa: E402
from tng.codec.registry import DEFAULT_MODEL_ID  # noqa: E402
from tng.evaluation.curves import bd_pair, mean_curves  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from rd import _cpu_name, find_images  # noqa: E402


def centre_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    if not size:
        return rgb
    h, w = rgb.shape[:2]
    ch, cw = min(size, h), min(size, w)
    return np.ascontiguousarray(rgb[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw])


def measure(codec: Codec, rgb: np.ndarray, quality: float) -> dict:
    t = time.perf_counter()
    enc = codec.encode(rgb, quality=quality)
    seconds = time.perf_counter() - t
    # enc.psnr is measured on enc.reconstruction, the pixels the decoder produces (tests/test_codec.py).
    return {"codec": "TNG", "setting": quality, "bytes": len(enc.data), "bpp": enc.bpp, "psnr": enc.psnr,
            "msssim": ms_ssim(rgb, enc.reconstruction), "encode_s": seconds}


def table(curves: dict[int, list[dict]], seconds: dict[int, float]) -> list[dict]:
    """One row per number of steps: BD numbers against steps = 0, share of the largest gain, time."""
    rows = []
    for steps in sorted(curves):
        row = {"steps": steps, "encode_s_per_mp": seconds[steps], "times_plain": seconds[steps] / seconds[0]}
        if steps:
            bd = bd_pair(curves[0], curves[steps])
            row.update(bd_rate=bd["psnr"]["bd_rate"], bd_psnr=bd["psnr"]["bd_quality"],
                       bd_rate_msssim=bd["msssim_db"]["bd_rate"])
        rows.append(row)
    best = max((r for r in rows if r["steps"]), key=lambda r: r["steps"], default=None)
    for r in rows:
        if best and r["steps"] and r.get("bd_rate") is not None and best.get("bd_rate"):
            r["share_of_largest"] = r["bd_rate"] / best["bd_rate"]
    return rows


def markdown(env: dict, rows: list[dict]) -> str:
    def f(v, spec, suffix=""):
        return "—" if v is None else f"{v:{spec}}{suffix}"

    largest = max(r["steps"] for r in rows)
    lines = [f"# Refinement: gain against steps, {env['images']} images ({env['megapixels']:.2f} MP), "
             f"qualities {env['qualities']}", "",
             f"`{env['command']}`  ", f"{env['cpu']}, {env['threads']} threads, model {env['model_id']}, {env['date']}", "",
             f"| steps | BD-rate vs plain | BD-PSNR | BD-rate (MS-SSIM) | share of {largest} steps' gain | encode s/MP | × plain |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['steps']} | {f(r.get('bd_rate'), '+.2f', ' %')} | {f(r.get('bd_psnr'), '+.3f', ' dB')} | "
                     f"{f(r.get('bd_rate_msssim'), '+.2f', ' %')} | {f(r.get('share_of_largest'), '.0%')} | "
                     f"{r['encode_s_per_mp']:.2f} | {r['times_plain']:.1f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="images are read from here, recursively (png/jpg/jpeg/webp)")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/refine-steps", help="where refine.md and refine.json go")
    p.add_argument("--steps", default="10,20,40,150", help="numbers of refinement steps, comma-separated")
    p.add_argument("--qualities", default="1,3,5,7", help="TNG qualities, comma-separated")
    p.add_argument("--crop", type=int, default=0, help="centre crop of this size (0: whole images)")
    p.add_argument("--limit", type=int, help="only the first N images (sorted by path)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-id", type=int, default=DEFAULT_MODEL_ID)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = [0] + sorted({int(s) for s in args.steps.split(",") if int(s) > 0})
    qualities = [float(q) for q in args.qualities.split(",")]
    images = find_images(args.folder, args.limit)
    codecs = {s: Codec(model_id=args.model_id, device="cpu", refine=s) for s in steps}
    results: dict[int, list[dict]] = {s: [] for s in steps}
    times: dict[int, list[float]] = {s: [] for s in steps}
    warm = np.zeros((64, 64, 3), np.uint8)
    for codec in codecs.values():  # model load and first-call setup, outside the timings
        codec.encode(warm, quality=qualities[0])
    pixels = 0
    for i, path in enumerate(images):
        with Image.open(path) as im:
            rgb = centre_crop(np.asarray(im.convert("RGB")), args.crop)
        mp = rgb.shape[0] * rgb.shape[1] / 1e6
        pixels += rgb.shape[0] * rgb.shape[1]
        for s in steps:
            points = [measure(codecs[s], rgb, q) for q in qualities]
            results[s].append({"image": str(path.relative_to(args.folder)), "points": points})
            times[s].append(sum(p["encode_s"] for p in points) / len(points) / mp)
        print(f"[{i + 1}/{len(images)}] {path.name}: " + ", ".join(f"{s} steps {times[s][-1]:.1f} s/MP" for s in steps), flush=True)
    curves = {s: mean_curves(results[s])["TNG"] for s in steps}
    rows = table(curves, {s: median(times[s]) for s in steps})
    env = {"command": shlex.join([Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)]),
           "cpu": _cpu_name(), "machine": platform.machine(), "threads": args.threads, "model_id": args.model_id,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "images": len(images), "megapixels": pixels / 1e6, "qualities": args.qualities, "crop": args.crop}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "refine.json").write_text(json.dumps({"environment": env, "rows": rows, "curves": curves,
                                                      "results": results}, indent=1))
    md = markdown(env, rows)
    (args.out / "refine.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
