"""Codec speed and memory: encode/decode MP/s on a 768x512 photo, peak memory on a 100 MP image,
and what batching equal-size images buys (`Codec.encode_batch`).

    .venv/bin/python bench/codec_speed.py [--threads 2] [--runs 5] [--big-mp 100] [--batch 16] [--device cuda]

Speed: whole encode (analysis, entropy coding, synthesis for the PSNR, container) and whole decode,
warm process, median of --runs. Memory: encode and decode of a --big-mp megapixel image each in a
fresh subprocess, peak RSS (ru_maxrss) minus the RSS of the same process after loading the model.
The photo is val-photos/001.png from ../shared (centre crop), else a repo sample tiled up.
Batching: --batch 256x256 crops of the photo, encoded one by one and as one batch (all in one pass
of the networks), median of --runs each.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def photo_768x512() -> tuple[np.ndarray, str]:
    val = ROOT.parent / "shared/datasets/val-photos/wikipedia-photos/001.png"
    src = val if val.exists() else ROOT / "samples/coffee.png"
    with Image.open(src) as im:
        a = np.asarray(im.convert("RGB"))
    if a.shape[0] < 512 or a.shape[1] < 768:
        a = np.pad(a, ((0, max(0, 512 - a.shape[0])), (0, max(0, 768 - a.shape[1])), (0, 0)), mode="reflect")
    y, x = (a.shape[0] - 512) // 2, (a.shape[1] - 768) // 2
    return np.ascontiguousarray(a[y : y + 512, x : x + 768]), src.name


def big_image(megapixels: float) -> np.ndarray:
    """A photo-like image of about `megapixels` MP: a real photo tiled with mirroring (4:3)."""
    w = int((megapixels * 1e6 * 4 / 3) ** 0.5) // 64 * 64
    h = int(megapixels * 1e6 / w)
    base, _ = photo_768x512()
    base = np.concatenate([base, base[:, ::-1]], 1)  # mirrored copies: no hard seams
    base = np.concatenate([base, base[::-1]], 0)
    reps = (-(-h // base.shape[0]), -(-w // base.shape[1]), 1)
    return np.ascontiguousarray(np.tile(base, reps)[:h, :w])


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(what: str, megapixels: float, threads: int) -> None:
    import torch

    from tng.codec import Codec

    torch.set_num_threads(threads)
    codec = Codec(device="cpu")
    codec.encode(np.zeros((64, 64, 3), np.uint8))  # model loaded, workspace warmed
    data = None
    if what == "decode":  # the stream of the encode run, when there was one
        cached = Path(tempfile.gettempdir()) / f"tng-bench-{megapixels:g}mp.tng"
        data = cached.read_bytes() if cached.exists() else codec.encode(big_image(megapixels), quality=4).data
    base = rss_mb()
    t = time.perf_counter()
    if what == "encode":
        img = big_image(megapixels)
        base = rss_mb()  # the source image is the caller's; count what encoding adds
        out = codec.encode(img, quality=4)
        size = img.shape
        (Path(tempfile.gettempdir()) / f"tng-bench-{megapixels:g}mp.tng").write_bytes(out.data)
    else:
        out = codec.decode(data)
        size = out.rgb.shape
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"what": what, "size": f"{size[1]}x{size[0]}", "seconds": round(secs, 1),
                      "rss_before_mb": round(base), "peak_rss_mb": round(peak), "added_mb": round(peak - base)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quality", type=float, default=4)
    ap.add_argument("--big-mp", type=float, default=100)
    ap.add_argument("--batch", type=int, default=16, help="256x256 images for the batching figure (0: skip)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=2)
    a = ap.parse_args()
    if a.child:
        return memory_child(a.child[0], float(a.child[1]), a.threads)

    import torch

    from tng.codec import Codec

    torch.set_num_threads(a.threads)
    img, name = photo_768x512()
    codec = Codec(device=a.device)
    enc = codec.encode(img, quality=a.quality)  # warm-up
    codec.decode(enc.data)
    te, td = [], []
    for _ in range(a.runs):
        t = time.perf_counter()
        enc = codec.encode(img, quality=a.quality)
        te.append(time.perf_counter() - t)
        t = time.perf_counter()
        codec.decode(enc.data)
        td.append(time.perf_counter() - t)
    mp = img.shape[0] * img.shape[1] / 1e6
    print(f"machine: {platform.processor() or platform.machine()}, {a.threads} threads, torch {torch.__version__}")
    print(f"768x512 ({name}) quality {a.quality:g}: {enc.bpp:.3f} bpp, {enc.psnr:.2f} dB")
    print(f"encode: median {statistics.median(te):.3f} s = {mp / statistics.median(te):.2f} MP/s (runs: {', '.join(f'{t:.3f}' for t in te)})")
    print(f"decode: median {statistics.median(td):.3f} s = {mp / statistics.median(td):.2f} MP/s (runs: {', '.join(f'{t:.3f}' for t in td)})")
    if a.batch > 0:
        crops = [np.ascontiguousarray(img[(i // 3 % 2) * 256 : (i // 3 % 2) * 256 + 256, (i % 3) * 256 : (i % 3) * 256 + 256])
                 for i in range(a.batch)]
        batched = Codec(device=a.device, batch_pixels=a.batch * 256 * 256)
        batched.encode_batch(crops[:2], quality=a.quality)  # warm-up
        one, together = [], []
        for _ in range(a.runs):
            t = time.perf_counter()
            for c in crops:
                codec.encode(c, quality=a.quality)
            one.append(time.perf_counter() - t)
            t = time.perf_counter()
            batched.encode_batch(crops, quality=a.quality)
            together.append(time.perf_counter() - t)
        mp = a.batch * 256 * 256 / 1e6
        m1, m2 = statistics.median(one), statistics.median(together)
        print(f"{a.batch} x 256x256 encode: one by one {mp / m1:.2f} MP/s, one batch {mp / m2:.2f} MP/s ({m1 / m2:.2f}x)")
    if a.big_mp > 0:
        for what in ("encode", "decode"):
            r = subprocess.run([sys.executable, __file__, "--child", what, str(a.big_mp), "--threads", str(a.threads)],
                               capture_output=True, text=True, check=True)
            print(f"{a.big_mp:g} MP {what}: {r.stdout.strip()}")


if __name__ == "__main__":
    main()
