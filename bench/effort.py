#!/usr/bin/env python3
"""What each effort level (`tng encode --effort N`) gains and costs: BD-rates and encode time per level.

    .venv/bin/python bench/effort.py ../shared/datasets/val-photos --crop 384 --out bench/results/effort
    .venv/bin/python bench/effort.py ../shared/datasets/val-photos --speed --out bench/results/effort-speed

RD mode: every image's centre crop (or the whole image, --crop 0) is coded by every level at each
quality and by the classic codecs at their settings (evaluation/measure.py, as bench/rd.py runs them);
the table gives per level the BD-rate of its mean curve against level 0 (plain), JPEG, WebP, AVIF and
JPEG XL, and its encode time per megapixel. Long runs (the top levels refine for minutes per image)
save every finished (level, image) to OUT/effort.json and resume from it when started again with the
same arguments. Times in RD mode are taken as the run goes, beside whatever else the machine does.

Speed mode (--speed): each level encodes a 768×512 crop of each of the first --limit images (default
4) once warm, then the median encode and decode time per megapixel; run it on a quiet machine.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tng.codec import Codec, open_image  # noqa: E402
from tng.codec.effort import LEVELS  # noqa: E402
from tng.codec.metrics import ms_ssim, psnr  # noqa: E402
from tng.codec.registry import DEFAULT_MODEL_ID  # noqa: E402
from tng.evaluation import measure  # noqa: E402
from tng.evaluation.curves import bd_pair, mean_curves  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from rd import _cpu_name, find_images  # noqa: E402

ANCHORS = ("JPEG", "WebP", "AVIF", "JPEG XL")


def centre_crop(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    if not height:
        return rgb
    h, w = rgb.shape[:2]
    ch, cw = min(height, h), min(width, w)
    return np.ascontiguousarray(rgb[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw])


def tng_point(codec: Codec, rgb: np.ndarray, quality: float) -> dict:
    t = time.perf_counter()
    enc = codec.encode(rgb, quality=quality)
    seconds = time.perf_counter() - t
    # enc.psnr is that of enc.reconstruction, the decoder's pixels (tests/test_codec.py, test_postfilter.py)
    return {"codec": "TNG", "setting": quality, "bytes": len(enc.data), "bpp": enc.bpp, "psnr": enc.psnr,
            "msssim": ms_ssim(rgb, enc.reconstruction), "encode_s": seconds}


def rd_run(args: argparse.Namespace, images: list[Path], levels: list[int], qualities: list[float]) -> None:
    state_path = args.out / "effort.json"
    settings = {"folder": str(args.folder), "crop": args.crop, "qualities": qualities, "model_id": args.model_id,
                "images": [str(p.relative_to(args.folder)) for p in images]}
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("settings") != settings:
        state = {"settings": settings, "megapixels": {}, "baselines": {}, "levels": {}}
    encoders = measure.baseline_encoders(args.threads)
    crops = {}
    for path in images:
        name = str(path.relative_to(args.folder))
        crops[name] = centre_crop(open_image(path).rgb, args.crop, args.crop)
        state["megapixels"][name] = crops[name].shape[0] * crops[name].shape[1] / 1e6
        if name not in state["baselines"]:
            state["baselines"][name] = measure.sweep(None, crops[name], encoders, ())
            _save(state_path, state)
    for level in levels:
        done = state["levels"].setdefault(str(level), {})
        codec = Codec(model_id=args.model_id, device="cpu", effort=level)
        codec.encode(np.zeros((64, 64, 3), np.uint8), quality=qualities[0])  # model load, outside the times
        for name, rgb in crops.items():
            if name in done:
                continue
            done[name] = [tng_point(codec, rgb, q) for q in qualities]
            _save(state_path, state)
            seconds = sum(p["encode_s"] for p in done[name]) / len(qualities) / state["megapixels"][name]
            print(f"level {level} {name}: {seconds:.1f} s/MP", flush=True)
    rows = rd_table(state, levels)
    env = environment(args, len(images), sum(r.shape[0] * r.shape[1] for r in crops.values()) / 1e6)
    (args.out / "effort-rd.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    md = rd_markdown(env, rows)
    (args.out / "effort-rd.md").write_text(md)
    print(md)


def rd_table(state: dict, levels: list[int]) -> list[dict]:
    """Per level: BD-rate (PSNR) against level 0 and each classic codec, and encode s/MP (median over images)."""
    def results(level: int) -> list[dict]:
        done = state["levels"][str(level)]
        return [{"image": name, "points": done[name] + (state["baselines"][name] if level == 0 else [])}
                for name in done]

    plain = mean_curves(results(0))
    rows = []
    for level in levels:
        res = results(level)
        curve = mean_curves(res)["TNG"]
        seconds = [sum(p["encode_s"] for p in points) / len(points) / state["megapixels"][name]
                   for name, points in state["levels"][str(level)].items()]
        row = {"level": level, "recipe": LEVELS[level].describe(), "encode_s_per_mp": median(seconds)}
        row["vs_plain"] = bd_pair(plain["TNG"], curve)["psnr"]["bd_rate"] if level else 0.0
        for anchor in ANCHORS:
            if anchor in plain:
                row[f"vs_{anchor}"] = bd_pair(plain[anchor], curve)["psnr"]["bd_rate"]
        rows.append(row)
    base = rows[0]["encode_s_per_mp"]
    for r in rows:
        r["times_plain"] = r["encode_s_per_mp"] / base
    return rows


def speed_run(args: argparse.Namespace, images: list[Path], levels: list[int]) -> None:
    crops = [centre_crop(open_image(p).rgb, 512, 768) for p in images[: args.limit or 4]]
    rows = []
    for level in levels:
        codec = Codec(model_id=args.model_id, device="cpu", effort=level)
        codec.encode(crops[0][:64, :64], quality=4)
        enc_t, dec_t = [], []
        for rgb in crops:
            mp = rgb.shape[0] * rgb.shape[1] / 1e6
            codec.encode(rgb, quality=4)  # warm: oneDNN builds its kernels per shape
            t = time.perf_counter()
            enc = codec.encode(rgb, quality=4)
            enc_t.append((time.perf_counter() - t) / mp)
            codec.decode(enc.data)
            t = time.perf_counter()
            dec = codec.decode(enc.data)
            dec_t.append((time.perf_counter() - t) / mp)
            assert psnr(rgb, dec.rgb) == enc.psnr
        rows.append({"level": level, "recipe": LEVELS[level].describe(), "encode_s_per_mp": median(enc_t),
                     "decode_s_per_mp": median(dec_t)})
        print(rows[-1], flush=True)
    for r in rows:
        r["times_plain"] = r["encode_s_per_mp"] / rows[0]["encode_s_per_mp"]
    env = environment(args, len(crops), sum(r.shape[0] * r.shape[1] for r in crops) / 1e6)
    lines = [f"# Effort levels: encode and decode time, {len(crops)} crops of 768×512, quality 4", "",
             f"`{env['command']}`  ", f"{env['cpu']}, {env['threads']} threads, model {env['model_id']}, {env['date']}", "",
             "| level | recipe | encode s/MP | × plain | decode s/MP |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {r['level']} | {r['recipe']} | {r['encode_s_per_mp']:.2f} | {r['times_plain']:.1f} | "
              f"{r['decode_s_per_mp']:.3f} |" for r in rows]
    md = "\n".join(lines) + "\n"
    (args.out / "effort-speed.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    (args.out / "effort-speed.md").write_text(md)
    print(md)


def rd_markdown(env: dict, rows: list[dict]) -> str:
    crop = f"{env['crop']}² centre crops" if env["crop"] else "whole images"
    lines = [f"# Effort levels: BD-rate (PSNR) and encode time, {env['images']} images ({crop}, "
             f"{env['megapixels']:.2f} MP), qualities {env['qualities']}", "",
             f"`{env['command']}`  ", f"{env['cpu']}, {env['threads']} threads, model {env['model_id']}, {env['date']}", "",
             "| level | recipe | vs plain | vs JPEG | vs WebP | vs AVIF | vs JPEG XL | encode s/MP | × plain |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    f = lambda v: "—" if v is None else f"{v:+.1f} %"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['level']} | {r['recipe']} | {f(r['vs_plain'])} | {f(r.get('vs_JPEG'))} | "
                     f"{f(r.get('vs_WebP'))} | {f(r.get('vs_AVIF'))} | {f(r.get('vs_JPEG XL'))} | "
                     f"{r['encode_s_per_mp']:.1f} | {r['times_plain']:.1f} |")
    return "\n".join(lines) + "\n"


def environment(args: argparse.Namespace, images: int, megapixels: float) -> dict:
    return {"command": shlex.join([Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)]),
            "cpu": _cpu_name(), "machine": platform.machine(), "threads": args.threads, "model_id": args.model_id,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "images": images, "megapixels": megapixels, "qualities": args.qualities, "crop": args.crop}


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="images are read from here, recursively (png/jpg/jpeg/webp)")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/effort")
    p.add_argument("--levels", default=",".join(str(e.level) for e in LEVELS), help="effort levels, comma-separated")
    p.add_argument("--qualities", default="1,3,5,7", help="TNG qualities, comma-separated (RD mode)")
    p.add_argument("--crop", type=int, default=384, help="centre crop side (0: whole images; RD mode)")
    p.add_argument("--limit", type=int, help="only the first N images (sorted by path)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-id", type=int, default=DEFAULT_MODEL_ID)
    p.add_argument("--speed", action="store_true", help="time the levels on 768×512 crops instead (quiet machine)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    levels = sorted({int(v) for v in args.levels.split(",")} | ({0} if not args.speed else set()))
    args.out.mkdir(parents=True, exist_ok=True)
    images = find_images(args.folder, None if args.speed else args.limit)
    if args.speed:
        speed_run(args, images, levels)
    else:
        rd_run(args, images, levels, [float(q) for q in args.qualities.split(",")])


if __name__ == "__main__":
    main()
