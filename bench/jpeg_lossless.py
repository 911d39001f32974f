"""Lossless JPEG recompression (JPEG XL) beside TNG on camera-style JPEGs: bytes saved and time.

    .venv/bin/python bench/jpeg_lossless.py FOLDER [--out DIR] [--limit N] [--qualities 75,80,85,90,95]
                                                   [--tng-quality 4] [--threads 2]

Camera-style JPEGs are made from the photos under FOLDER (sorted by path; the training photos, never
a test set): each photo is written by Pillow (libjpeg-turbo, 4:2:0, optimised Huffman tables, as
cameras and phones write them) at the next quality of --qualities in turn. Each JPEG is then

* recompressed with JPEG XL (`codec.jpeg_transcode.recompress`, which also restores it once to
  check that the bytes are identical) and restored again, timed: what `tng compress` does with
  `--jpeg lossless` and `tng decompress` gives back;
* coded with TNG at --tng-quality from its decoded pixels (`--jpeg tng`), timed, with the PSNR
  against those pixels (the JPEG as a viewer shows it).

Savings are 1 − bytes / JPEG bytes, summed over the set; times are ms per megapixel, medians.
Writes OUT/jpeg-lossless.md (also printed) and OUT/jpeg-lossless.json (every file).
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tng.codec import Codec, open_image, psnr  # noqa: E402
from tng.codec.jpeg_transcode import recompress, restore  # noqa: E402
from tng.codec.registry import DEFAULT_MODEL_ID  # noqa: E402
from rd import _cpu_name  # noqa: E402  (bench/rd.py, beside this file)

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def camera_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=2, optimize=True)
    return buf.getvalue()


def measure(jpeg: bytes, codec: Codec, tng_quality: float) -> dict:
    src = open_image(jpeg)
    mp = src.width * src.height / 1e6
    t = time.perf_counter()
    jxl = recompress(jpeg)
    t_jxl = time.perf_counter() - t
    t = time.perf_counter()
    back = restore(jxl)
    t_restore = time.perf_counter() - t
    assert back == jpeg, "recompress checked this already"
    t = time.perf_counter()
    enc = codec.encode(src, quality=tng_quality)
    t_tng = time.perf_counter() - t
    return {"width": src.width, "height": src.height, "jpeg_bytes": len(jpeg), "jxl_bytes": len(jxl),
            "tng_bytes": len(enc.data), "tng_psnr_vs_jpeg": psnr(src.rgb, enc.reconstruction),
            "jxl_ms_per_mp": 1e3 * t_jxl / mp, "restore_ms_per_mp": 1e3 * t_restore / mp,
            "tng_ms_per_mp": 1e3 * t_tng / mp}


def markdown(env: dict, files: list[dict], tng_quality: float) -> str:
    jpeg = sum(f["jpeg_bytes"] for f in files)
    jxl = sum(f["jxl_bytes"] for f in files)
    tng = sum(f["tng_bytes"] for f in files)
    by_q: dict[int, list[dict]] = {}
    for f in files:
        by_q.setdefault(f["jpeg_quality"], []).append(f)
    lines = [
        "# Lossless JPEG recompression (JPEG XL) beside TNG", "",
        f"- date: {env['date']}", f"- machine: {env['machine']}", f"- command: `{env['command']}`",
        f"- files: {len(files)} JPEGs made from `{env['folder']}`, {env['megapixels']:.1f} MP, "
        f"{jpeg / 1e6:.2f} MB", f"- software: {env['software']}", "",
        "| JPEG quality | files | JPEG MB | JPEG XL lossless: saved | ms/MP recompress | ms/MP restore "
        f"| TNG q{tng_quality:g}: saved | PSNR vs JPEG | ms/MP TNG |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q, fs in sorted(by_q.items()) + [("all", files)]:
        jb = sum(f["jpeg_bytes"] for f in fs)
        lines.append(
            f"| {q} | {len(fs)} | {jb / 1e6:.2f} | {100 * (1 - sum(f['jxl_bytes'] for f in fs) / jb):.1f} % "
            f"| {median(f['jxl_ms_per_mp'] for f in fs):.0f} | {median(f['restore_ms_per_mp'] for f in fs):.0f} "
            f"| {100 * (1 - sum(f['tng_bytes'] for f in fs) / jb):.1f} % "
            f"| {np.mean([f['tng_psnr_vs_jpeg'] for f in fs]):.2f} dB | {median(f['tng_ms_per_mp'] for f in fs):.0f} |")
    lines += ["", f"JPEG XL restored every file byte for byte; in all it saved {100 * (1 - jxl / jpeg):.1f} % "
              f"losslessly, TNG at quality {tng_quality:g} {100 * (1 - tng / jpeg):.1f} % as a second lossy "
              "generation (PSNR against the JPEG's own pixels)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="photos to make the JPEGs from (recursively; png/jpg/jpeg/webp)")
    ap.add_argument("--out", type=Path, default=Path("jpeg-lossless-out"))
    ap.add_argument("--limit", type=int, default=40, help="photos used (first by path)")
    ap.add_argument("--qualities", default="75,80,85,90,95", help="JPEG qualities, used in turn")
    ap.add_argument("--tng-quality", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for TNG")
    args = ap.parse_args(argv)
    import imagecodecs
    import torch

    torch.set_num_threads(args.threads)
    qualities = [int(q) for q in args.qualities.split(",")]
    paths = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in SUFFIXES)[: args.limit]
    if not paths:
        sys.exit(f"no images under {args.folder}")
    codec = Codec(model_id=DEFAULT_MODEL_ID, device="cpu", effort=0)
    files = []
    for i, path in enumerate(paths):
        q = qualities[i % len(qualities)]
        jpeg = camera_jpeg(open_image(path).rgb, q)
        files.append({"photo": str(path.relative_to(args.folder)), "jpeg_quality": q, **measure(jpeg, codec, args.tng_quality)})
        f = files[-1]
        print(f"[{i + 1}/{len(paths)}] {f['photo']} q{q}: JPEG {f['jpeg_bytes']:,} B, JPEG XL -{100 * (1 - f['jxl_bytes'] / f['jpeg_bytes']):.1f} %, "
              f"TNG -{100 * (1 - f['tng_bytes'] / f['jpeg_bytes']):.1f} % at {f['tng_psnr_vs_jpeg']:.2f} dB", flush=True)
    env = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "machine": f"{platform.node()}: {_cpu_name()}, torch threads {args.threads}",
           "command": shlex.join([sys.executable, *sys.argv]), "folder": str(args.folder),
           "megapixels": sum(f["width"] * f["height"] for f in files) / 1e6,
           "software": f"imagecodecs {imagecodecs.__version__} ({imagecodecs.jpegxl_version()}), "
                       f"Pillow {Image.__version__}, torch {torch.__version__}, TNG model {DEFAULT_MODEL_ID}"}
    report = markdown(env, files, args.tng_quality)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "jpeg-lossless.md").write_text(report)
    (args.out / "jpeg-lossless.json").write_text(json.dumps({"environment": env, "files": files}, indent=1))
    print(report)


if __name__ == "__main__":
    main()
