"""Codec speed: TNG beside AVIF, JPEG XL, WebP and CompressAI on one 768x512 photo; TNG's peak memory
on a 100 MP image, and what batching equal-size images buys (`Codec.encode_batch`).

    .venv/bin/python bench/codec_speed.py [--models 6,7] [--quality 4] [--threads 2] [--runs 5]
        [--compressai-python /work/sidevenv-compressai/bin/python] [--json speed.json]
        [--big-mp 100] [--batch 16] [--device cpu] [--efforts 0,1] [--analysis-dtype auto] [--whole 8]

Speed table: every codec codes the same photo with the same thread count in a warm process; the
times are medians of --runs runs, after one untimed run.
- TNG, one row per --models id and --efforts level at --quality: encode = `Codec.encode` (analysis,
  entropy coding, the synthesis for the PSNR, the post-filter's fit from effort 1, the container),
  decode = `Codec.decode`.
- AVIF (Pillow/libavif: speed 6, 4:4:4, max_threads), JPEG XL (imagecodecs/libjxl: effort 7,
  numthreads) as bench/rd.py runs them (evaluation.measure.baseline_encoders), and WebP (Pillow, method
  6; Pillow gives libwebp no thread option, so it codes on one). Before timing, each one's quality
  (JPEG XL: distance) is bisected to the bpp closest to the first TNG row's. Encode = pixels to bytes,
  decode = bytes to pixels.
- CompressAI mbt2018-mean (`MeanScaleHyperprior`) at N=128/M=192 and N=192/M=320 (the zoo's
  qualities 1-4 and 5-8), random weights, so its speed only: bench/compressai_speed.py, run with
  --compressai-python in a side venv, because compressai wants numpy<2 and TNG numpy>=2. That venv:

      python3 -m venv /work/sidevenv-compressai
      /work/sidevenv-compressai/bin/pip install torch==2.13.0 'numpy<2' pillow scipy
      /work/sidevenv-compressai/bin/pip install --no-deps compressai==1.2.0

  1.2.0 is the newest compressai that imports without torchvision (1.2.1+ import it in
  compressai.registry), and PyPI's torchvision wheels are built against CUDA torch: beside torch's CPU
  wheel they fail to import. 1.2.0 needs only torch, numpy and scipy; it builds from source (g++).
  Its MeanScaleHyperprior is the same as 1.2.8's.

Whole photos (--whole N): TNG at each --efforts level and AVIF at the setting matched on the crop,
on the first N whole val-photos (1-1.7 MP), MP/s over all of them: whether whole photos code as fast
per pixel as the crop.
Memory: encode and decode of a --big-mp megapixel image each in a fresh subprocess, peak RSS
(ru_maxrss) minus the RSS of the same process after loading the model.
Batching: --batch 256x256 crops of the photo, encoded one by one and as one batch (all in one pass
of the networks), median of --runs each. Memory and batching use the last --models id.
The photo is val-photos/001.png from ../shared (centre crop), else a repo sample tiled up.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, features

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rd import ANALYSIS_DTYPES, _cpu_name, analysis_dtype  # noqa: E402  (bench/rd.py, beside this file)


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


def memory_child(what: str, megapixels: float, threads: int, model_id: int) -> None:
    import torch

    from tng.codec import Codec

    torch.set_num_threads(threads)
    codec = Codec(model_id=model_id, device="cpu", effort=0)
    codec.encode(np.zeros((64, 64, 3), np.uint8))  # model loaded, workspace warmed
    data = None
    if what == "decode":  # the stream of the encode run, when there was one
        cached = Path(tempfile.gettempdir()) / f"tng-bench-{model_id}-{megapixels:g}mp.tng"
        data = cached.read_bytes() if cached.exists() else codec.encode(big_image(megapixels), quality=4).data
    base = rss_mb()
    t = time.perf_counter()
    if what == "encode":
        img = big_image(megapixels)
        base = rss_mb()  # the source image is the caller's; count what encoding adds
        out = codec.encode(img, quality=4)
        size = img.shape
        (Path(tempfile.gettempdir()) / f"tng-bench-{model_id}-{megapixels:g}mp.tng").write_bytes(out.data)
    else:
        out = codec.decode(data)
        size = out.rgb.shape
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"what": what, "size": f"{size[1]}x{size[0]}", "seconds": round(secs, 1),
                      "rss_before_mb": round(base), "peak_rss_mb": round(peak), "added_mb": round(peak - base)}))


# ------------------------------------------------------------------------------------------- speed table

def environment(threads: int, device: str, photo: str) -> dict:
    import torch

    try:
        import imagecodecs
        jxl = f", imagecodecs {imagecodecs.__version__} ({imagecodecs.jpegxl_version()})"
    except ImportError:
        jxl = ""
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_name(), "cpus": os.cpu_count(), "threads": threads, "device": device,
        "torch": torch.__version__, "photo": f"768x512 centre crop of {photo}",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
                    f"Pillow {Image.__version__} (libwebp {features.version('webp')}, libavif {features.version('avif')}){jxl}",
    }


def row(codec: str, settings: str, bpp: float | None, psnr: float | None, te: list[float], td: list[float],
        mp: float) -> dict:
    """One table row; bpp and PSNR are None where they mean nothing (random weights)."""
    enc, dec = statistics.median(te), statistics.median(td)
    return {"codec": codec, "settings": settings, "bpp": bpp, "psnr": psnr, "encode_s": enc, "decode_s": dec,
            "encode_mp_s": mp / enc, "decode_mp_s": mp / dec, "encode_runs": te, "decode_runs": td}


def tng_codec(model_id: int, device: str, effort: int, analysis: str):
    from tng.codec import Codec, load_model

    return Codec(device=device, model=load_model(model_id), effort=effort, analysis_dtype=analysis_dtype(analysis))


def time_tng(model_id: int, img: np.ndarray, quality: float, runs: int, device: str, effort: int = 0,
             analysis: str = "auto") -> dict:
    codec = tng_codec(model_id, device, effort, analysis)
    enc = codec.encode(img, quality=quality)  # warm-up (first use builds the entropy tables)
    codec.decode(enc.data)
    te, td = [], []
    for _ in range(runs):
        t = time.perf_counter()
        enc = codec.encode(img, quality=quality)
        te.append(time.perf_counter() - t)
        t = time.perf_counter()
        codec.decode(enc.data)
        td.append(time.perf_counter() - t)
    mp = img.shape[0] * img.shape[1] / 1e6
    from tng.codec import load_model

    dtype = str(codec.analysis_dtype).removeprefix("torch.")
    return row("TNG", f"model {model_id} ({load_model(model_id).name}), quality {quality:g}, effort {effort}, {dtype} analysis",
               enc.bpp, enc.psnr, te, td, mp)


def val_photos(n: int) -> list[tuple[str, np.ndarray]]:
    """The first n whole val-photos (sorted by name), as RGB."""
    folder = ROOT.parent / "shared/datasets/val-photos/wikipedia-photos"
    out = []
    for path in sorted(folder.glob("*.png"))[:n]:
        with Image.open(path) as im:
            out.append((path.name, np.asarray(im.convert("RGB"))))
    return out


def whole_photos(n: int, model_id: int, quality: float, runs: int, device: str, efforts: list[int], analysis: str,
                 avif: tuple[dict, float] | None) -> list[dict]:
    """TNG (each effort) and AVIF (the crop's matched setting) on the first n whole val-photos: per photo
    the median of `runs` encodes and decodes after a warm-up one; MP/s over all photos together."""
    photos = val_photos(n)
    if not photos:
        print("no val-photos beside this checkout: whole-photo figures skipped")
        return []
    mp = sum(p.shape[0] * p.shape[1] for _, p in photos) / 1e6

    def timed(encode: Callable[[np.ndarray], bytes], decode: Callable[[bytes], object]) -> tuple[float, ...]:
        te = td = bits = first = 0.0
        for _, p in photos:
            t = time.perf_counter()
            data = encode(p)  # the first encode of this photo's tile shapes, as an archive's photos get it
            first += time.perf_counter() - t
            decode(data)
            e, d = [], []
            for _ in range(runs):
                t = time.perf_counter()
                data = encode(p)
                e.append(time.perf_counter() - t)
                t = time.perf_counter()
                decode(data)
                d.append(time.perf_counter() - t)
            te, td, bits = te + statistics.median(e), td + statistics.median(d), bits + 8 * len(data)
        return te, td, bits / (mp * 1e6), first

    out = []
    for effort in efforts:
        codec = tng_codec(model_id, device, effort, analysis)
        te, td, bpp, first = timed(lambda p: codec.encode(p, quality=quality).data, codec.decode)
        out.append({"codec": "TNG", "settings": f"model {model_id}, quality {quality:g}, effort {effort}",
                    "bpp": bpp, "encode_mp_s": mp / te, "decode_mp_s": mp / td, "first_encode_mp_s": mp / first})
    if avif:
        encode, decode = coder(avif[0])
        te, td, bpp, first = timed(lambda p: encode(p, avif[1]), decode)
        out.append({"codec": "AVIF", "settings": f"quality {avif[1]:g}, speed {avif[0].get('speed')}",
                    "bpp": bpp, "encode_mp_s": mp / te, "decode_mp_s": mp / td, "first_encode_mp_s": mp / first})
    print(f"whole val-photos: {len(photos)} photos, {mp:.2f} MP, median of {runs} run(s) per photo "
          f"(first encode: each photo's first, new tile shapes)")
    for r in out:
        print(f"  {r['codec']} {r['settings']}: {r['bpp']:.3f} bpp, encode {r['encode_mp_s']:.2f} MP/s "
              f"(first {r['first_encode_mp_s']:.2f}), decode {r['decode_mp_s']:.2f} MP/s")
    return out


def baseline_encoders(threads: int) -> dict[str, dict]:
    """bench/rd.py's AVIF and JPEG XL settings; WebP at method 6 (its slowest, smallest files) instead of rd.py's 4."""
    from tng.evaluation import measure

    try:  # Pillow's AVIF decoder otherwise takes every core; decode with the encoder's thread count
        from PIL import AvifImagePlugin
        AvifImagePlugin.DEFAULT_MAX_THREADS = threads
    except ImportError:
        pass
    encoders = measure.baseline_encoders(threads, names=("AVIF", "JPEG XL", "WebP"))
    if "WebP" in encoders:
        encoders["WebP"] = {**encoders["WebP"], "method": 6}
    return encoders


def coder(args: dict) -> tuple[Callable[[np.ndarray, float], bytes], Callable[[bytes], np.ndarray]]:
    """encode(rgb, setting) -> bytes and decode(bytes) -> rgb for one baseline, as evaluation.measure runs it
    (without its metrics, which would dominate the bpp bisection)."""
    opts = {k: v for k, v in args.items() if k != "format"}
    if args["format"] == "JXL":
        import imagecodecs

        return (lambda rgb, d: bytes(imagecodecs.jpegxl_encode(rgb, distance=d, **opts)),
                lambda data: imagecodecs.jpegxl_decode(data, numthreads=opts.get("numthreads")))

    def encode(rgb: np.ndarray, q: float) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, quality=int(q), **args)
        return buf.getvalue()

    def decode(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    return encode, decode


def match_bpp(args: dict, img: np.ndarray, target: float) -> float:
    """The setting whose bpp comes closest to `target`: bisection over Pillow's quality 1..100 (bpp rises
    with it), or over JPEG XL's distance 0.1..25 on a log scale (bpp falls as it grows)."""
    encode, _ = coder(args)
    pixels = img.shape[0] * img.shape[1]
    cache: dict[float, float] = {}

    def bpp(s: float) -> float:
        if s not in cache:
            cache[s] = len(encode(img, s)) * 8 / pixels
        return cache[s]

    if args["format"] == "JXL":
        lo, hi = math.log(0.1), math.log(25.0)
        for _ in range(8):  # to within 2 % in distance
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if bpp(math.exp(mid)) > target else (lo, mid)
        candidates = [round(math.exp(lo), 3), round(math.exp(hi), 3)]
    else:
        lo, hi = 1, 100
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if bpp(mid) < target else (lo, mid)
        candidates = [lo, hi]
    return min(candidates, key=lambda s: abs(bpp(s) - target))


def time_baseline(name: str, args: dict, img: np.ndarray, setting: float, runs: int) -> dict:
    from tng.codec import psnr

    encode, decode = coder(args)
    data = encode(img, setting)  # warm-up
    out = decode(data)
    te, td = [], []
    for _ in range(runs):
        t = time.perf_counter()
        data = encode(img, setting)
        te.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = decode(data)
        td.append(time.perf_counter() - t)
    pixels = img.shape[0] * img.shape[1]
    shown = {k: v for k, v in args.items() if k != "format"}
    what = f"distance {setting:g}" if args["format"] == "JXL" else f"quality {setting:g}"
    settings = ", ".join([what, *(f"{k} {v}" for k, v in shown.items())])
    return row(name, settings, len(data) * 8 / pixels, psnr(img, out), te, td, pixels / 1e6)


def compressai_rows(python: str, img: np.ndarray, threads: int, runs: int) -> list[dict]:
    """bench/compressai_speed.py in the side venv on the same photo (passed as a PNG); its JSON lines as rows."""
    with tempfile.TemporaryDirectory() as d:
        png = Path(d) / "photo.png"
        Image.fromarray(img).save(png)
        r = subprocess.run([python, str(ROOT / "bench/compressai_speed.py"), str(png), "--threads", str(threads),
                            "--runs", str(runs)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"bench/compressai_speed.py failed under {python}:\n{r.stderr}")
    rows = []
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            c = json.loads(line)
            settings = f"{c['settings']}; compressai {c['versions']['compressai']}, torch {c['versions']['torch']}"
            rows.append(row(c["codec"], settings, None, None, c["encode_runs"], c["decode_runs"],
                            img.shape[0] * img.shape[1] / 1e6))
    return rows


def markdown(env: dict, rows: list[dict]) -> str:
    def num(v: float | None, spec: str, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:{spec}}{unit}"

    lines = [
        f"- machine: {env['cpu']} ({env['cpus']} CPUs); {env['threads']} thread(s); device {env['device']}",
        f"- torch {env['torch']}; {env['software']}",
        f"- date (UTC): {env['date_utc']}; photo: {env['photo']}; median of {len(rows[0]['encode_runs'])} run(s)",
        "- TNG's encode includes a decode (for the PSNR it reports); CompressAI has random weights (speed only).",
        "",
        "| codec | settings | bpp | PSNR | encode s/image | decode s/image | encode MP/s | decode MP/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['codec']} | {r['settings']} | {num(r['bpp'], '.3f')} | {num(r['psnr'], '.2f', ' dB')} | "
                     f"{r['encode_s']:.3f} | {r['decode_s']:.3f} | {r['encode_mp_s']:.2f} | {r['decode_mp_s']:.2f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ batching and memory (TNG)

def batch_speed(img: np.ndarray, n: int, model_id: int, quality: float, runs: int, device: str) -> dict:
    from tng.codec import Codec

    crops = [np.ascontiguousarray(img[(i // 3 % 2) * 256 : (i // 3 % 2) * 256 + 256, (i % 3) * 256 : (i % 3) * 256 + 256])
             for i in range(n)]
    single = Codec(model_id=model_id, device=device, effort=0)
    batched = Codec(model_id=model_id, device=device, batch_pixels=n * 256 * 256, effort=0)
    single.encode(crops[0], quality=quality)  # warm-up
    batched.encode_batch(crops[:2], quality=quality)
    one, together = [], []
    for _ in range(runs):
        t = time.perf_counter()
        for c in crops:
            single.encode(c, quality=quality)
        one.append(time.perf_counter() - t)
        t = time.perf_counter()
        batched.encode_batch(crops, quality=quality)
        together.append(time.perf_counter() - t)
    mp = n * 256 * 256 / 1e6
    m1, m2 = statistics.median(one), statistics.median(together)
    print(f"TNG model {model_id}, {n} x 256x256 encode: one by one {mp / m1:.2f} MP/s, one batch {mp / m2:.2f} MP/s ({m1 / m2:.2f}x)")
    return {"model_id": model_id, "images": n, "one_by_one_mp_s": mp / m1, "one_batch_mp_s": mp / m2}


def memory(megapixels: float, threads: int, model_id: int) -> list[dict]:
    out = []
    for what in ("encode", "decode"):  # each in a fresh process: ru_maxrss is the whole process's peak
        r = subprocess.run([sys.executable, __file__, "--child", what, str(megapixels), "--threads", str(threads),
                            "--models", str(model_id)], capture_output=True, text=True, check=True)
        print(f"TNG model {model_id}, {megapixels:g} MP {what}: {r.stdout.strip()}")
        out.append(json.loads(r.stdout))
    return out


def main() -> None:
    from tng.codec.registry import DEFAULT_MODEL_ID

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=str(DEFAULT_MODEL_ID), help="TNG model ids, comma-separated: one row each")
    ap.add_argument("--threads", type=int, default=2, help="torch threads and the baselines' encoder/decoder threads")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quality", type=float, default=4, help="TNG quality; the baselines are matched to its bpp")
    ap.add_argument("--compressai-python", help="python of the side venv with compressai (see the docstring)")
    ap.add_argument("--json", type=Path, help="also write everything measured here")
    ap.add_argument("--big-mp", type=float, default=100, help="megapixels for the memory figure (0: skip)")
    ap.add_argument("--batch", type=int, default=16, help="256x256 images for the batching figure (0: skip)")
    ap.add_argument("--device", default="cpu", help="TNG's device (the baselines run on the CPU)")
    ap.add_argument("--efforts", default="0,1", help="TNG effort levels, comma-separated: one row each per model")
    ap.add_argument("--analysis-dtype", choices=ANALYSIS_DTYPES, default="auto",
                    help="TNG's analysis transform (auto: bf16 where the CPU runs it natively)")
    ap.add_argument("--whole", type=int, default=0,
                    help="also time TNG and AVIF on the first N whole val-photos (0: skip)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    models = [int(m) for m in a.models.split(",")]
    if a.child:
        return memory_child(a.child[0], float(a.child[1]), a.threads, models[-1])

    import torch

    torch.set_num_threads(a.threads)
    img, name = photo_768x512()
    efforts = [int(e) for e in a.efforts.split(",")]
    rows = [time_tng(m, img, a.quality, a.runs, a.device, e, a.analysis_dtype) for m in models for e in efforts]
    matched = {}
    for codec_name, args in baseline_encoders(a.threads).items():
        matched[codec_name] = args, match_bpp(args, img, rows[0]["bpp"])
        rows.append(time_baseline(codec_name, args, img, matched[codec_name][1], a.runs))
    if a.compressai_python:
        rows += compressai_rows(a.compressai_python, img, a.threads, a.runs)
    env = environment(a.threads, a.device, name)
    print(markdown(env, rows))
    print()
    results = {"environment": env, "command": [sys.executable, *sys.argv], "rows": rows}
    if a.whole > 0:
        results["whole"] = whole_photos(a.whole, models[-1], a.quality, a.runs, a.device, efforts, a.analysis_dtype,
                                        matched.get("AVIF"))
    if a.batch > 0:
        results["batch"] = batch_speed(img, a.batch, models[-1], a.quality, a.runs, a.device)
    if a.big_mp > 0:
        results["memory"] = memory(a.big_mp, a.threads, models[-1])
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
