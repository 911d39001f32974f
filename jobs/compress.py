"""`tng compress SRC DST`: every file under SRC becomes one archive row in Parquet shards under DST.

    list SRC (tasks, or read a --listing manifest; pipeline/listing.py) ─▶ with --incremental, less what
      the archive holds (a distributed anti-join; pipeline/pending.py) ─▶ load_batch (tasks: read, hash,
      decode, validate; JPEGs recompressed losslessly or kept, per --jpeg) ─▶ CompressActor pool
      ─▶ ShardSink (atomic Parquet shards) ─▶ runs/{run_id}.json manifest + summary

The keys pass through Ray's object store, never through the driver: its memory does not grow with
SRC or with the archive.

Exit status 0 when the run completed (per-image failures are `error` rows), 1 when the run itself
could not: SRC unreadable, DST unwritable, Ray failure.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import posixpath
import sys
import uuid

from codec.images import DEFAULT_MAX_PIXELS
from codec.jpeg_transcode import CODEC as JPEG_XL, DEFAULT_JPEG_CHOICE, JPEG_CHOICES
from codec.registry import DEFAULT_MODEL_ID

# pyarrow, fsspec and Ray are imported where used: `tng encode` must not need the pipeline extra.


class RunError(Exception):
    """The run itself cannot proceed (as opposed to one image failing)."""


def parse_storage_options(items: list[str]) -> dict:
    opts = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise RunError(f"--storage-option needs KEY=VALUE, got {item!r}")
        opts[k] = json.loads(v) if v in ("true", "false") or v.lstrip("-").isdigit() else v
    return opts


def pending_sources(args: argparse.Namespace, opts: dict):
    """(Dataset of the rows to do: key, source_uri, source_version, archived_sha256; how many rows it has;
    how many keys SRC lists; how many keys the archive will hold after the run, None when that is every
    key done). Listing and archive stay in Ray's object store, never in the driver (pipeline/pending.py).
    All of it runs before the codec actors exist: its tasks take a CPU."""
    from pipeline.archive import open_fs, shard_paths
    from pipeline.inventory import manifest_dataset
    from pipeline.listing import ListingError, listing_dataset
    from pipeline.pending import resolve

    what = args.listing or args.src
    archive_keys = None
    try:
        listing = (manifest_dataset(args.listing, args.src, opts) if args.listing
                   else listing_dataset(args.src, opts)).materialize()
        listed = listing.count()
        if not args.listing and not shard_paths(*open_fs(args.dst, opts)):
            # a first run, listed by tasks: keys unique, nothing to compare with
            todo = listing.map_batches(_as_todo, batch_format="pyarrow").materialize()
        else:
            resolved = resolve(listing, args.dst, opts, incremental=args.incremental, listed=listed).materialize()
            counts = resolved.sum(["listed", "in_archive"])
            listed, archive_keys = int(counts["sum(listed)"]), int(counts["sum(in_archive)"])
            todo = resolved.map_batches(_todo_only, batch_format="pyarrow").materialize()
    except ListingError as e:
        raise RunError(str(e)) from None
    except Exception as e:  # a listing task failed: Ray wraps its exception, twice
        while (inner := getattr(e, "cause", None) or e.__cause__) is not None:
            e = inner
        raise RunError(f"cannot list {what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    n = todo.count()
    # Up to 200 blocks: load tasks run side by side and shards are written while the run goes on.
    return (todo.repartition(min(n, 200)).materialize() if n else todo), n, listed, archive_keys


def _as_todo(t):
    import pyarrow as pa

    return pa.table({"key": t["key"], "source_uri": t["source_uri"], "source_version": t["version"],
                     "archived_sha256": pa.nulls(t.num_rows, pa.string())})


def _todo_only(t):
    return t.filter(t["todo"]).select(["key", "source_uri", "source_version", "archived_sha256"])


def check_writable(dst: str, storage_options: dict) -> None:
    from pipeline.archive import RUNS, open_fs

    try:
        fs, root = open_fs(dst, storage_options)
        probe = posixpath.join(root, RUNS, f".probe-{uuid.uuid4().hex}")
        fs.makedirs(posixpath.dirname(probe), exist_ok=True)
        fs.pipe_file(probe, b"")
        fs.rm(probe)
    except Exception as e:
        raise RunError(f"cannot write to {dst}: {type(e).__name__}: {e}") from None


def compress(args: argparse.Namespace) -> dict:
    import ray

    from pipeline.archive import RUNS, open_fs, remove_stale_temporaries, write_whole
    from pipeline.run import LOCAL_ACTOR_CPUS, init_ray, task_remote_args, task_slots, threads_per_worker
    from pipeline.sink import ShardSink
    from pipeline.stages import CompressActor, load_batch

    opts = parse_storage_options(args.storage_option)
    check_writable(args.dst, opts)
    fs, root = open_fs(args.dst, opts)
    removed = remove_stale_temporaries(fs, root)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    started = dt.datetime.now(dt.timezone.utc)
    on_cluster = init_ray(args.address)
    todo, n_todo, listed, archive_keys = pending_sources(args, opts)
    workers = args.workers
    threads = threads_per_worker(workers)
    gpus = args.gpus_per_worker
    written: list[str] = []
    if n_todo:
        ds = todo.map_batches(load_batch, fn_kwargs={"storage_options": opts, "max_pixels": args.max_pixels,
                                                   "jpeg": args.jpeg},
                            batch_size=args.batch_size, batch_format="numpy",
                            **task_remote_args(), compute=ray.data.TaskPoolStrategy(size=task_slots(workers)))
        ds = ds.map_batches(
            CompressActor, batch_size=args.batch_size, batch_format="numpy",
            fn_constructor_kwargs={"quality": args.quality, "target_psnr": args.target_psnr, "model_id": args.model,
                                   "run_id": run_id, "threads": threads, "device": "cuda" if gpus else "cpu",
                                   "max_pixels": args.max_pixels, "refine": args.refine},
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=0 if gpus else (threads if on_cluster else LOCAL_ACTOR_CPUS), num_gpus=gpus or None)
        sink = ShardSink(args.dst, opts, run_id, max_rows=args.rows_per_shard)
        ds.write_datasink(sink, ray_remote_args=task_remote_args(), concurrency=task_slots(workers))
        written = sink.written
    summary = summarise(fs, written, run_id, listed, started)
    summary["archive_keys"] = summary["processed"] if archive_keys is None else archive_keys
    summary["shards"] = written
    summary["stale_temporaries_removed"] = removed
    # What produced these rows: rows carry their quality and model id, the run alone knows the rest.
    summary["settings"] = {"quality": args.quality, "target_psnr": args.target_psnr, "model_id": args.model,
                           "refine": args.refine, "jpeg": args.jpeg, "max_pixels": args.max_pixels, "workers": workers,
                           "max_error_share": args.max_error_share,
                           "gpus_per_worker": gpus, "incremental": args.incremental, "listing": args.listing}
    write_whole(fs, posixpath.join(root, RUNS, f"{run_id}.json"), json.dumps(summary, indent=1).encode())
    return summary


def summarise(fs, shards: list[str], run_id: str, listed: int, started: dt.datetime) -> dict:
    """The run's figures, recomputed from the shards it wrote, one shard at a time (flat memory)."""
    from collections import Counter

    import pyarrow.parquet as pq

    from pipeline.archive import SCHEMA

    n = Counter()
    sums = Counter()
    reasons: Counter = Counter()
    fs.invalidate_cache()  # s3fs answers from its cached listings, which predate these shards
    for path in shards:
        t = pq.read_table(path, filesystem=fs, schema=SCHEMA, columns=[
            "status", "error", "codec", "source_bytes", "bitstream_bytes", "bpp", "psnr"]).to_pandas()
        ok = t[t["status"] == "ok"]
        tng = ok[ok["codec"] == "tng"]
        n.update(processed=len(t), ok=len(ok), tng=len(tng), errors=int((t["status"] == "error").sum()),
                 jxl=int((ok["codec"] == JPEG_XL).sum()), source=int((ok["codec"] == "source").sum()))
        sums.update(bytes_in=int(ok["source_bytes"].sum()), bytes_out=int(ok["bitstream_bytes"].sum()),
                    bpp=float(tng["bpp"].sum()), psnr=float(tng["psnr"].sum()))
        reasons.update(t.loc[t["status"] == "error", "error"].tolist())
    bytes_in, bytes_out = sums["bytes_in"], sums["bytes_out"]
    return {
        "run_id": run_id, "started": started.isoformat(), "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
        "listed": listed, "processed": n["processed"], "skipped_unchanged": listed - n["processed"],
        "ok": n["ok"], "errors": n["errors"], "codec_tng": n["tng"], "codec_jpeg_jxl": n["jxl"],
        "codec_source": n["source"], "bytes_in": bytes_in, "bytes_out": bytes_out,
        "savings": (1 - bytes_out / bytes_in) if bytes_in else 0.0,
        "mean_bpp": sums["bpp"] / n["tng"] if n["tng"] else None,
        "mean_psnr": sums["psnr"] / n["tng"] if n["tng"] else None,
        "errors_by_reason": dict(reasons.most_common(20)),
    }


def print_summary(s: dict) -> None:
    mb = lambda n: f"{n / 1e6:,.1f} MB"  # noqa: E731
    print(f"run {s['run_id']}: {s['listed']} files, {s['processed']} processed, {s['skipped_unchanged']} unchanged "
          f"(skipped), {s['ok']} ok ({s['codec_tng']} tng, {s['codec_jpeg_jxl']} JPEG recompressed losslessly, "
          f"{s['codec_source']} kept as source), {s['errors']} errors")
    if s["ok"]:
        print(f"bytes in {mb(s['bytes_in'])}, out {mb(s['bytes_out'])}, savings {100 * s['savings']:.1f}%"
              + (f", mean {s['mean_bpp']:.3f} bpp, mean PSNR {s['mean_psnr']:.2f} dB" if s["mean_bpp"] else ""))
    for reason, n in s["errors_by_reason"].items():
        print(f"  error x{n}: {reason}")


def add_refine_argument(p: argparse.ArgumentParser) -> None:
    """--refine, shared by `tng encode` and `tng compress` (codec/refine.py)."""
    def steps(s: str) -> int:
        if not s.isdigit():
            raise argparse.ArgumentTypeError(f"steps must be a whole number 0 or more, got {s}")
        return int(s)

    p.add_argument("--refine", type=steps, default=0, metavar="STEPS",
                   help="fit each image's latents to it for STEPS steps before coding: smaller files at equal "
                        "quality, each step one pass of the decoder and its gradient (much slower on CPU; "
                        "BENCHMARKS.md measures both); default 0")


def _share(text: str) -> float:
    v = float(text)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, got {text}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="folder or fsspec URL of the images (s3://bucket/prefix, gs://..., path)")
    p.add_argument("dst", help="folder or fsspec URL of the archive")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quality", "-q", type=float, default=4.0, help="1 (smallest) to 8 (best); default 4")
    g.add_argument("--target-psnr", type=float, help="per image, the lowest quality reaching this PSNR")
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
    p.add_argument("--workers", type=int, default=2, help="codec actors (model copies)")
    p.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per actor (0: CPU)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch; on a GPU, tiles of equal size in a batch share network passes (four 1024² tiles at once)")
    p.add_argument("--rows-per-shard", type=int, default=1000, help="upper bound of rows in one Parquet shard")
    p.add_argument("--compact-after", action="store_true",
                   help="after the run, compact the archive (`tng compact`: few shards, current rows only)")
    p.add_argument("--max-error-share", type=_share, default=1.0, metavar="F",
                   help="exit 1 when more than this share (0-1) of the processed files became error rows; "
                        "the rows are written either way (default 1: never)")
    add_refine_argument(p)
    p.add_argument("--model", type=int, default=DEFAULT_MODEL_ID, help="model id (see `tng models`)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec storage option for SRC and DST (repeatable), e.g. endpoint_url=http://...")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


def main(args: argparse.Namespace) -> int:
    """Exit 0 when the run completed; 1 when more than --max-error-share of the files it processed
    became `error` rows (a scheduled run must fail visibly when, say, the workers cannot read S3)."""
    s = compress(args)
    print_summary(s)
    if args.compact_after:
        from jobs.compact import run_compaction, summary_line

        print(summary_line(run_compaction(args.dst, parse_storage_options(args.storage_option))))
    if s["processed"] and s["errors"] > args.max_error_share * s["processed"]:
        print(f"tng: error: {s['errors']} of {s['processed']} files processed failed, more than "
              f"--max-error-share {args.max_error_share:g}", file=sys.stderr)
        return 1
    return 0


def run_job(fn, args: argparse.Namespace) -> int:
    """Run a job's entry point; a RunError (the run itself cannot proceed) is one line and exit 1."""
    try:
        return fn(args)
    except RunError as e:
        print(f"tng: error: {e}", file=sys.stderr)
        return 1
