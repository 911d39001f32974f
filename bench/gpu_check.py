"""The one-call GPU check behind scripts/gpu-check: every step's figures in OUT/gpu-check.json.

    python bench/gpu_check.py [--out DIR] [--photos DIR] [--images N] [--codec-images N] [--size WxH]
        [--quality Q] [--effort E] [--workers W] [--gpus-per-worker G] [--batch-size B] [--step-timeout S]

Steps, in order; each runs whatever happened to the one before, and each one's failure goes into the
JSON with its reason (exit status 1 when any failed; a step that cannot run here is recorded as
skipped, with its reason, and is no failure):
- env: date, nvidia-smi (its table to the log), Python, torch, whether CUDA is there, the device's name.
  The device of every later step is cuda when torch sees one, else cpu.
- photos: --images photos (default: a few hundred on CUDA, 6 on CPU) cut from --photos (default
  .gpu/data, where `scripts/gpu-train --prepare` puts training photos, else the bundled samples/):
  crops of at most --size (768x512 on CUDA, 192x128 on CPU) at varied places, mirrored every other
  round, so that a few photos make as many different images as asked; written as PNG to a work folder.
- tests: `pytest tests/test_cuda.py` (on CPU its tests skip): counts and exit status.
- codec: the first --codec-images photos encoded as one `Codec.encode_batch` and decoded one by one
  with `Codec(device=...)`, in a child process; real bitstreams through the range coder (bytes
  counted), encode and decode MP/s, and every stream checked to decode to the encoder's reconstruction
  (on CUDA, the first one on the CPU too: the format's promise across devices).
- actors: what the codec actors of `tng compress` do, without Ray (the lent GPU machines have none),
  in a child process: the very per-batch objects its Ray Data graph applies (pipeline/compress_graph.py
  encode_and_write) called in turn over all the photos, --batch-size at a time: the listing UDF, then
  `load_batch` (read, hash, decode) and one `CompressActor` (on CUDA with --gpus-per-worker, as compress
  places it; with the threads of one of --workers actors). One actor, loading and coding in turn (their
  seconds apart), where compress runs --workers side by side fed by load tasks. Actor construction, the
  first batch (it loads the model) and the batches after it timed apart; MP/s; rows by status (all must
  be ok), bytes out; GPU utilisation and memory sampled by `nvidia-smi -lms 500` over the batches (null
  on CPU). The rows are written as a Parquet shard with the archive's writer, read back, and every row
  checked by `DecodeActor` as `tng audit` checks it (its stream decoded, on the GPU when there is one,
  its hash compared with the row's). Fails if Ray was imported.
- compress: `tng compress` of all the photos with GPU actors on CUDA (--workers, --gpus-per-worker),
  CPU actors otherwise: wall seconds, MP/s over the wall and between the first and last batch written,
  GPU utilisation and memory sampled as above (null on CPU); then `tng audit` of the archive, which
  decodes every row and checks its hash. Skipped where Ray is not installed (the lent GPU machines).
The JSON is rewritten after every step: a call cut off by its time limit still leaves the steps done.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa  # imported where used, as torch is

ROOT = Path(__file__).resolve().parents[1]
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
GPU_QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "500"]
AUDIT_BATCH = 4  # rows per DecodeActor call in `tng audit` (pipeline/decode_graph.py decode)


class StepFailed(Exception):
    """A step's failure: its one-line reason and what it had measured until then."""

    def __init__(self, reason: str, partial: dict | None = None):
        super().__init__(reason)
        self.partial = partial or {}


class StepSkipped(Exception):
    """A step that cannot run on this machine (not a failure of what it checks): its reason."""


# ---- running things --------------------------------------------------------------------------

def run_logged(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run cmd in the repo root, its output passed on line by line (so into the log) and returned.
    Past `timeout` seconds its whole process group is killed (a Ray driver leaves helpers behind)."""
    print("$ " + shlex.join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended meanwhile
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        rc = proc.wait()
    finally:
        timer.cancel()
    sys.stdout.flush()
    if expired.is_set():
        raise StepFailed(f"{shlex.join(cmd[1:4])} ... ran past {timeout:g} s and was killed")
    return rc, "".join(lines)


def run_child(what: str, args: list[str], timeout: float, work: Path) -> dict:
    """This file's `--child what` in a fresh process (a crash or a CUDA fault there loses one step, not
    the report); its result, which it writes as JSON to a file."""
    result = work / f"{what}.json"
    result.unlink(missing_ok=True)
    rc, out = run_logged([sys.executable, __file__, "--child", what, "--result", str(result), *args], timeout)
    if rc or not result.exists():
        last = out.strip().splitlines()[-1:] or ["no output"]  # a traceback's last line: the exception
        raise StepFailed(f"the {what} child process exited with status {rc}: {last[0]}")
    return json.loads(result.read_text())


def summarise_gpu_samples(text: str) -> dict:
    """GPU utilisation (%) and memory (MiB) from nvidia-smi's "util, memory" lines, one per GPU per
    sample: mean and max over all of them; nulls when there are none (no GPU, or unsupported: "[N/A]")."""
    util, mem = [], []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            util.append(int(parts[0]))
            mem.append(int(parts[1]))
    return {"gpu_util_mean": round(sum(util) / len(util), 1) if util else None,
            "gpu_util_max": max(util) if util else None,
            "gpu_mem_used_max_mib": max(mem) if mem else None, "gpu_samples": len(util)}


class GpuSampler:
    """nvidia-smi sampling utilisation and memory every 500 ms in the background while a step runs;
    does nothing when disabled (CPU) or when there is no nvidia-smi."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.proc: subprocess.Popen | None = None
        self.file = None

    def __enter__(self) -> GpuSampler:
        if self.enabled:
            self.file = tempfile.TemporaryFile("w+")
            self.proc = subprocess.Popen(GPU_QUERY, stdout=self.file, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def summary(self) -> dict:
        if not self.file:
            return summarise_gpu_samples("")
        self.file.seek(0)
        return summarise_gpu_samples(self.file.read())


# ---- the steps ---------------------------------------------------------------------------------

def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def step_env(a: argparse.Namespace, work: Path) -> dict:
    env = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
           "cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
           "python_executable": sys.executable, "nvidia_smi": None}
    if shutil.which("nvidia-smi"):
        run_logged(["nvidia-smi"], 60)  # the whole table, for the log
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=60)
        env["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    env.update(run_child("env", [], a.step_timeout, work))  # torch is imported there, not here
    print(f"{env['date_utc']}: Python {env['python']}, torch {env['torch']}, CUDA available: {env['cuda_available']}, "
          f"device {env['device']} ({env['device_name']})", flush=True)
    return env


def child_env() -> dict:
    import torch

    from tng.codec.effort import DEFAULT_EFFORT

    cuda = torch.cuda.is_available()
    try:  # the carried wheel, installed with --target, brings its metadata too
        constriction = version("constriction")
    except PackageNotFoundError:
        constriction = None
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": cuda,
            "gpus": torch.cuda.device_count() if cuda else 0, "device": "cuda" if cuda else "cpu",
            "device_name": torch.cuda.get_device_name(0) if cuda else cpu_name(), "constriction": constriction,
            "default_effort": DEFAULT_EFFORT}


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"--size wants WIDTHxHEIGHT of at least 16x16, got {text}")
    return w, h


def prepare_photos(src: Path, n: int, size: tuple[int, int], out: Path) -> list[Path]:
    """n PNG crops of at most `size` (w, h) from the photos under src: image i is cut from photo
    i mod len(photos) at a place drawn from a generator seeded with i, mirrored in odd rounds."""
    import numpy as np
    from PIL import Image

    photos = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise StepFailed(f"no photos ({', '.join(sorted(PHOTO_SUFFIXES))}) under {src}")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{i:04d}.png" for i in range(n)]
    for k, photo in enumerate(photos[:n]):  # each photo opened once, for all the images cut from it
        with Image.open(photo) as im:
            rgb = np.asarray(im.convert("RGB"))
        for i in range(k, n, len(photos)):
            w, h = min(size[0], rgb.shape[1]), min(size[1], rgb.shape[0])
            rng = np.random.default_rng(i)
            y, x = int(rng.integers(0, rgb.shape[0] - h + 1)), int(rng.integers(0, rgb.shape[1] - w + 1))
            crop = rgb[y : y + h, x : x + w]
            if (i // len(photos)) % 2:
                crop = crop[:, ::-1]
            Image.fromarray(np.ascontiguousarray(crop)).save(paths[i], compress_level=1)  # fast: read back once
    return paths


def megapixels(paths: list[Path]) -> float:
    from PIL import Image

    total = 0
    for p in paths:
        with Image.open(p) as im:
            total += im.width * im.height
    return total / 1e6


def step_photos(a: argparse.Namespace, work: Path) -> dict:
    paths = prepare_photos(a.photos, a.images, a.size, work / "photos")
    res = {"source": str(a.photos), "images": len(paths), "max_size": f"{a.size[0]}x{a.size[1]}",
           "megapixels": round(megapixels(paths), 6)}
    print(f"{res['images']} images of at most {res['max_size']}, {res['megapixels']:.3f} MP, cut from {a.photos}", flush=True)
    return res


def step_tests(a: argparse.Namespace, work: Path) -> dict:
    junit = work / "test_cuda.xml"  # the counts, read from pytest's JUnit XML rather than its console text
    cmd = [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", f"--junitxml={junit}", "tests/test_cuda.py"]
    rc, out = run_logged(cmd, a.step_timeout)
    res: dict[str, Any] = {"command": shlex.join(cmd[2:]), "exit_code": rc}
    if junit.exists():
        suite = ET.parse(junit).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        res.update(tests=n["tests"], passed=n["tests"] - n["failures"] - n["errors"] - n["skipped"],
                   failed=n["failures"], errors=n["errors"], skipped=n["skipped"])
    if rc or not junit.exists() or res["failed"] or res["errors"]:
        last = out.strip().splitlines()[-1:] or ["no output"]
        raise StepFailed(f"pytest tests/test_cuda.py exited {rc}: {last[0].strip(' =')}", res)
    return res


def child_codec(photos: list[Path], device: str, quality: float, effort: int | None) -> dict:
    """encode_batch of the photos, then each stream decoded and compared with the encoder's reconstruction."""
    import numpy as np
    import torch
    from PIL import Image

    from tng.codec import Codec

    images = []
    for p in photos:
        with Image.open(p) as im:
            images.append(np.asarray(im.convert("RGB")))
    codec = Codec(device=device, **({} if effort is None else {"effort": effort}))
    for im in {im.shape: im for im in images}.values():  # untimed: model load, entropy tables, kernels per shape
        codec.decode(codec.encode(im, quality=quality).data)
    sync = torch.cuda.synchronize if codec.device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    encoded = codec.encode_batch(images, quality=quality)
    encode_s = time.perf_counter() - t
    errors = [(p.name, str(e)) for p, e in zip(photos, encoded) if isinstance(e, Exception)]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(photos)} images did not encode, first {errors[0][0]}: {errors[0][1]}")
    t = time.perf_counter()
    decoded = [codec.decode(e.data).rgb for e in encoded]
    decode_s = time.perf_counter() - t
    mismatched = [p.name for p, e, d in zip(photos, encoded, decoded) if not np.array_equal(e.reconstruction, d)]
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    n_bytes = sum(len(e.data) for e in encoded)
    res = {"device": str(codec.device), "images": len(images), "megapixels": round(pixels / 1e6, 6),
           "quality": quality, "effort": codec.effort.level, "batch_pixels": codec.batch_pixels, "bytes": n_bytes,
           "bpp": round(n_bytes * 8 / pixels, 4), "psnr_mean": round(sum(e.psnr for e in encoded) / len(encoded), 3),
           "encode_s": round(encode_s, 3), "decode_s": round(decode_s, 3),
           "encode_mp_s": round(pixels / 1e6 / encode_s, 4), "decode_mp_s": round(pixels / 1e6 / decode_s, 4),
           "mismatches": len(mismatched), "mismatched": mismatched[:20], "exact": not mismatched}
    if codec.device.type != "cpu":  # the same pixels on the CPU: what a reader without a GPU gets
        on_cpu = Codec(device="cpu").decode(encoded[0].data).rgb
        res["cpu_decode_exact"] = bool(np.array_equal(on_cpu, encoded[0].reconstruction))
        res["exact"] = res["exact"] and res["cpu_decode_exact"]
    return res


def effort_option(a: argparse.Namespace) -> list[str]:
    return [] if a.effort is None else ["--effort", str(a.effort)]


def step_codec(a: argparse.Namespace, work: Path, device: str) -> dict:
    if not any((work / "photos").glob("*.png")):
        raise StepFailed("no photos to code (see the photos step)")
    args = ["--device", device, "--photos", str(work / "photos"), "--codec-images", str(a.codec_images),
            "--quality", str(a.quality), *effort_option(a)]
    with GpuSampler(device == "cuda") as gpu:
        res = run_child("codec", args, a.step_timeout, work)
    res.update(gpu.summary())
    print(f"{res['images']} images, {res['megapixels']:.3f} MP on {res['device']}: encode {res['encode_s']:g} s = "
          f"{res['encode_mp_s']:.3g} MP/s, decode {res['decode_s']:g} s = {res['decode_mp_s']:.3g} MP/s; "
          f"{res['bpp']:.3f} bpp, {res['psnr_mean']:.2f} dB; exact: {res['exact']}", flush=True)
    if not res["exact"]:
        why = (f"{res['mismatches']} of {res['images']} streams" if res["mismatches"]
               else "the first stream decoded on the CPU")
        raise StepFailed(f"{why} did not decode to the encoder's reconstruction", res)
    return res


def numpy_batch(table: pa.Table) -> dict:
    """A pyarrow table as Ray Data hands it to a batch_format="numpy" UDF: a numpy array per column."""
    return {c: table[c].to_numpy(zero_copy_only=False) for c in table.column_names}


def child_actors(photos: Path, archive: Path, quality: float, effort: int | None, batch_size: int, workers: int,
                 gpus_per_worker: float) -> dict:
    """The per-batch objects of `tng compress` (pipeline/compress_graph.py encode_and_write), called here
    in turn instead of by Ray Data: the listing UDF, load_batch, one CompressActor; its rows written as a
    shard with the archive's writer, then checked by DecodeActor as `tng audit` checks each row."""
    import pyarrow as pa
    import torch

    from tng.pipeline.archive import SCHEMA, open_fs, read_rows, write_shards
    from tng.pipeline.compress_graph import CompressSettings
    from tng.pipeline.decode_graph import DECODE_COLUMNS
    from tng.pipeline.listing import list_prefixes, split_prefixes
    from tng.pipeline.pending import as_todo
    from tng.pipeline.stages import CompressActor, DecodeActor, load_batch

    # compress's own settings object: every default it codes with (model, max_pixels, jpeg, codec) is its.
    s = CompressSettings(quality=quality, workers=workers, gpus_per_worker=gpus_per_worker, batch_size=batch_size,
                         **({} if effort is None else {"effort": effort}))
    if s.codec != "tng":  # the classic stage (classic_batch) would follow the actors: not measured here
        raise RuntimeError(f"the actors step measures --codec tng only, compress defaults to {s.codec}")
    device = "cuda" if s.gpus_per_worker else "cpu"  # encode_and_write's rule
    # run.py threads_per_worker for a local Ray (its CPUs are os.cpu_count()); it asks Ray, so not called here.
    threads = max(1, (os.cpu_count() or 1) // max(1, s.workers))

    # SRC's keys as listing_dataset's tasks list them, made into the rows to do as a first run does.
    fs, root = open_fs(str(photos))
    root = root.rstrip("/") or root
    prefixes = split_prefixes(fs, root)
    tasks = pa.table({"prefix": [p for p, _ in prefixes], "recursive": [r for _, r in prefixes]})
    todo = as_todo(pa.concat_tables(list_prefixes(tasks, str(photos), {}, root)))

    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-gpu-check")
    t = time.perf_counter()
    actor = CompressActor(quality=s.quality, target_psnr=s.target_psnr, model_id=s.model_id, run_id=run_id,
                          threads=threads, device=device, max_pixels=s.max_pixels, effort=s.effort, codec=s.codec)
    construct_s = time.perf_counter() - t
    tables, batches = [], []  # batches: (load s, actor s, pixels of its ok rows)
    with GpuSampler(device == "cuda") as gpu:
        for start in range(0, todo.num_rows, s.batch_size):
            t0 = time.perf_counter()
            loaded = load_batch(numpy_batch(todo.slice(start, s.batch_size)), storage_options={},
                                max_pixels=s.max_pixels, jpeg=s.jpeg, lossless=s.lossless)
            t1 = time.perf_counter()
            out = actor(loaded)  # its rows hold the bitstreams' bytes: the GPU work is done when it returns
            t2 = time.perf_counter()
            table = pa.Table.from_pydict({k: v.tolist() for k, v in out.items()}, schema=SCHEMA)
            tables.append(table)
            ok = [r for r in table.select(["width", "height", "status"]).to_pylist() if r["status"] == "ok"]
            batches.append((t1 - t0, t2 - t1, sum(r["width"] * r["height"] for r in ok)))
    rows = pa.concat_tables(tables)

    # Written as ShardSink.write writes a write task's rows (sink.py itself subclasses Ray's Datasink).
    out_fs, out_root = open_fs(str(archive))
    shards = len(write_shards(out_fs, out_root, run_id, 0, rows, s.rows_per_shard))
    t = time.perf_counter()
    back = read_rows(out_fs, out_root, DECODE_COLUMNS)
    # audit's check: each stream decoded, its hash compared. Its codec takes the GPU when there is one
    # (formats.py, Codec(device=None)); under Ray, audit's actors reserve none and decode on the CPU.
    decoder = DecodeActor(threads=threads, files=False)
    checked = []
    for start in range(0, back.num_rows, AUDIT_BATCH):
        res = decoder(numpy_batch(back.slice(start, AUDIT_BATCH)))
        checked += [dict(zip(res, values)) for values in zip(*res.values())]
    verify_s = time.perf_counter() - t

    ok_rows = [r for r in rows.select(["status", "codec", "bitstream_bytes", "psnr"]).to_pylist()
               if r["status"] == "ok"]
    n_bytes = sum(r["bitstream_bytes"] for r in ok_rows)
    psnrs = [r["psnr"] for r in ok_rows if r["psnr"] is not None]
    mismatched = [f"{r['key']}: {r['error'] or 'hash mismatch'}" for r in checked if r["error"] or not r["hash_ok"]]
    pixels = sum(b[2] for b in batches)
    wall = sum(b[0] + b[1] for b in batches)
    later = batches[1:]  # after the first batch, which loads the model onto the device

    def rate(part: list[tuple[float, float, int]], seconds: float) -> float | None:  # MP/s of those batches
        return round(sum(b[2] for b in part) / 1e6 / seconds, 4) if part and seconds else None

    return {"device": device, "actors": 1, "threads": threads, "batch_size": s.batch_size,
            "gpus_per_worker": s.gpus_per_worker, "quality": s.quality, "effort": s.effort,
            "images": rows.num_rows, "batches": len(batches), "megapixels": round(pixels / 1e6, 6),
            "construct_s": round(construct_s, 3), "first_batch_s": round(sum(batches[0][:2]), 3) if batches else None,
            "wall_s": round(wall, 3), "load_s": round(sum(b[0] for b in batches), 3),
            "actor_s": round(sum(b[1] for b in batches), 3), "mp_s": rate(batches, wall),
            "steady_mp_s": rate(later, sum(b[0] + b[1] for b in later)),
            "steady_actor_mp_s": rate(later, sum(b[1] for b in later)),
            "rows_by_status": dict(Counter(rows["status"].to_pylist())),
            "rows_by_codec": dict(Counter(r["codec"] for r in ok_rows)), "bytes_out": n_bytes,
            "bpp": round(n_bytes * 8 / pixels, 4) if pixels else None,
            "psnr_mean": round(sum(psnrs) / len(psnrs), 3) if psnrs else None,
            "shards": shards, "rows_checked": len(checked), "mismatches": len(mismatched),
            "mismatched": mismatched[:20], "streams_exact": len(checked) == rows.num_rows and not mismatched,
            "verify_s": round(verify_s, 3), "verify_device": "cuda" if torch.cuda.is_available() else "cpu",
            "torch_max_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
            **gpu.summary(),
            "ray_imported": "ray" in sys.modules}  # looked at last: nothing above may have pulled Ray in


def step_actors(a: argparse.Namespace, work: Path, device: str, photos: dict) -> dict:
    if not photos.get("ok"):
        raise StepFailed("no photos to compress (see the photos step)")
    gpus = a.gpus_per_worker if device == "cuda" else 0  # as step_compress places compress's actors
    args = ["--photos", str(work / "photos"), "--archive", str(work / "actors-archive"), "--quality", str(a.quality),
            *effort_option(a), "--batch-size", str(a.batch_size), "--workers", str(a.workers),
            "--gpus-per-worker", f"{gpus:g}"]
    res = run_child("actors", args, a.step_timeout, work)
    util = "" if res["gpu_util_mean"] is None else f", GPU {res['gpu_util_mean']:g} % busy"
    steady = "" if res["steady_mp_s"] is None else f"; {res['steady_mp_s']:.3g} MP/s after it"
    print(f"one CompressActor on {res['device']} ({res['threads']} threads), {res['images']} images in "
          f"{res['batches']} batches of {res['batch_size']}: built in {res['construct_s']:g} s, then "
          f"{res['megapixels']:.3f} MP in {res['wall_s']:g} s = {res['mp_s']:.3g} MP/s (the first batch, which loads "
          f"the model, {res['first_batch_s']:g} s{steady}){util}; "
          f"rows {res['rows_by_status']}, {res['bytes_out']} bytes; {res['rows_checked']} rows checked as "
          f"tng audit does, {res['mismatches']} mismatches; Ray imported: {res['ray_imported']}", flush=True)
    if res["ray_imported"]:
        raise StepFailed("the actors child imported Ray: the lent GPU machines have none", res)
    if res["images"] != photos["images"] or res["rows_by_status"] != {"ok": photos["images"]}:
        raise StepFailed(f"rows {res['rows_by_status']} for {photos['images']} images", res)
    if not res["streams_exact"]:
        raise StepFailed(f"{res['mismatches']} of {res['images']} rows did not decode to their recorded hash"
                         + (f", first {res['mismatched'][0]}" if res["mismatched"] else ""), res)
    return res


def archive_figures(archive: Path) -> dict:
    """The run's own summary (runs/*.json) and the MP/s between the first and the last batch written
    (rows are stamped as their batch finishes): the rate once Ray and the models are up."""
    from tng.pipeline.archive import open_fs, read_rows

    runs = sorted((archive / "runs").glob("*.json"))
    if len(runs) != 1:
        raise StepFailed(f"expected one run manifest in {archive}/runs, found {len(runs)}")
    run = json.loads(runs[0].read_text())
    rows = read_rows(*open_fs(str(archive)), ["encoded_at", "width", "height", "status"]).to_pylist()
    done = sorted({r["encoded_at"] for r in rows})
    steady = None
    if len(done) > 1:
        later = sum(r["width"] * r["height"] for r in rows if r["encoded_at"] != done[0] and r["status"] == "ok")
        steady = round(later / 1e6 / (done[-1] - done[0]).total_seconds(), 4)
    return {"engine": run.get("engine"), "images": run["ok"], "errors": run["errors"], "errors_by_reason": run["errors_by_reason"],
            "bytes_out": run["bytes_out"], "mean_bpp": run["mean_bpp"], "mean_psnr": run["mean_psnr"],
            "batches_written": len(done), "steady_mp_s": steady}


def step_compress(a: argparse.Namespace, work: Path, device: str, photos: dict) -> dict:
    if not photos.get("ok"):
        raise StepFailed("no photos to compress (see the photos step)")
    if importlib.util.find_spec("ray") is None:  # the lent GPU machines lack it, and its wheel is over a call's 64 MiB
        raise StepSkipped("Ray is not installed for this Python (pip install 'tng[pipeline]'): tng compress "
                          "cannot run; the actors step measured its codec actors without it")
    archive = work / "archive"
    gpus = a.gpus_per_worker if device == "cuda" else 0
    tng = [sys.executable, "-m", "tng.jobs.cli"]
    cmd = [*tng, "compress", str(work / "photos"), str(archive), "--quality", str(a.quality), *effort_option(a),
           "--workers", str(a.workers), "--gpus-per-worker", f"{gpus:g}", "--batch-size", str(a.batch_size),
           "--in-process-files", "0"]  # on Ray's actors, CPU-only too: a few photos would otherwise run in-process
    mp = photos["megapixels"]
    with GpuSampler(device == "cuda") as gpu:
        t = time.perf_counter()
        rc, _ = run_logged(cmd, a.step_timeout)
        wall = time.perf_counter() - t
    res = {"command": shlex.join(["tng", *cmd[len(tng):]]), "device": device, "workers": a.workers,
           "gpus_per_worker": gpus, "batch_size": a.batch_size, "requested": photos["images"], "megapixels": mp,
           "exit_code": rc, "wall_s": round(wall, 2), "mp_s": round(mp / wall, 4), **gpu.summary()}
    if rc:
        raise StepFailed(f"tng compress exited {rc}", res)
    res.update(archive_figures(archive))
    report = work / "audit.json"
    rc, _ = run_logged([*tng, "audit", str(archive), "--workers", str(a.workers), "--report", str(report),
                        "--in-process-files", "0"], a.step_timeout)
    audit = json.loads(report.read_text()) if report.exists() else {}
    res["audit"] = {"exit_code": rc, "rows_checked": audit.get("rows_checked"), "mismatches": audit.get("mismatches"),
                    "problems": audit.get("problems", [])[:20]}
    res["audit_ok"] = rc == 0 and audit.get("rows_checked") == res["images"] and audit.get("mismatches") == 0
    if res["images"] != photos["images"] or res["errors"]:
        raise StepFailed(f"{res['images']} of {photos['images']} images compressed, {res['errors']} errors", res)
    if not res["audit_ok"]:
        raise StepFailed(f"tng audit exited {rc}: {audit.get('rows_checked')} rows checked, "
                         f"{audit.get('mismatches')} mismatches", res)
    return res


# ---- the report ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu-check-out"), help="where gpu-check.json goes")
    p.add_argument("--photos", type=Path, help="folder of photos (default .gpu/data when it has any, else samples/)")
    p.add_argument("--images", type=int, help="images to compress (default 300 on CUDA, 6 on CPU)")
    p.add_argument("--codec-images", type=int, help="the first N of them for the codec step (default 64 on CUDA, 4 on CPU)")
    p.add_argument("--size", type=parse_size, help="largest crop, WxH (default 768x512 on CUDA, 192x128 on CPU)")
    p.add_argument("--quality", type=float, default=4.0)
    p.add_argument("--effort", type=int, help="encoder effort (default: the codec's)")
    # Several actors per GPU: each one's entropy coding and per-image work is CPU time that leaves its
    # share of the GPU idle. A starting point, not yet measured on a GPU.
    p.add_argument("--workers", type=int, help="codec actors of tng compress (default 4 per GPU on CUDA, 1 on CPU)")
    p.add_argument("--gpus-per-worker", type=float, default=0.25, help="each actor's share of a GPU on CUDA")
    p.add_argument("--batch-size", type=int, default=8, help="tng compress --batch-size, and the actors step's batches")
    p.add_argument("--step-timeout", type=float, default=600, help="seconds one step's process may run")
    p.add_argument("--keep-work", action="store_true", help="keep the work folder (photos, archive)")
    p.add_argument("--child", choices=["env", "codec", "actors"], help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--device", help=argparse.SUPPRESS)
    p.add_argument("--archive", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def with_device_defaults(a: argparse.Namespace, device: str, gpus: int, default_effort: int | None) -> None:
    """The defaults that depend on the device: a few hundred photos on CUDA, a quick run on CPU (CI)."""
    cuda = device == "cuda"
    if a.photos is None:
        gpu_data = ROOT / ".gpu/data"
        has_photos = gpu_data.is_dir() and any(p.suffix.lower() in PHOTO_SUFFIXES for p in gpu_data.iterdir())
        a.photos = gpu_data if has_photos else ROOT / "samples"
    a.images = a.images or (300 if cuda else 6)
    a.codec_images = min(a.images, a.codec_images or (64 if cuda else 4))
    a.size = a.size or ((768, 512) if cuda else (192, 128))
    a.workers = a.workers or (4 * max(1, gpus) if cuda else 1)
    if a.effort is None:
        a.effort = default_effort  # None when the env step could not tell: then the commands' own default


def headline(report: dict) -> str:
    c, act, k = report.get("codec", {}), report.get("actors", {}), report.get("compress", {})
    parts = [f"device {report.get('device')}"]
    if c.get("ok"):
        parts.append(f"codec encode {c['encode_mp_s']:.3g} MP/s, decode {c['decode_mp_s']:.3g} MP/s")
    if act.get("ok"):
        util = "" if act["gpu_util_mean"] is None else f", GPU {act['gpu_util_mean']:g} % busy"
        parts.append(f"one compress actor {act['images']} images at {act['mp_s']:.3g} MP/s{util}")
    if k.get("ok"):
        util = "" if k["gpu_util_mean"] is None else f", GPU {k['gpu_util_mean']:g} % busy"
        parts.append(f"compress {k['images']} images in {k['wall_s']:g} s, {k['mp_s']:.3g} MP/s{util}")
    failed, skipped = report["failed_steps"], report["skipped_steps"]
    if skipped:
        parts.append(f"skipped: {', '.join(skipped)}")
    parts.append(f"FAILED: {', '.join(failed)}" if failed else "all steps ok" if not skipped else "the others ok")
    return "gpu-check: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run every step, write OUT/gpu-check.json after each; 0 when all passed, else 1."""
    a = parse_args(argv)
    if a.child:  # one step's measurement in its own process (run_child)
        if a.child == "env":
            result = child_env()
        elif a.child == "actors":
            result = child_actors(a.photos, a.archive, a.quality, a.effort, a.batch_size, a.workers, a.gpus_per_worker)
        else:
            result = child_codec(sorted(a.photos.glob("*.png"))[: a.codec_images], a.device, a.quality, a.effort)
        a.result.write_text(json.dumps(result))
        return 0

    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tng-gpu-check-"))
    report: dict[str, Any] = {"started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "ok": False, "failed_steps": [], "skipped_steps": [], "device": "cpu"}

    def step(name: str, fn: Callable[..., dict], *args: Any) -> dict:
        print(f"\n== gpu-check: {name}", flush=True)
        t = time.perf_counter()
        try:
            res = {**fn(*args), "ok": True}
        except StepFailed as e:
            res = {**e.partial, "ok": False, "error": str(e)}
        except StepSkipped as e:  # ok is null: neither passed nor failed ("skipped" is the tests step's count)
            res = {"ok": None, "skip_reason": str(e)}
        except Exception as e:  # noqa: BLE001  (any failure is one step's, recorded; the next step runs)
            traceback.print_exc()
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        res["step_s"] = round(time.perf_counter() - t, 2)
        if res["ok"] is None:
            print(f"gpu-check: {name} skipped: {res['skip_reason']}", flush=True)
            report["skipped_steps"].append(name)
        elif not res["ok"]:
            print(f"gpu-check: {name} failed: {res['error']}", flush=True)
            report["failed_steps"].append(name)
        report[name] = res
        report["ok"] = not report["failed_steps"]
        (a.out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
        return res

    try:
        env = step("env", step_env, a, work)
        device = report["device"] = env.get("device", "cpu")
        with_device_defaults(a, device, env.get("gpus", 0), env.get("default_effort"))
        report["settings"] = {"photos": str(a.photos), "images": a.images, "codec_images": a.codec_images,
                              "max_size": f"{a.size[0]}x{a.size[1]}", "quality": a.quality, "effort": a.effort,
                              "workers": a.workers, "gpus_per_worker": a.gpus_per_worker if device == "cuda" else 0,
                              "batch_size": a.batch_size}
        photos = step("photos", step_photos, a, work)
        step("tests", step_tests, a, work)
        step("codec", step_codec, a, work, device)
        step("actors", step_actors, a, work, device, photos)
        step("compress", step_compress, a, work, device, photos)
    finally:
        if not a.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    report["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    (a.out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n" + headline(report))
    print(f"wrote {a.out / 'gpu-check.json'}" + (f" (work folder kept: {work})" if a.keep_work else ""))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
