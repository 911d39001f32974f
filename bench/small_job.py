"""Small jobs from a fresh process: `tng compress` of a few photos, `tng decompress` and `tng report` of its archive,
in-process (the default for small jobs, pipeline/in_process.py, decode_graph.py) against the same
jobs on a local Ray (`--in-process-files 0`).

    .venv/bin/python bench/small_job.py [SRC] [--runs 3] [--out bench/results/small-job-DATE.json]

SRC defaults to samples/ (the README's first command: 3 photos, 0.64 MP). Runs alternate between the
engines, each `tng compress SRC DST` (default settings) into an empty archive in a fresh process.
Figures per run: wall seconds of the command (interpreter start to exit); seconds from the start to
the first image (the first row's `encoded_at`, stamped when that image's encode is done); peak
summed RSS of the process tree (the driver and, on Ray, every Ray process: bench/pipeline_speed.py's
`watched`, sampled every 0.1 s); then the wall seconds of `tng decompress` of that archive and of
`tng report` of it with its RD study (`--source SRC`), the same way (in-process, or with
`--in-process-files 0`): the README's first command, and their sum. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TNG = Path(sys.executable).with_name("tng")
ENGINES = {"in-process": [], "ray": ["--in-process-files", "0"]}

from pipeline_speed import watched  # noqa: E402  (bench/ is sys.path[0] when run as a script)


def one_run(src: Path, engine: str, work: Path) -> dict:
    import pyarrow.parquet as pq

    dst = work / f"archive-{engine}-{time.monotonic_ns()}"
    start = dt.datetime.now(dt.timezone.utc)
    proc, out, wall, mem = watched([str(TNG), "compress", str(src), str(dst), *ENGINES[engine]], period=0.1,
                                   stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"tng compress ({engine}) failed:\n{out[-3000:]}")
    (manifest,) = (dst / "runs").glob("*.json")
    run = json.loads(manifest.read_text())
    assert run["engine"] == engine, run["engine"]
    first = min(pq.read_table(dst / "shards", columns=["encoded_at"])["encoded_at"].to_pylist())
    t = time.perf_counter()
    back = subprocess.run([str(TNG), "decompress", str(dst), str(dst) + "-restored", *ENGINES[engine]],
                          capture_output=True, text=True)
    decompress_s = time.perf_counter() - t
    if back.returncode:
        raise SystemExit(f"tng decompress ({engine}) failed:\n{back.stderr[-3000:]}")
    t = time.perf_counter()
    report = subprocess.run([str(TNG), "report", str(dst), str(dst) + "-report", "--source", str(src), *ENGINES[engine]],
                            capture_output=True, text=True)
    report_s = time.perf_counter() - t
    if report.returncode:
        raise SystemExit(f"tng report ({engine}) failed:\n{report.stderr[-3000:]}")
    return {"engine": engine, "wall_s": round(wall, 2), "first_image_s": round((first - start).total_seconds(), 2),
            "peak_rss_mb": round(mem.peak_rss), "processes": mem.peak_procs, "ok": run["ok"], "errors": run["errors"],
            "decompress_wall_s": round(decompress_s, 2), "report_wall_s": round(report_s, 2),
            "readme_wall_s": round(wall + decompress_s + report_s, 2)}


def cpu() -> str:
    """The CPU's model name and the vector extensions that matter to the codec's speed."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return f"{name} ({', '.join(f for f in ('avx2', 'avx512_vnni', 'avx512_bf16', 'amx_int8') if f in flags)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", nargs="?", type=Path, default=ROOT / "samples")
    ap.add_argument("--runs", type=int, default=3, help="runs of each engine, alternating")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "bench" / "results" / f"small-job-{dt.date.today().isoformat()}.json")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        for i in range(a.runs):
            for engine in (ENGINES if i % 2 == 0 else reversed(ENGINES)):
                results.append(one_run(a.src, engine, Path(work)))
                print(json.dumps(results[-1]), flush=True)
    print("\n| engine | compress: wall s | to the first image s | peak RSS of the process tree MB | decompress: wall s "
          "| report --source: wall s | the three |\n|---|---:|---:|---:|---:|---:|---:|")
    for engine in ENGINES:
        mine = [r for r in results if r["engine"] == engine]
        span = lambda k: f"{min(r[k] for r in mine):g}–{max(r[k] for r in mine):g}"  # noqa: E731
        print(f"| {engine} | {span('wall_s')} | {span('first_image_s')} | {span('peak_rss_mb')} | {span('decompress_wall_s')} "
              f"| {span('report_wall_s')} | {span('readme_wall_s')} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"date": dt.datetime.now(dt.timezone.utc).isoformat(), "machine": cpu(), "src": str(a.src), "runs": results}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
