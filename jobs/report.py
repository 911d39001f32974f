"""`tng report ARCHIVE OUT` and `tng info ARCHIVE`: what an archive holds and what it cost.

From the archive's metadata (the current row of each key, see `pipeline/archive.py`): image count,
bytes before and after, savings, the bytes saved per codec (TNG, JPEGs recompressed losslessly,
files kept as they are) and the share of the archive each holds, distributions of bpp / PSNR /
MS-SSIM, breakdowns by source format and resolution, the worst images by PSNR (with original and
decoded thumbnails where the source is reachable and unchanged) and errors by reason. With
--source, an RD study on a reproducible sample of the sources (`evaluation/`, on Ray:
`pipeline/sweep.py`): TNG at qualities 1–8 against JPEG, WebP, AVIF and JPEG XL, BD-rates, and which
quality to choose for a target PSNR with the savings it buys.

Writes OUT/summary.json (every figure), OUT/report.md, OUT/report.html (self-contained: images
embedded) and the same pictures as PNG files under OUT/plots and OUT/thumbs.

Archives made with `tng compress --codec avif|jxl|auto` also get the codec choice: the bytes each
single codec would have needed for the same images at the same per-image targets, from what every
row recorded of the codecs it tried (`bytes_tng`, `bytes_avif`, `bytes_jxl`), beside what the
archive holds.

Definitions: bytes in = the source files of the current `ok` rows; bytes out = their bitstreams
(a row kept as `source` counts its file on both sides); savings = 1 − out/in. bpp and PSNR
statistics are over the lossy rows (TNG, AVIF, JPEG XL; the lossless forms have no PSNR).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import math
import posixpath
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tng.codec.formats import FORMATS, LOSSY
from tng.codec.images import DEFAULT_MAX_PIXELS
from tng.codec.jpeg_transcode import CODEC as JPEG_XL
from tng.codec.registry import DEFAULT_MODEL_ID
from tng.jobs.common import RunError, parse_storage_options

META = ["key", "source_uri", "source_bytes", "source_sha256", "source_format", "width", "height", "mode", "codec", "note",
        "bitstream_bytes", "bpp", "psnr", "ms_ssim", "quality", "model_id", "status", "error", "run_id", "encoded_at",
        "setting", "target_psnr", "bytes_tng", "bytes_avif", "bytes_jxl"]
RESOLUTIONS = [(0, 0.25, "< 0.25 MP"), (0.25, 1, "0.25–1 MP"), (1, 4, "1–4 MP"), (4, 16, "4–16 MP"),
               (16, 64, "16–64 MP"), (64, float("inf"), "≥ 64 MP")]
BASELINE_NAMES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF", "jxl": "JPEG XL"}
CODEC_ORDER = list(FORMATS)
CODEC_LABELS = {name: f.label for name, f in FORMATS.items()}
THUMB_SIDE, CROP_SIDE = 320, 192


@dataclass
class Archive:
    url: str
    rows: "object"  # pandas DataFrame: the current row of each key, metadata columns only
    all_rows: int
    shards: int
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (shard, reason)
    runs: list[dict] = field(default_factory=list)  # manifests of completed runs
    run_ids_in_shards: set = field(default_factory=set)


def load_archive(url: str, opts: dict) -> Archive:
    """Read every shard's metadata; an unreadable shard is listed, not fatal, unless none is readable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tng.pipeline.archive import RUNS, SCHEMA, current_rows, open_fs, shard_paths

    try:
        fs, root = open_fs(url, opts)
        paths = shard_paths(fs, root)
    except Exception as e:
        raise RunError(f"cannot read archive {url}: {type(e).__name__}: {e}") from None
    if not paths:
        what = "is empty" if fs.exists(posixpath.join(root, "shards")) else "has no shards/ folder"
        raise RunError(f"{url} is not a TNG archive with rows: it {what} (make one with `tng compress SRC {url}`)")
    tables, unreadable = [], []
    for p in paths:
        try:
            tables.append(pq.read_table(p, filesystem=fs, columns=META, schema=SCHEMA))
        except Exception as e:
            unreadable.append((p, f"{type(e).__name__}: {e}"))
    if not tables:
        raise RunError(f"no shard of {url} is readable; the first: {unreadable[0][0]}: {unreadable[0][1]}")
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        raise RunError(f"{url} holds no rows")
    runs = []
    for p in sorted(fs.glob(posixpath.join(root, RUNS, "*.json"))):
        try:
            runs.append(json.loads(fs.cat_file(p)))
        except (OSError, ValueError):
            pass  # a manifest is a convenience: the rows are the truth
    df = current_rows(table).to_pandas()
    return Archive(url, df, table.num_rows, len(paths), unreadable, runs, set(table["run_id"].to_pylist()))


# ---------------------------------------------------------------------------------------------- figures

def _stats(values) -> dict | None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if not len(v):
        return None
    q = np.percentile(v, [5, 25, 50, 75, 95])
    return {"count": int(len(v)), "mean": float(v.mean()), "min": float(v.min()), "p5": float(q[0]),
            "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]), "p95": float(q[4]), "max": float(v.max())}


def _group(ok, label: str) -> dict:
    lossy = ok[ok["codec"].isin(LOSSY)]
    bytes_in, bytes_out = int(ok["source_bytes"].sum()), int(ok["bitstream_bytes"].sum())
    return {label: None, "images": int(len(ok)), "kept_as_source": int((ok["codec"] == "source").sum()),
            "jpeg_lossless": int((ok["codec"] == JPEG_XL).sum()),
            "bytes_in": bytes_in, "bytes_out": bytes_out,
            "savings": (1 - bytes_out / bytes_in) if bytes_in else None,
            "mean_bpp": float(lossy["bpp"].mean()) if len(lossy) else None,
            "mean_psnr": float(lossy["psnr"].mean()) if len(lossy) else None}


def by_codec(ok) -> list[dict]:
    """Per codec (TNG, lossless JPEG recompression, kept as source): images, bytes in and out, bytes
    saved, and the share of the archive's images and of its bytes each holds."""
    images, bytes_out = len(ok), int(ok["bitstream_bytes"].sum())
    out = []
    for codec in sorted(set(ok["codec"]), key=lambda c: (CODEC_ORDER.index(c) if c in CODEC_ORDER else 99, c)):
        part = ok[ok["codec"] == codec]
        g = _group(part, "codec")
        g.update(codec=codec, label=CODEC_LABELS.get(codec, codec), saved_bytes=g["bytes_in"] - g["bytes_out"],
                 share_of_images=len(part) / images if images else None,
                 share_of_bytes_out=g["bytes_out"] / bytes_out if bytes_out else None)
        out.append(g)
    return out


def codec_choice(ok) -> dict | None:
    """What the rows coded at a per-image target (--codec other than tng) hold, against what each single
    lossy codec would have needed for the same images at the same targets (the rows' bytes_<codec>; a
    lower bound where that codec's search stopped once it could not win, so each single codec's total
    is at least the figure given). Per codec tried: the images it reaches the target on, their bytes,
    the archive's bytes for those same images, and the images it has no figure for (not tried there,
    or the target is out of its reach)."""
    rows = ok[ok["target_psnr"].notna()]
    if not len(rows):
        return None
    out = {"images": int(len(rows)), "bytes_kept": int(rows["bitstream_bytes"].sum()), "codecs": []}
    for codec in LOSSY:
        col = rows[f"bytes_{codec}"]
        reached = rows[col.notna()]
        if not len(reached) and not (rows["codec"] == codec).any():
            continue  # not tried on these rows (--codec avif tries AVIF alone)
        need, kept = int(col.sum()), int(reached["bitstream_bytes"].sum())
        out["codecs"].append({"codec": codec, "label": CODEC_LABELS[codec], "images_reached": int(len(reached)),
                              "images_not_reached": int(len(rows) - len(reached)), "bytes_needed": need,
                              "bytes_kept_same_images": kept,
                              "saving_vs_codec": (1 - kept / need) if need else None,
                              "chosen": int((rows["codec"] == codec).sum())})
    return out


def by_reason(rows, column: str) -> list[dict]:
    """Rows grouped by the kind of their reason (`column`): an example, the count, up to 5 keys."""
    reasons = []
    for cls, part in rows.groupby(rows[column].fillna("unknown").map(reason_class), sort=False):
        reasons.append({"reason": part[column].iloc[0] or "unknown", "kind": cls, "count": int(len(part)),
                        "keys": sorted(part["key"])[:5]})
    reasons.sort(key=lambda r: (-r["count"], r["kind"]))
    return reasons


def reason_class(reason: str) -> str:
    """Errors grouped by kind: numbers and quoted names (sizes, paths) replaced."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason or "unknown"))[:200]


def archive_figures(a: Archive, worst: int = 6) -> dict:
    """Every figure the report states that comes from the metadata alone."""
    df = a.rows
    ok = df[df["status"] == "ok"]
    tng = ok[ok["codec"] == "tng"]
    lossy = ok[ok["codec"].isin(LOSSY)]
    errors = df[df["status"] != "ok"]
    head = _group(ok, "all")
    del head["all"]
    head.update(keys=int(len(df)), ok=int(len(ok)), errors=int(len(errors)), coded_by_tng=int(len(tng)),
                saved_bytes=head["bytes_in"] - head["bytes_out"],
                ratio=(head["bytes_in"] / head["bytes_out"]) if head["bytes_out"] else None,
                mean_ms_ssim=float(lossy["ms_ssim"].mean()) if lossy["ms_ssim"].notna().any() else None,
                megapixels=float((ok["width"].astype(float) * ok["height"]).sum() / 1e6),
                models={str(int(k)): int(v) for k, v in tng["model_id"].value_counts().sort_index().items()},
                qualities={f"{k:g}": int(v) for k, v in tng["quality"].round(2).value_counts().sort_index().items()})
    mp = ok["width"].astype(float) * ok["height"] / 1e6
    by_res = []
    for lo, hi, label in RESOLUTIONS:
        part = ok[(mp >= lo) & (mp < hi)]
        if len(part):
            g = _group(part, "resolution")
            g["resolution"] = label
            by_res.append(g)
    by_format = []
    for fmt, part in ok.groupby(ok["source_format"].fillna("unknown"), sort=True):
        g = _group(part, "format")
        g["format"] = fmt
        by_format.append(g)
    by_format.sort(key=lambda g: -g["images"])
    kept = ok[(ok["codec"] == "source") & ok["note"].notna()]
    low = lossy[lossy["psnr"].notna()].sort_values(["psnr", "key"]).head(worst)
    times = df["encoded_at"].dropna()
    complete = {r.get("run_id") for r in a.runs}
    return {
        "archive": a.url,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "headline": head,
        "storage": {"shards": a.shards, "unreadable_shards": [{"shard": s, "reason": r} for s, r in a.unreadable],
                    "rows_in_shards": a.all_rows, "runs_complete": len(complete & a.run_ids_in_shards),
                    "runs_incomplete": sorted(a.run_ids_in_shards - complete),
                    "first_encoded": times.min().isoformat() if len(times) else None,
                    "last_encoded": times.max().isoformat() if len(times) else None},
        "distributions": {"bpp": _stats(lossy["bpp"]), "psnr": _stats(lossy["psnr"]),
                          "ms_ssim": _stats(lossy["ms_ssim"])},
        "by_codec": by_codec(ok),
        "codec_choice": codec_choice(ok),
        "by_format": by_format,
        "by_resolution": by_res,
        "worst": [{"key": r.key, "codec": r.codec, "width": int(r.width), "height": int(r.height), "bpp": float(r.bpp),
                   "psnr": float(r.psnr), "ms_ssim": None if r.ms_ssim is None or np.isnan(r.ms_ssim) else float(r.ms_ssim),
                   "quality": None if r.quality is None or np.isnan(r.quality) else float(r.quality),
                   "source_format": r.source_format, "source_uri": r.source_uri,
                   "source_sha256": r.source_sha256, "encoded_at": r.encoded_at.isoformat()}
                  for r in low.itertuples()],
        "errors": by_reason(errors, "error"),
        "kept": by_reason(kept, "note"),
    }


# ---------------------------------------------------------------------------------------------- thumbnails

def source_uri(source: str | None, key: str, recorded: str) -> str:
    """Where the original of `key` is read from: under --source when given, else where it was found."""
    return source.rstrip("/") + "/" + key if source else recorded


def worst_region(a: np.ndarray, b: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the side×side window (on a side/3 grid) where the squared error is largest."""
    h, w = a.shape[:2]
    if h <= side and w <= side:
        return 0, 0
    cell = max(1, side // 3)
    err = ((a.astype(np.int32) - b.astype(np.int32)) ** 2).sum(-1)
    gh, gw = h // cell, w // cell
    if not gh or not gw:  # thinner than a cell (a 2-pixel-high panorama): along the long side only
        line = err.sum(0 if h < w else 1)
        best = int(np.argmax(np.convolve(line, np.ones(side), "valid"))) if len(line) >= side else 0
        return (0, min(best, max(0, w - side))) if h < w else (min(best, max(0, h - side)), 0)
    blocks = err[: gh * cell, : gw * cell].reshape(gh, cell, gw, cell).sum((1, 3))
    k = min(3, gh), min(3, gw)
    c = np.pad(blocks.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    win = c[k[0]:, k[1]:] - c[:-k[0], k[1]:] - c[k[0]:, :-k[1]] + c[:-k[0], :-k[1]]
    y, x = np.unravel_index(np.argmax(win), win.shape)
    return min(y * cell, max(0, h - side)), min(x * cell, max(0, w - side))


def _png(rgb: np.ndarray, thumb: bool) -> bytes:
    from PIL import Image

    im = Image.fromarray(rgb)
    if thumb:
        im.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def thumbnails(url: str, opts: dict, worst: list[dict], source: str | None) -> dict[str, bytes]:
    """Decoded (always) and original (where reachable and unchanged) thumbnails and worst-error crops.

    Each entry of `worst` gets `original` (a note on where it came from, or why it is missing) and
    `pictures` (names in the returned dict).
    """
    import fsspec
    import pyarrow.parquet as pq

    from tng.codec import Codec, TNGError, open_image
    from tng.codec.formats import format_of
    from tng.pipeline.archive import open_fs, shard_paths

    if not worst:
        return {}
    fs, root = open_fs(url, opts)
    want = {(w["key"], w["encoded_at"]) for w in worst}
    streams = {}
    for p in shard_paths(fs, root):
        try:
            t = pq.read_table(p, filesystem=fs, columns=["key", "encoded_at", "bitstream", "model_id", "codec"],
                              filters=[("key", "in", sorted({k for k, _ in want}))])
        except Exception:
            continue  # listed as unreadable by load_archive
        for k, at, data, model, form in zip(*(t[c].to_pylist() for c in ("key", "encoded_at", "bitstream", "model_id",
                                                                          "codec"))):
            if (k, at.isoformat()) in want:
                streams[k] = (data, model, form)
    pictures, codecs = {}, {}
    for i, w in enumerate(worst, 1):
        w["pictures"] = {}
        if w["key"] not in streams:
            w["original"] = "bitstream not found"
            continue
        data, model, form = streams[w["key"]]
        try:
            if form == "tng":
                codec = codecs.setdefault(model, Codec(model_id=model, device="cpu"))
                decoded = np.asarray(codec.decode(data).image.convert("RGB"))
            else:
                decoded = np.ascontiguousarray(format_of(form).restore(data, files=False).rgb)
        except TNGError as e:
            w["original"] = f"bitstream does not decode: {e}"
            continue
        original, uri = None, source_uri(source, w["key"], w["source_uri"])
        try:
            with fsspec.open(uri, "rb", **opts) as f:
                raw = f.read()
            if hashlib.sha256(raw).hexdigest() != w["source_sha256"]:
                w["original"] = f"{uri} has changed since it was archived"
            else:
                original = open_image(raw).rgb
                w["original"] = uri
        except (OSError, TNGError, ValueError) as e:
            w["original"] = f"not reachable: {type(e).__name__}: {e}"
        y, x = worst_region(original, decoded, CROP_SIDE) if original is not None else (
            max(0, (decoded.shape[0] - CROP_SIDE) // 2), max(0, (decoded.shape[1] - CROP_SIDE) // 2))
        w["crop"] = {"x": int(x), "y": int(y), "side": CROP_SIDE}
        crop = (slice(y, y + CROP_SIDE), slice(x, x + CROP_SIDE))
        views = {"decoded": (decoded, True), "decoded-crop": (decoded[crop], False)}
        if original is not None:
            views.update({"original": (original, True), "original-crop": (original[crop], False)})
        for name, (rgb, thumb) in views.items():
            fname = f"{i:02d}-{name}.png"
            pictures[fname] = _png(np.ascontiguousarray(rgb), thumb)
            w["pictures"][name] = fname
    return pictures


# ---------------------------------------------------------------------------------------------- RD study

def sample_rows(df, n: int, seed: int):
    """n rows spread over the archive: keys sorted, cut into n strata, one drawn from each by seed."""
    rows = df.sort_values("key").reset_index(drop=True)
    if n >= len(rows):
        return rows
    rng = random.Random(seed)
    edges = np.linspace(0, len(rows), n + 1).astype(int)
    return rows.iloc[[rng.randrange(lo, hi) for lo, hi in zip(edges, edges[1:])]].reset_index(drop=True)


def rd_study(a: Archive, args: argparse.Namespace, opts: dict) -> tuple[dict, bytes | None]:
    from tng.evaluation.curves import bd_results, mean_curves, rate_at_psnr, setting_at_psnr
    from tng.evaluation.measure import baseline_encoders
    from tng.pipeline.sweep import sweep_sources

    baselines = parse_baselines(args.baselines)
    available = tuple(baseline_encoders(1, baselines))
    ok = a.rows[a.rows["status"] == "ok"]
    sample = sample_rows(ok, args.sample, args.seed)
    items = [{"key": r.key, "uri": source_uri(args.source, r.key, r.source_uri)} for r in sample.itertuples()]
    print(f"RD study: {len(items)} images from {args.source}, TNG q1–8 and {', '.join(available) or 'no baselines'}",
          file=sys.stderr)
    results = sweep_sources(items, model_id=args.model, baselines=available, workers=args.workers,
                            storage_options=opts, max_pixels=args.max_pixels, address=args.address,
                            effort=args.effort)
    measured = [r for r in results if not r["error"]]
    study = {"source": args.source, "seed": args.seed, "requested": args.sample, "model_id": args.model,
             "effort": args.effort,
             "baselines": list(available), "missing_baselines": [b for b in baselines if b not in available],
             "images": [{"key": r["key"], "width": r["width"], "height": r["height"]} for r in measured],
             "failed": [{"key": r["key"], "error": r["error"]} for r in results if r["error"]]}
    if not measured:
        study["error"] = "no sampled source image could be read"
        return study, None
    curves = mean_curves(measured)
    study["curves"] = curves
    study["bd"] = bd_results(curves, [("TNG", b) for b in available])
    by_key = sample.set_index("key")
    src_bpp = float(np.mean([by_key.loc[r["key"], "source_bytes"] * 8 / (r["width"] * r["height"]) for r in measured]))
    pixels = float((ok["width"].astype(float) * ok["height"]).sum())
    bytes_in = float(ok["source_bytes"].sum())
    study["source_bpp"] = src_bpp
    targets = []
    for t in args.targets or default_targets(curves["TNG"]):
        q, bpp = setting_at_psnr(curves["TNG"], t), rate_at_psnr(curves["TNG"], t)
        row = {"psnr": t, "quality": q, "tng_bpp": bpp,
               "savings_vs_source": (1 - bpp / src_bpp) if bpp else None,
               "projected_archive_bytes": bpp * pixels / 8 if bpp else None,
               "projected_savings": (1 - bpp * pixels / 8 / bytes_in) if bpp and bytes_in else None}
        for b in available:
            rb = rate_at_psnr(curves[b], t)
            row[f"{b.lower()}_bpp"] = rb
            row[f"size_vs_{b.lower()}"] = (bpp / rb - 1) if bpp and rb else None
        targets.append(row)
    study["targets"] = targets
    from tng.evaluation.plots import rd_plot

    return study, rd_plot(curves, f"{len(measured)} source images sampled from the archive, mean over images")


def default_targets(curve: list[dict], most: int = 6) -> list[float]:
    """Whole dB values inside TNG's measured mean-PSNR range, at most `most` of them, evenly spread."""
    lo, hi = math.ceil(min(p["psnr"] for p in curve)), math.floor(max(p["psnr"] for p in curve))
    if hi < lo:
        return [round(curve[len(curve) // 2]["psnr"], 1)]
    step = max(1, math.ceil((hi - lo + 1) / most))
    return [float(t) for t in range(lo, hi + 1, step)]


def parse_baselines(text: str) -> tuple[str, ...]:
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown:
        raise RunError(f"--baselines: unknown {', '.join(unknown)} (choose from {', '.join(BASELINE_NAMES)})")
    return tuple(BASELINE_NAMES[n] for n in names)


# ---------------------------------------------------------------------------------------------- entry points

def report(args: argparse.Namespace) -> int:
    from tng.evaluation import plots
    from tng.jobs import report_render

    opts = parse_storage_options(args.storage_option)
    if args.sample < 1:
        raise RunError(f"--sample must be at least 1, got {args.sample}")
    a = load_archive(args.archive, opts)
    fig = archive_figures(a, args.worst)
    pictures = {f"thumbs/{k}": v for k, v in thumbnails(args.archive, opts, fig["worst"], args.source).items()}
    tng = a.rows[(a.rows["status"] == "ok") & (a.rows["codec"] == "tng")]
    for name, label in (("bpp", "bits per pixel (whole file)"), ("psnr", "PSNR, RGB (dB)"), ("ms_ssim", "MS-SSIM")):
        if fig["distributions"][name]:
            pictures[f"plots/{name}.png"] = plots.histogram(tng[name].tolist(), label, f"{label}: {len(tng)} images")
    if args.source:
        fig["rd_study"], rd_png = rd_study(a, args, opts)
        if rd_png:
            pictures["plots/rd.png"] = rd_png
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in pictures.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    (out / "summary.json").write_text(json.dumps(fig, indent=1, default=str) + "\n")
    (out / "report.md").write_text(report_render.markdown(fig, pictures))
    (out / "report.html").write_text(report_render.html(fig, pictures))
    print(info_text(fig))
    st = fig.get("rd_study")
    if st and "bd" in st:
        print(f"RD study on {len(st['images'])} sources: BD-rate of TNG vs " + ", ".join(
            f"{r['anchor']} {r['psnr']['bd_rate']:+.1f}%" if r["psnr"]["bd_rate"] is not None else f"{r['anchor']} n/a"
            for r in st["bd"]))
    print(f"wrote {out / 'report.html'}, {out / 'report.md'}, {out / 'summary.json'}")
    return 0


def info_text(fig: dict) -> str:
    h, s = fig["headline"], fig["storage"]
    mb = lambda n: f"{n / 1e6:,.1f} MB"  # noqa: E731
    lines = [f"archive {fig['archive']}: {h['keys']:,} images: {h['ok']:,} ok ({h['coded_by_tng']:,} coded by TNG, "
             f"{h['jpeg_lossless']:,} JPEGs recompressed losslessly, {h['kept_as_source']:,} kept as source), "
             f"{h['errors']:,} errors"]
    if h["ok"]:
        lines.append(f"bytes: {mb(h['bytes_in'])} in, {mb(h['bytes_out'])} out, savings "
                     f"{100 * h['savings']:.1f}%" + (f" ({h['ratio']:.2f}x)" if h["ratio"] else ""))
    for c in fig["by_codec"]:
        lines.append(f"  {c['label']}: {c['images']:,} images ({100 * c['share_of_images']:.1f}%), "
                     f"{mb(c['bytes_in'])} -> {mb(c['bytes_out'])}, saved {mb(c['saved_bytes'])}"
                     + (f" ({100 * c['savings']:.1f}%)" if c["savings"] is not None else "")
                     + (f", {100 * c['share_of_bytes_out']:.1f}% of the archive's bytes"
                        if c["share_of_bytes_out"] is not None else ""))
    if h["mean_bpp"] is not None:
        d = fig["distributions"]
        lines.append(f"lossy rows: mean {h['mean_bpp']:.3f} bpp (median {d['bpp']['median']:.3f}), mean PSNR "
                     f"{h['mean_psnr']:.2f} dB (5% of images below {d['psnr']['p5']:.2f})"
                     + (f", mean MS-SSIM {h['mean_ms_ssim']:.4f}" if h["mean_ms_ssim"] is not None else ""))
    lines.append(f"shards: {s['shards']} ({len(s['unreadable_shards'])} unreadable), {s['rows_in_shards']:,} rows; "
                 f"runs: {s['runs_complete']} complete, {len(s['runs_incomplete'])} without a manifest; "
                 f"last encoded {s['last_encoded']}")
    for u in s["unreadable_shards"]:
        lines.append(f"warning: unreadable shard {u['shard']}: {u['reason']}")
    return "\n".join(lines)


def info(args: argparse.Namespace) -> int:
    a = load_archive(args.archive, parse_storage_options(args.storage_option))
    print(info_text(archive_figures(a, worst=0)))
    return 0


def _targets(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected dB values separated by commas, got {text!r}") from None


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", help="folder or fsspec URL of an archive made by `tng compress`")
    p.add_argument("out", help="folder for report.html, report.md, summary.json and the pictures")
    p.add_argument("--source", help="the SRC the archive was made from: thumbnails of originals and an RD study")
    p.add_argument("--sample", type=int, default=16, help="images in the RD study (spread over the archive)")
    p.add_argument("--seed", type=int, default=0, help="seed of the RD study's sample")
    p.add_argument("--baselines", default="jpeg,webp,avif,jxl",
                   help=f"classic codecs in the RD study, comma-separated from {','.join(BASELINE_NAMES)}")
    p.add_argument("--targets", type=_targets, help="PSNRs (dB) for the quality-to-choose table, comma-separated "
                                                    "(default: whole dB values across TNG's measured range)")
    p.add_argument("--worst", type=int, default=6, help="how many of the worst images by PSNR to show")
    p.add_argument("--model", type=int, default=DEFAULT_MODEL_ID, help="TNG model id in the RD study")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    # and from jobs/common.py's parents (jobs/cli.py): --effort (the RD study codes as `tng compress
    # --effort` would), --workers (codec actors of the RD study), --address, --storage-option


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", help="folder or fsspec URL of an archive made by `tng compress`")
