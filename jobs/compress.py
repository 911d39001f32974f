"""`tng compress SRC DST`: every file under SRC becomes one archive row in Parquet shards under DST.

The run itself (list, less what the archive holds, load, code, write shards and a manifest) is
pipeline/compress_graph.py; here are the command's arguments, the call and the summary it prints.

Exit status 0 when the run completed (per-image failures are `error` rows), 1 when the run itself
could not: SRC unreadable, DST unwritable, Ray failure.
"""
from __future__ import annotations

import argparse
import sys

from tng.codec.classic import CHOICES, DEFAULT_CHOICE, LOSSY, unavailable
from tng.codec.images import DEFAULT_MAX_PIXELS
from tng.codec.jpeg_transcode import DEFAULT_JPEG_CHOICE, JPEG_CHOICES
from tng.codec.registry import DEFAULT_MODEL_ID
from tng.jobs.common import RunError, parse_storage_options
from tng.pipeline.compress_graph import CompressSettings, compress_run


def settings(args: argparse.Namespace) -> CompressSettings:
    """The run's settings from `tng compress`'s arguments."""
    if args.lossless and args.codec != DEFAULT_CHOICE:
        raise RunError(f"--lossless keeps every file without loss: it takes no --codec {args.codec}")
    if args.lossless and args.jpeg == "tng":
        raise RunError("--lossless keeps every file without loss: JPEGs too, so it takes no --jpeg tng")
    for name in (c for c in LOSSY if args.codec in (c, "auto")):  # the classic codecs the run will try
        if unavailable(name):
            raise RunError(f"--codec {args.codec} needs {unavailable(name)}")
    return CompressSettings(
        quality=args.quality, target_psnr=args.target_psnr, model_id=args.model, effort=args.effort,
        codec=args.codec, lossless=args.lossless, jpeg=args.jpeg,
        max_pixels=args.max_pixels, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        batch_size=args.batch_size, rows_per_shard=args.rows_per_shard, incremental=args.incremental,
        listing=args.listing, max_error_share=args.max_error_share, in_process_files=args.in_process_files)


def compress(args: argparse.Namespace) -> dict:
    """The run of `tng compress ARGS` (pipeline/compress_graph.py); returns its figures."""
    return compress_run(args.src, args.dst, settings(args), parse_storage_options(args.storage_option), args.address)


def print_summary(s: dict) -> None:
    from tng.codec.formats import FORMATS

    mb = lambda n: f"{n / 1e6:,.1f} MB"  # noqa: E731
    codecs = ", ".join(f"{n} {FORMATS[c].label if c in FORMATS else c}" for c, n in s["by_codec"].items()) or "none"
    print(f"run {s['run_id']}: {s['listed']} files, {s['processed']} processed, {s['skipped_unchanged']} unchanged "
          f"(skipped), {s['ok']} ok ({codecs}), {s['errors']} errors")
    if s["ok"]:
        print(f"bytes in {mb(s['bytes_in'])}, out {mb(s['bytes_out'])}, savings {100 * s['savings']:.1f}%"
              + (f", mean {s['mean_bpp']:.3f} bpp, mean PSNR {s['mean_psnr']:.2f} dB" if s["mean_bpp"] else ""))
    for reason, n in s["errors_by_reason"].items():
        print(f"  error x{n}: {reason}")


def _share(text: str) -> float:
    v = float(text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, got {text}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """compress's own arguments; --workers, --address, --storage-option, --in-process-files and
    --effort come from the parents in jobs/common.py (jobs/cli.py)."""
    p.add_argument("src", help="folder or fsspec URL of the images (s3://bucket/prefix, gs://..., path)")
    p.add_argument("dst", help="folder or fsspec URL of the archive")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quality", "-q", type=float, default=4.0, help="1 (smallest) to 8 (best); default 4")
    g.add_argument("--target-psnr", type=float, help="per image, the lowest quality reaching this PSNR")
    p.add_argument("--codec", choices=CHOICES, default=DEFAULT_CHOICE,
                   help="how sources other than JPEG are coded: 'tng'; 'avif' or 'jxl' (lossy AVIF / JPEG XL, the "
                        "smallest file reaching the target: --target-psnr, or with --quality the PSNR TNG reaches "
                        "at that quality on the image); 'auto': per image, the smallest of TNG, AVIF and JPEG XL "
                        "that reaches it (never larger than TNG alone; targets TNG cannot reach go to the others). "
                        f"Each row records what every codec tried needed; default {DEFAULT_CHOICE}")
    p.add_argument("--lossless", action="store_true",
                   help="keep every source without loss: JPEGs as --jpeg says (lossless by default), other files "
                        "as their exact pixels in lossless JPEG XL (alpha, gray and 16 bits kept), or as they are "
                        "where that is smaller")
    p.add_argument("--jpeg", choices=JPEG_CHOICES, default=DEFAULT_JPEG_CHOICE,
                   help="JPEG sources: 'lossless' recompresses them with JPEG XL so that decompress gives back the "
                        "original file byte for byte (kept as they are where that is not possible or not smaller); "
                        "'tng' codes their pixels with TNG (a second lossy generation); 'keep' keeps them as they "
                        f"are; default {DEFAULT_JPEG_CHOICE}")
    p.add_argument("--listing", metavar="FILE_OR_URL",
                   help="take SRC's keys from this listing instead of listing SRC: an S3 Inventory manifest.json, "
                        "a GCS inventory report or other CSV/Parquet table with a key column, or a text file of "
                        "keys (one per line); rows outside SRC are left out")
    p.add_argument("--incremental", action="store_true", help="skip keys already archived with the same content")
    p.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per actor (0: CPU)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch; on a GPU, tiles of equal size in a batch share network passes (four 1024² tiles at once)")
    p.add_argument("--rows-per-shard", type=int, default=1000, help="upper bound of rows in one Parquet shard")
    p.add_argument("--compact-after", action="store_true",
                   help="after the run, compact the archive (`tng compact`: few shards, current rows only)")
    p.add_argument("--max-error-share", type=_share, default=1.0, metavar="F",
                   help="exit 1 when more than this share (0-1) of the processed files became error rows; "
                        "the rows are written either way (default 1: never)")
    p.add_argument("--model", type=int, default=DEFAULT_MODEL_ID, help="model id (see `tng models`)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)


def main(args: argparse.Namespace) -> int:
    """Exit 0 when the run completed; 1 when more than --max-error-share of the files it processed
    became `error` rows (a scheduled run must fail visibly when, say, the workers cannot read S3)."""
    s = compress(args)
    print_summary(s)
    if args.compact_after:
        from tng.jobs.compact import run_compaction, summary_line

        print(summary_line(run_compaction(args.dst, parse_storage_options(args.storage_option))))
    if s["processed"] and s["errors"] > args.max_error_share * s["processed"]:
        print(f"tng: error: {s['errors']} of {s['processed']} files processed failed, more than "
              f"--max-error-share {args.max_error_share:g}", file=sys.stderr)
        return 1
    return 0
