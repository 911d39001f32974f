"""Archive pipeline speed and memory: `tng compress` with 1 and 2 CPU workers against a plain loop
(every row at effort 0, the plain encode, so that the pipeline's own costs are what differs).

    .venv/bin/python bench/pipeline_speed.py [SRC] [--limit 12] [--max-side 768] [--workers 1 2]

The first --limit photos of SRC (default: val-photos from ../shared), downscaled to --max-side
pixels (PNG) to keep the run short, are coded at --quality by, each in a fresh process:
- loop: a plain single-process loop (read, open_image, Codec.encode) with 2 and with 1 torch threads;
- udfs: the pipeline's own per-image work (load_batch + CompressActor: encode, MS-SSIM, hashes,
  archive row) called in a loop without Ray, 2 threads;
- tng compress --workers N: the job's code path (jobs.compress) in its own process with a local Ray.
Figures: wall time of the process (interpreter start to exit: Ray start and stop, model loads
included); steady throughput (images after the first, over the time they took: for the pipeline,
from the rows' `encoded_at`, stamped as each encode starts); peak memory of the whole process tree
(driver, gcs, raylet, agents, workers), RSS summed (counts shared pages once per process) and PSS.
Pipeline overhead = pipeline time / plain-loop time (2 threads) - 1. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_SRC = ROOT.parent / "shared/datasets/val-photos/wikipedia-photos"


# ---- the measured children -------------------------------------------------------------------

def child_loop(images: Path, threads: int, quality: float, udfs: bool) -> dict:
    import numpy as np
    import torch

    from tng.codec import Codec, open_image
    from tng.codec.images import DEFAULT_MAX_PIXELS
    from tng.codec.registry import DEFAULT_MODEL_ID
    from tng.pipeline.stages import CompressActor, load_batch

    torch.set_num_threads(threads)
    t = time.perf_counter()
    if udfs:
        actor = CompressActor(quality=quality, target_psnr=None, model_id=DEFAULT_MODEL_ID, run_id="bench", threads=threads,
                              effort=0)
        codec = actor.codec
    else:
        codec = Codec(device="cpu", effort=0)
    codec.encode(np.zeros((64, 64, 3), np.uint8))  # the model is loaded (the actors load theirs too)
    load_s = time.perf_counter() - t
    times = []
    for path in sorted(images.iterdir()):
        t = time.perf_counter()
        if udfs:
            actor(load_batch({"key": [path.name], "source_uri": [str(path)], "source_version": [""]}, {}, DEFAULT_MAX_PIXELS))
        else:
            codec.encode(open_image(path.read_bytes()), quality=quality)
        times.append(time.perf_counter() - t)
    return {"load_s": load_s, "times": times}


def child_pipeline(images: Path, dst: Path, workers: int, quality: float, batch_size: int) -> dict:
    import pyarrow.compute as pc

    from tng.jobs.cli import parser
    from tng.jobs.compress import compress
    from tng.pipeline.archive import open_fs, read_rows
    from tng.pipeline.run import init_ray

    t0 = time.perf_counter()
    init_ray(None)
    t1 = time.perf_counter()
    summary = compress(parser().parse_args(["compress", str(images), str(dst), "--workers", str(workers),
                                            "--quality", str(quality), "--batch-size", str(batch_size),
                                            "--effort", "0"]))
    t2 = time.perf_counter()
    rows = read_rows(*open_fs(str(dst)), ["key", "run_id", "encoded_at", "width", "height", "status"])
    rows = rows.filter(pc.equal(rows["run_id"], summary["run_id"])).sort_by("encoded_at").to_pylist()
    starts = [(r["encoded_at"].timestamp(), r["width"] * r["height"] / 1e6) for r in rows]
    return {"ray_start_s": t1 - t0, "job_s": t2 - t1, "ok": summary["ok"], "errors": summary["errors"],
            "encode_starts": starts}


# ---- the parent: process-tree memory, orchestration, table ----------------------------------

def _tree(root: int) -> list[int]:
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += [c for c, p in parent.items() if p == pid]
    return out


def _kib(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """Peak summed RSS and PSS (MB) of a process and all its descendants, sampled every `period` s."""

    def __init__(self, pid: int, period: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.period, self.stop = pid, period, threading.Event()
        self.peak_rss = self.peak_pss = 0.0
        self.peak_procs = 0

    def run(self) -> None:
        while not self.stop.wait(self.period):
            pids = _tree(self.pid)
            rss = sum(_kib(f"/proc/{p}/status", "VmRSS:") for p in pids) / 1024
            pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids) / 1024
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, len(pids))


def watched(argv: list[str], period: float = 0.25, **popen) -> tuple[subprocess.Popen, str, float, TreeMemory]:
    """Run `argv` to its end with its stdout piped: (the process, its stdout, wall seconds, the peak
    memory of its process tree)."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **popen)
    mem = TreeMemory(proc.pid, period)
    mem.start()
    out = proc.communicate()[0]
    wall = time.perf_counter() - t
    mem.stop.set()
    mem.join()
    return proc, out, wall, mem


def run_child(args: list[str], log: Path) -> dict:
    env = dict(os.environ, RAY_DATA_DISABLE_PROGRESS_BARS="1", RAY_USAGE_STATS_ENABLED="0")
    load = os.getloadavg()[0]
    with open(log, "a") as err:
        proc, out, wall, mem = watched([sys.executable, __file__, *args], stderr=err, env=env)
    if proc.returncode:
        raise SystemExit(f"child {args} failed ({proc.returncode}); see {log}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(wall_s=wall, peak_rss_mb=mem.peak_rss, peak_pss_mb=mem.peak_pss, procs=mem.peak_procs, loadavg_before=load)
    return res


def prepare(src: Path, limit: int, max_side: int, out: Path) -> list[float]:
    """The first `limit` images of src, downscaled to fit max_side, as PNG. Returns their MP."""
    from PIL import Image

    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:limit]
    mps = []
    for p in files:
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((max_side, max_side), Image.LANCZOS)
            im.save(out / f"{p.stem}.png")
            mps.append(im.width * im.height / 1e6)
    return mps


def steady(times_mp: list[tuple[float, float]], span: float) -> tuple[float, float]:
    """(images/s, MP/s) of all images after the first over `span` seconds."""
    return (len(times_mp) - 1) / span, sum(mp for _, mp in times_mp[1:]) / span


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", nargs="?", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--max-side", type=int, default=768)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quality", type=float, default=4)
    ap.add_argument("--batch-size", type=int, default=1, help="images per batch (1: a dozen images still spread over 2 workers)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/pipeline-speed.json")
    ap.add_argument("--child", choices=["loop", "udfs", "pipeline"], help=argparse.SUPPRESS)
    ap.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dst", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child == "pipeline":
        return print(json.dumps(child_pipeline(a.images, a.dst, a.workers[0], a.quality, a.batch_size)))
    if a.child:
        return print(json.dumps(child_loop(a.images, a.threads, a.quality, a.child == "udfs")))

    work = Path(tempfile.mkdtemp(prefix="tng-pipeline-speed-"))
    images = work / "images"
    images.mkdir()
    mps = prepare(a.src, a.limit, a.max_side, images)
    if len(mps) < 3:
        raise SystemExit(f"need at least 3 images in {a.src}")
    n, mp = len(mps), sum(mps)
    log = work / "children.log"
    q = ["--quality", str(a.quality)]
    print(f"{n} images, {mp:.2f} MP (long side {a.max_side}) from {a.src}; child stderr in {log}", flush=True)
    results = {}
    for name, args in [("loop, 2 threads", ["--child", "loop", "--threads", "2"]),
                       ("loop, 1 thread", ["--child", "loop", "--threads", "1"]),
                       ("pipeline UDFs without Ray, 2 threads", ["--child", "udfs", "--threads", "2"])]:
        r = run_child([*args, "--images", str(images), *q], log)
        r["steady_img_s"], r["steady_mp_s"] = steady(list(zip(r["times"], mps)), sum(r["times"][1:]))  # both by name
        results[name] = r
        print(f"  {name}: {r['wall_s']:.1f} s", flush=True)
    for w in a.workers:
        r = run_child(["--child", "pipeline", "--workers", str(w), "--images", str(images), "--dst",
                       str(work / f"archive-{w}"), "--batch-size", str(a.batch_size), *q], log)
        starts = r.pop("encode_starts")
        r["steady_img_s"], r["steady_mp_s"] = steady(starts, starts[-1][0] - starts[0][0])
        results[f"tng compress --workers {w}"] = r
        print(f"  tng compress --workers {w}: {r['wall_s']:.1f} s", flush=True)

    ref = results["loop, 2 threads"]
    rows = []
    for name, r in results.items():
        rows.append({"config": name, "wall_s": r["wall_s"], "img_s": n / r["wall_s"], "mp_s": mp / r["wall_s"],
                     "steady_img_s": r["steady_img_s"], "steady_mp_s": r["steady_mp_s"],
                     "overhead_wall": r["wall_s"] / ref["wall_s"] - 1,
                     "overhead_steady": ref["steady_mp_s"] / r["steady_mp_s"] - 1,
                     "peak_rss_mb": r["peak_rss_mb"], "peak_pss_mb": r["peak_pss_mb"], "procs": r["procs"],
                     "loadavg_before": r["loadavg_before"]})
    speedup = {}
    if {1, 2} <= set(a.workers):
        one, two = results["tng compress --workers 1"], results["tng compress --workers 2"]
        speedup = {"wall": one["wall_s"] / two["wall_s"], "steady": two["steady_mp_s"] / one["steady_mp_s"]}
    print("\n| config | wall s | img/s | MP/s | steady img/s | steady MP/s | overhead (wall) | overhead (steady) "
          "| peak RSS MB | peak PSS MB | procs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['wall_s']:.1f} | {r['img_s']:.2f} | {r['mp_s']:.3f} | {r['steady_img_s']:.2f} "
              f"| {r['steady_mp_s']:.3f} | {100 * r['overhead_wall']:+.0f}% | {100 * r['overhead_steady']:+.0f}% "
              f"| {r['peak_rss_mb']:,.0f} | {r['peak_pss_mb']:,.0f} | {r['procs']} |")
    if speedup:
        print(f"\n2 workers vs 1: {speedup['wall']:.2f}x (wall), {speedup['steady']:.2f}x (steady MP/s)")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine())
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": cpu, "cpus": os.cpu_count(), "src": str(a.src), "images": n, "megapixels": mp,
              "max_side": a.max_side, "quality": a.quality, "batch_size": a.batch_size, "rows": rows,
              "speedup_2_vs_1_workers": speedup, "raw": results}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
