#!/usr/bin/env python3
"""TNG of one `bench/rd.py` run against TNG of another, on the same images: BD numbers and the change per quality.

    .venv/bin/python bench/rd_compare.py bench/results/rd-val20/rd.json bench/results/rd-val20-m7/rd.json

The first run is the anchor. Both must have measured the same images (checked); BD numbers as
`bench/rd.py` computes them (mean curves, BD_WINDOW).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tng.evaluation.curves import BD_WINDOW, bd_pair  # noqa: E402


def compare(anchor: dict, test: dict) -> str:
    names = [sorted(r["image"] for r in run["images"]) for run in (anchor, test)]
    if names[0] != names[1]:
        raise SystemExit("the two runs measured different images")
    a, t = anchor["mean"]["TNG"], test["mean"]["TNG"]
    bd = bd_pair(a, t)
    lines = [f"anchor: {anchor['environment']['tng_model']}", f"test:   {test['environment']['tng_model']}",
             f"{len(names[0])} images; BD over {BD_WINDOW[0]:g}–{BD_WINDOW[1]:g} bpp: "
             f"BD-rate {bd['psnr']['bd_rate']:+.2f} %, BD-PSNR {bd['psnr']['bd_quality']:+.3f} dB, "
             f"BD-rate (MS-SSIM) {bd['msssim_db']['bd_rate']:+.2f} %", "",
             "| quality | anchor bpp | anchor dB | test bpp | test dB | ΔPSNR |", "|---:|---:|---:|---:|---:|---:|"]
    by_q = {p["setting"]: p for p in t}
    for p in sorted(a, key=lambda p: p["setting"]):
        q = by_q.get(p["setting"])
        if q:
            lines.append(f"| {p['setting']:g} | {p['bpp']:.4f} | {p['psnr']:.3f} | {q['bpp']:.4f} | {q['psnr']:.3f} | "
                         f"{q['psnr'] - p['psnr']:+.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("anchor", type=Path, help="rd.json of the anchor run")
    ap.add_argument("test", type=Path, help="rd.json of the run compared with it")
    args = ap.parse_args(argv)
    print(compare(*(json.loads(p.read_text()) for p in (args.anchor, args.test))))


if __name__ == "__main__":
    main()
