"""Writes a golden archive: Parquet shards holding a row of every form an archive row can have, and
what each restores to.

    .venv/bin/python tests/golden/make_golden_archive.py

Written once (2026-12-05, archive schema with `setting`, `target_psnr`, `bytes_*`, `pixels_sha256`)
and never regenerated: it stands for archives written by this version, which every later version
must still restore (tests/test_golden.py). A later schema gets its own folder beside this one.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARCHIVE = HERE / "archive-2026-12"

# (folder, `tng compress` options): one run each, keys distinct across runs
RUNS = [
    ("tng", ["--quality", "4", "--effort", "1"]),  # tng (version-2 stream), a JPEG as jpeg-jxl, one kept as source
    ("avif", ["--codec", "avif", "--target-psnr", "32"]),
    ("jxl", ["--codec", "jxl", "--target-psnr", "32"]),
    ("lossless", ["--lossless"]),  # jxl-lossless: gray, RGBA, 16-bit, palette
]


def corpus(root: Path) -> None:
    cat = np.asarray(Image.open(ROOT / "samples/chelsea.png").convert("RGB"))
    coffee = np.asarray(Image.open(ROOT / "samples/coffee.png").convert("RGB"))
    crop = np.ascontiguousarray(cat[60:188, 120:312])  # 192x128
    d = {name: root / name for name, _ in RUNS}
    for folder in d.values():
        folder.mkdir(parents=True)
    Image.fromarray(crop).save(d["tng"] / "tng--cat.png")
    Image.fromarray(np.ascontiguousarray(coffee[:128, :192])).save(d["tng"] / "jpeg-jxl--cup.jpg", quality=90)
    Image.fromarray(crop[:8, :8]).save(d["tng"] / "source--tiny.jpg", quality=90)  # JPEG XL would not be smaller
    Image.fromarray(crop).save(d["avif"] / "avif--cat.png")
    Image.fromarray(np.ascontiguousarray(coffee[100:228, 200:392])).save(d["jxl"] / "jxl--cup.png")
    small = np.ascontiguousarray(coffee[:64, :96])
    Image.fromarray(small[..., 0]).save(d["lossless"] / "jxl-lossless--gray.png")
    Image.fromarray(np.dstack([small, small[..., 2]])).save(d["lossless"] / "jxl-lossless--rgba.png")
    (d["lossless"] / "jxl-lossless--rgb16.png").write_bytes(bytes(imagecodecs.png_encode(small.astype(np.uint16) * 257 + 9)))
    Image.fromarray(small).quantize(16).save(d["lossless"] / "jxl-lossless--palette.png")


def restored_sha256(data: bytes) -> str:
    """What a restored file stands for: its exact pixels' hash where it is a PNG, else its bytes'."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return hashlib.sha256(np.ascontiguousarray(imagecodecs.png_decode(data)).tobytes()).hexdigest()
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    sys.path.insert(0, str(ROOT))  # run as a script from a checkout (tests import `corpus` and leave sys.path be)
    import pyarrow.parquet as pq
    import ray

    from tng.jobs.cli import main as tng

    if ARCHIVE.exists():
        sys.exit(f"{ARCHIVE} exists: golden archives are never regenerated")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus(tmp / "src")
        for folder, opts in RUNS:
            assert tng(["compress", str(tmp / "src" / folder), str(tmp / "archive"), "--workers", "1", *opts]) == 0
        assert tng(["decompress", str(tmp / "archive"), str(tmp / "out"), "--workers", "1"]) == 0
        rows = pq.read_table(tmp / "archive" / "shards").to_pylist()
        expected = {}
        for r in sorted(rows, key=lambda r: r["key"]):
            assert r["status"] == "ok" and r["key"].split("--")[0] == r["codec"], (r["key"], r["codec"])  # KEY: CODEC--name
            out = next(p for p in (tmp / "out").iterdir() if p.stem == Path(r["key"]).stem)
            expected[r["key"]] = {"codec": r["codec"], "restored_as": out.name,
                                  "restored_sha256": restored_sha256(out.read_bytes()), "psnr": r["psnr"]}
        shutil.copytree(tmp / "archive", ARCHIVE)
    (ARCHIVE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    for key, e in expected.items():
        print(key, e["codec"], e["restored_as"])


if __name__ == "__main__":
    main()
