#!/usr/bin/env python3
"""What `tng compress --codec auto` saves: per image and target, the smallest file of each codec that
reaches the target, and auto's pick, summed over a folder of photos.

    .venv/bin/python bench/codec_choice.py ../shared/datasets/val-photos --out bench/results/codec-choice

Targets per image: the PSNR TNG reaches at each of --qualities (what `--codec auto --quality Q` aims
at) and each fixed --targets PSNR (what `--target-psnr X` aims at). Every codec is searched to the
end for every (image, target), without the early stop the pipeline makes once a codec cannot win, so
that each single codec's total is exact; auto's file is the smallest of them, as the pipeline keeps.
TNG runs at --effort (the pipeline's default unless given); AVIF and JPEG XL as codec/classic.py runs
them. An image a codec cannot bring to a target is counted apart: that codec alone could not serve
the archive at that target (auto falls back on the others, as the pipeline does). Writes
OUT/codec-choice.md and OUT/codec-choice.json; saves each image's results as it goes and resumes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tng.codec import Codec, open_image  # noqa: E402
from tng.codec.classic import AVIF, JPEG_XL, search  # noqa: E402
from tng.codec.effort import DEFAULT_EFFORT  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from rd import _cpu_name, find_images  # noqa: E402

CODECS = ("tng", "avif", "jxl")


def image_results(codec: Codec, path: Path, qualities: list[float], targets: list[float]) -> list[dict]:
    """Per target of one image: the bytes each codec needs (None: cannot reach it) and their PSNRs."""
    src = open_image(path)
    out = []
    cases = [(f"q{q:g}", None, q) for q in qualities] + [(f"{t:g} dB", t, None) for t in targets]
    for label, target, quality in cases:
        tng = codec.encode(src, quality=quality) if quality else codec.encode(src, target_psnr=target)
        target = target if target is not None else tng.psnr
        row = {"target": label, "psnr_target": target, "bytes": {}, "psnr": {}}
        if tng.target_met and tng.psnr >= target:
            row["bytes"]["tng"], row["psnr"]["tng"] = len(tng.data), tng.psnr
        for lossy in (AVIF, JPEG_XL):
            found, _ = search(lossy, src, target)
            if found is not None:
                row["bytes"][lossy.name], row["psnr"][lossy.name] = len(found.data), found.psnr
        out.append(row)
    return out


def summarise(state: dict) -> list[dict]:
    """Per target: each codec's total over the images it reaches, the images it does not, and auto's total."""
    rows = []
    labels = [r["target"] for r in next(iter(state["images"].values()))]
    for i, label in enumerate(labels):
        per_image = [results[i] for results in state["images"].values()]
        row = {"target": label, "images": len(per_image), "auto_bytes": 0, "auto_unreached": 0, "codecs": {},
               "auto_picks": {c: 0 for c in CODECS}}
        for r in per_image:
            reached = {c: n for c, n in r["bytes"].items()}
            if not reached:
                row["auto_unreached"] += 1
                continue
            pick = min(reached, key=reached.get)
            row["auto_picks"][pick] += 1
            row["auto_bytes"] += reached[pick]
            assert r["psnr"][pick] >= r["psnr_target"]  # every image auto stores meets its target
        for c in CODECS:
            have = [r for r in per_image if c in r["bytes"]]
            total = sum(r["bytes"][c] for r in have)
            auto_same = sum(min(r["bytes"].values()) for r in have)
            row["codecs"][c] = {"images": len(have), "bytes": total, "auto_bytes_same_images": auto_same,
                                "auto_saving": 1 - auto_same / total if total else None}
        rows.append(row)
    return rows


def _saving(share: float) -> str:
    return "0.0 %" if round(100 * share, 1) == 0 else f"−{100 * share:.1f} %"


def markdown(env: dict, rows: list[dict]) -> str:
    lines = [f"# Per-image codec choice (`--codec auto`), {env['images']} images, TNG effort {env['effort']}", "",
             f"`{env['command']}`  ", f"{env['cpu']}, {env['date']}", "",
             "Per target: bytes of auto's files (the smallest of TNG, AVIF, JPEG XL reaching each image's target), "
             "and each single codec's total over the images it reaches, with auto's saving against it on the "
             "same images.", "",
             "| target | auto: MB (picks TNG/AVIF/JXL) | TNG: MB (images) | auto vs TNG | AVIF: MB (images) | "
             "auto vs AVIF | JPEG XL: MB (images) | auto vs JPEG XL |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [r["target"], f"{r['auto_bytes'] / 1e6:.3f} ({'/'.join(str(r['auto_picks'][c]) for c in CODECS)})"]
        for c in CODECS:
            x = r["codecs"][c]
            cells += [f"{x['bytes'] / 1e6:.3f} ({x['images']})",
                      "—" if x["auto_saving"] is None else _saving(x["auto_saving"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/codec-choice")
    p.add_argument("--qualities", default="2,4,6,8")
    p.add_argument("--targets", default="38,42")
    p.add_argument("--effort", type=int, default=DEFAULT_EFFORT)
    p.add_argument("--limit", type=int)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    qualities = [float(q) for q in args.qualities.split(",") if q]
    targets = [float(t) for t in args.targets.split(",") if t]
    state_path = args.out / "codec-choice.json"
    settings = {"qualities": qualities, "targets": targets, "effort": args.effort}
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("settings") != settings:
        state = {"settings": settings, "images": {}}
    codec = Codec(device="cpu", effort=args.effort)
    for path in find_images(args.folder, args.limit):
        name = str(path.relative_to(args.folder))
        if name not in state["images"]:
            state["images"][name] = image_results(codec, path, qualities, targets)
            state_path.write_text(json.dumps(state))
            print(name, [(r["target"], r["bytes"]) for r in state["images"][name]], flush=True)
    rows = summarise(state)
    env = {"command": shlex.join([Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)]),
           "cpu": _cpu_name(), "machine": platform.machine(), "effort": args.effort, "images": len(state["images"]),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    state.update(environment=env, summary=rows)
    state_path.write_text(json.dumps(state, indent=1))
    md = markdown(env, rows)
    (args.out / "codec-choice.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
