"""Driver memory of `tng report` and `tng audit --source` as the archive grows (issue 32, item 4).

    .venv/bin/python bench/driver_memory.py --keys 20000 200000 [--commands report audit]
                                            [--dir /tmp/tng-driver-memory-bench]

For each size, two archives written directly with pyarrow (made once, kept in --dir), each of that
many keys in shards of 1,000 rows, 5 % of the keys then written again by a second run (so that the
current-row rule has work to do):
- report: metadata rows of every form (TNG, AVIF, JPEG XL, recompressed JPEGs, files kept as source
  with notes, errors of a few kinds), random figures and sizes, empty bitstreams but for JPEG XL's (a
  tiny real file: the report decodes the worst images' streams for their thumbnails);
- audit: rows the audit can check: lossy JPEG XL rows (90 %) holding one of 8 tiny real JPEG XL
  files, whose sources are PNGs under SRC (hard links), rows kept as source, errors.
Then `tng report ARCHIVE OUT --worst 6` and `tng audit ARCHIVE --source SRC --report OUT/audit.json
--workers 1` in fresh processes; the driver's peak RSS is its VmHWM (bench/listing_scale.py's `run`),
and its peak private memory (RssAnon) beside it. Scratch files (the report's spill, Ray's session)
go under --dir/tmp (TMPDIR). Run the code of another checkout with PYTHONPATH (BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from listing_scale import FOLDERS, run  # bench/ is sys.path[0] when run as a script
from tng.codec import classic, open_image, psnr
from tng.pipeline.archive import SCHEMA, SHARDS, table_bytes

SHARD_ROWS = 1000
REWRITTEN = 0.05  # share of the keys a second run writes again
VARIANTS = 8  # tiny images of the audit's archive, each with its own PSNR
ERRORS = ["cannot identify image file '{k}'", "image of {n} x {n} pixels exceeds --max-pixels 100000000",
          "truncated file: {n} bytes missing", "unsupported mode 'CMYK;{n}'"]
NOTES = ["no codec made it smaller than the source ({n} bytes)", "JPEG XL cannot transcode this JPEG exactly"]


def variants() -> list[dict]:
    """Tiny PNG sources and their lossy JPEG XL files, with what the audit will recompute for them."""
    out = []
    for v in range(VARIANTS):
        rng = np.random.default_rng(v)
        y, x = np.mgrid[0:16, 0:16]
        px = np.clip(np.stack([x * 16, y * 16, (x + y) * 8], -1) + rng.normal(0, 4 + 6 * v, (16, 16, 3)), 0,
                     255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, "PNG")
        png = buf.getvalue()
        jxl = classic.JPEG_XL.encode(px, 1.0 + v)
        decoded = classic.JPEG_XL.decode(jxl)
        out.append({"png": png, "jxl": jxl, "decoded_sha256": classic.pixels_sha256(decoded),
                    "source_sha256": hashlib.sha256(png).hexdigest(), "psnr": psnr(open_image(png).rgb, decoded)})
    return out


def key_of(i: int) -> str:
    return f"f{i % FOLDERS:03d}/img{i:08d}.png"


def report_row(i: int, rng: random.Random, forms: list[dict]) -> dict:
    """Metadata of every form, what `tng report` reads; no bitstream but JPEG XL's."""
    w, h = rng.choice([(320, 240), (640, 480), (1600, 1200), (4000, 3000), (6000, 4000), (12000, 9000)])
    src_bytes = int(w * h * rng.uniform(0.3, 3))
    row = {"key": key_of(i), "source_uri": f"/src/{key_of(i)}", "source_bytes": src_bytes, "source_sha256": f"{i:064x}",
           "source_format": rng.choice(["JPEG", "PNG", "WEBP", "TIFF"]), "width": w, "height": h, "mode": "RGB",
           "status": "ok", "bitstream": b"", "model_id": None}
    kind = rng.random()
    if kind < 0.05:
        return {**row, "status": "error", "codec": None,
                "error": rng.choice(ERRORS).format(k=key_of(i), n=rng.randrange(10**6))}
    if kind < 0.15:
        return {**row, "codec": "source", "bitstream_bytes": src_bytes,
                "note": rng.choice(NOTES).format(n=src_bytes) if rng.random() < 0.5 else None}
    if kind < 0.25:
        return {**row, "codec": "jpeg-jxl", "source_format": "JPEG", "bitstream_bytes": int(src_bytes * 0.86)}
    codec = "tng" if kind < 0.85 else rng.choice(["avif", "jxl"])
    bpp = rng.lognormvariate(-0.7, 0.6)
    out = int(bpp * w * h / 8)
    target = rng.uniform(28, 40) if codec != "tng" or rng.random() < 0.3 else None
    return {**row, "codec": codec, "bitstream": forms[0]["jxl"] if codec == "jxl" else b"", "bitstream_bytes": out,
            "bpp": bpp, "psnr": rng.gauss(32, 3),
            "ms_ssim": min(1.0, rng.gauss(0.96, 0.02)),
            "quality": round(rng.uniform(1, 8), 2) if codec == "tng" else None,
            "model_id": rng.choice([6, 7]) if codec == "tng" else None, "setting": rng.uniform(1, 90),
            "target_psnr": target, **({f"bytes_{c}": int(out * rng.uniform(0.8, 1.6)) for c in ("tng", "avif", "jxl")}
                                      if target else {})}


def audit_row(i: int, rng: random.Random, forms: list[dict]) -> dict:
    """A row `tng audit --source` checks for real: a tiny JPEG XL file, or the source kept as it is."""
    v = forms[i % VARIANTS]
    row = {"key": key_of(i), "source_uri": f"/src/{key_of(i)}", "source_bytes": len(v["png"]),
           "source_sha256": v["source_sha256"], "source_format": "PNG", "width": 16, "height": 16, "mode": "RGB",
           "status": "ok"}
    kind = rng.random()
    if kind < 0.05:
        return {**row, "status": "error", "error": rng.choice(ERRORS).format(k=key_of(i), n=rng.randrange(10**6))}
    if kind < 0.10:
        return {**row, "codec": "source", "bitstream": v["png"], "bitstream_bytes": len(v["png"]),
                "decoded_sha256": v["source_sha256"]}
    return {**row, "codec": "jxl", "bitstream": v["jxl"], "bitstream_bytes": len(v["jxl"]),
            "bpp": len(v["jxl"]) * 8 / 256, "psnr": v["psnr"], "decoded_sha256": v["decoded_sha256"],
            "setting": 1.0 + i % VARIANTS}


def make_archive(dst: Path, keys: int, kind: str) -> Path:
    """`keys` rows by run 1, then REWRITTEN of them again by run 2 (one second later), in shards."""
    done = dst / ".complete"
    if done.exists():
        return dst
    subprocess.run(["rm", "-rf", str(dst)], check=True)
    (dst / SHARDS).mkdir(parents=True)
    forms = variants()
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    runs = [("bench-1", range(keys)), ("bench-2", range(0, keys, round(1 / REWRITTEN)))]
    for hours, (run_id, ids) in enumerate(runs):
        rng = random.Random(run_id)
        rows = []
        for n, i in enumerate(ids):
            row = report_row(i, rng, forms) if kind == "report" else audit_row(i, rng, forms)
            rows.append({**row, "run_id": run_id, "encoded_at": t0 + dt.timedelta(hours=hours, microseconds=n)})
            if len(rows) == SHARD_ROWS:
                _write(dst, run_id, n // SHARD_ROWS, rows)
                rows = []
        if rows:
            _write(dst, run_id, len(ids) // SHARD_ROWS, rows)
    done.touch()
    return dst


def make_src(d: Path, keys: int) -> Path:
    """The audit archive's sources: a hard link to its variant's PNG at every key."""
    src = d / f"src-{keys}"
    done = src / ".complete"
    if done.exists():
        return src
    originals = d / "variants"
    originals.mkdir(parents=True, exist_ok=True)
    for v, form in enumerate(variants()):
        (originals / f"{v}.png").write_bytes(form["png"])
    for i in range(keys):
        path = src / key_of(i)
        if i < FOLDERS:
            path.parent.mkdir(parents=True, exist_ok=True)
        os.link(originals / f"{i % VARIANTS}.png", path)
    done.touch()
    return src


def _write(dst: Path, run_id: str, part: int, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    (dst / SHARDS / f"{run_id}-{part:06d}-000.parquet").write_bytes(table_bytes(table))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--commands", nargs="+", choices=["report", "audit"], default=["report", "audit"])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/tng-driver-memory-bench"))
    args = ap.parse_args()
    tmp = args.dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(tmp)  # the report's spill and Ray's session files: not /tmp
    tng = [sys.executable, "-c", "import sys; from tng.jobs.cli import main; sys.exit(main(sys.argv[1:]))"]
    for keys in args.keys:
        for command in args.commands:
            archive = make_archive(args.dir / f"archive-{command}-{keys}", keys, command)
            out = args.dir / f"out-{command}-{keys}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            if command == "report":
                cmd = [*tng, "report", str(archive), str(out), "--worst", "6"]
            else:
                out.mkdir()
                cmd = [*tng, "audit", str(archive), "--source", str(make_src(args.dir, keys)), "--report",
                       str(out / "audit.json"), "--workers", "1"]
            seconds, rss, anon, summary = run(cmd)
            print(f"{keys:>9,} keys  {command:<6} {seconds:7.1f} s  driver peak RSS {rss:6.0f} MB  "
                  f"private {anon:6.0f} MB   [{summary[:100]}]", flush=True)


if __name__ == "__main__":
    main()
