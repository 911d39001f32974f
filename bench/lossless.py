#!/usr/bin/env python3
"""What `tng compress --lossless` keeps of a folder of images that are not JPEGs, and what it saves.

    .venv/bin/python bench/lossless.py ../shared/datasets/val-photos --out bench/results/lossless

Per image: the source file's bytes, the bytes of its exact pixels as lossless JPEG XL (libjxl effort 7
modular through imagecodecs: what `cjxl -d 0 -e 7` makes of the pixels), and what the archive keeps
(codec/classic.py `store_lossless`: the smaller of the two, checked exact), with the time it took.
Writes OUT/lossless.md and OUT/lossless.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tng.codec.classic import LOSSLESS, decode_lossless, encode_lossless, exact_pixels, store_lossless  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from rd import _cpu_name, find_images  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/lossless")
    args = p.parse_args(argv)
    rows = []
    for path in find_images(args.folder, None):
        data = path.read_bytes()
        pixels = exact_pixels(data, 10**9)
        jxl = len(encode_lossless(pixels)) if pixels is not None else None
        t = time.perf_counter()
        stored = store_lossless(data, 10**9)
        seconds = time.perf_counter() - t
        if stored.codec == LOSSLESS:
            assert (decode_lossless(stored.data) == pixels).all()
        rows.append({"image": str(path.relative_to(args.folder)), "source_bytes": len(data), "jxl_bytes": jxl,
                     "kept": stored.codec, "kept_bytes": len(stored.data), "seconds": seconds,
                     "megapixels": pixels.shape[0] * pixels.shape[1] / 1e6 if pixels is not None else None})
        print(rows[-1], flush=True)
    src = sum(r["source_bytes"] for r in rows)
    kept = sum(r["kept_bytes"] for r in rows)
    jxl = sum(r["jxl_bytes"] or r["source_bytes"] for r in rows)
    mp = sum(r["megapixels"] or 0 for r in rows)
    secs = sum(r["seconds"] for r in rows)
    env = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "cpu": _cpu_name(),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    md = (f"# `--lossless` on {len(rows)} images ({mp:.1f} MP)\n\n`{env['command']}`  \n{env['cpu']}, {env['date']}\n\n"
          "| | bytes | vs the sources |\n|---|---:|---:|\n"
          f"| source files | {src:,} | |\n"
          f"| lossless JPEG XL of every image (`cjxl -d 0 -e 7`) | {jxl:,} | {100 * (jxl / src - 1):+.1f} % |\n"
          f"| what `--lossless` keeps ({sum(r['kept'] == LOSSLESS for r in rows)} as JPEG XL, "
          f"{sum(r['kept'] == 'source' for r in rows)} as they are) | {kept:,} | {100 * (kept / src - 1):+.1f} % |\n\n"
          f"Store time {secs / mp:.2f} s/MP (encode, exactness check included), 2 threads.\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lossless.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    (args.out / "lossless.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
