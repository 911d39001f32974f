"""Training throughput of `tng train` (MP/s of crops) under its speed options, side by side.

    .venv/bin/python bench/train_speed.py [--data DIR] [--images 20] [--steps 6] [--batch 8] [--crop 256]
        [--size 96,160,checkerboard] [--variant "fp32=" --variant "bf16+cl=--bf16 --channels-last" ...]
        [--tng-root PATH]

Each variant is timed as two whole `tng train` runs from scratch, of 2 and 2 + --steps steps, in fresh
processes: the difference is --steps steps with the start-up (imports, decoding the photos, the first
steps' warm-up and compilation) cancelled out. MP/s = steps × batch × crop² / that difference.
--tng-root runs another checkout's code (e.g. a `git worktree` of an older commit) for a before/after.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def namespace(root: Path, where: Path) -> Path:
    """A folder in which `tng` is root's packages (how scripts/gpu-train runs uninstalled)."""
    ns = where / "ns"
    (ns / "tng").mkdir(parents=True, exist_ok=True)
    for p in ("codec", "evaluation", "jobs", "pipeline"):
        os.symlink(root / p, ns / "tng" / p)
    return ns


def timed_run(env: dict, data: Path, out: Path, steps: int, args: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "tng.jobs.cli", "train", str(data), str(out), "--steps", str(steps),
           "--log-every", "1000", "--checkpoint-minutes", "1000", *args]
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared/datasets/train-photos"))
    p.add_argument("--images", type=int, default=20, help="photos used (first by name), decoded once per run")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--size", default="96,160,checkerboard", help="n,m,context of the model trained from scratch")
    p.add_argument("--variant", action="append", help="NAME=tng train options (default: fp32 and the fast options)")
    p.add_argument("--tng-root", type=Path, help="the checkout whose code runs (default: this one, as installed)")
    p.add_argument("--repeat", type=int, default=1, help="time each variant this many times (the best counts)")
    a = p.parse_args()
    n, m, context = a.size.split(",")
    variants = a.variant or ["fp32=", "bf16=--bf16", "bf16+channels-last=--bf16 --channels-last"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        data.mkdir()
        photos = sorted(q for q in Path(a.data).rglob("*") if q.suffix.lower() in {".jpg", ".png"})[: a.images]
        for i, q in enumerate(photos):
            shutil.copy(q, data / f"{i:03d}{q.suffix.lower()}")
        env = dict(os.environ)
        if a.tng_root:
            env["PYTHONPATH"] = str(namespace(a.tng_root.resolve(), tmp))
        common = ["--n", n, "--m", m, "--context", context, "--batch", str(a.batch), "--crop", str(a.crop)]
        print(f"# {len(photos)} photos, {a.steps} steps of {a.batch}×{a.crop}², model {a.size}, "
              f"code {a.tng_root or ROOT}, {os.cpu_count()} CPUs")
        for v in variants:
            name, _, opts = v.partition("=")
            best = float("inf")
            for _ in range(a.repeat):
                short = timed_run(env, data, tmp / "run", 2, common + shlex.split(opts))
                long = timed_run(env, data, tmp / "run", 2 + a.steps, common + shlex.split(opts))
                best = min(best, long - short)
            mp = a.steps * a.batch * a.crop ** 2 / 1e6
            print(f"{name:24s} {best / a.steps:7.3f} s/step  {mp / best:7.3f} MP/s", flush=True)


if __name__ == "__main__":
    main()
