"""A compress run on Ray Data: every file under SRC becomes one archive row in Parquet shards under DST.

    list SRC (tasks, or read a --listing manifest; listing.py / inventory.py) ─▶ with incremental, less
      what the archive holds (a distributed anti-join; pending.py) ─▶ load_batch (tasks: read, hash,
      decode, validate; JPEGs recompressed losslessly or kept, per `jpeg`; everything with `lossless`)
      ─▶ CompressActor pool (TNG) ─▶ with `codec` avif / jxl / auto, classic_batch tasks (the classic
      codecs searched to each image's target, the smallest file kept) ─▶ ShardSink (atomic Parquet
      shards) ─▶ runs/{run_id}.json manifest; the run's figures returned

    compress_run(src, dst, CompressSettings(...), storage_options, address) -> summary dict

The keys pass through Ray's object store, never through the driver: its memory does not grow with
SRC or with the archive. A small run (at most `in_process_files` files and archive shards) runs the
same stages in this process instead, without Ray's ~10 s start-up (in_process.py; `needs_ray` says
when Ray runs it whatever its size); its manifest says `"engine": "in-process"`. Raises RunError when the run itself cannot proceed (SRC unreadable, DST
unwritable); per-image failures are `error` rows.
"""
from __future__ import annotations

import datetime as dt
import json
import posixpath
import uuid
from typing import TYPE_CHECKING

from tng.codec.jpeg_transcode import CODEC as JPEG_XL

from .compress_settings import CompressSettings
from .run import RunError, ray_cause

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem
    from ray.data import Dataset

# pyarrow, fsspec and Ray are imported where used: `tng encode` must not need the pipeline extra.


def compress_run(src: str, dst: str, settings: CompressSettings, storage_options: dict,
                 address: str | None = None) -> dict:
    """Run the whole graph (module docstring); returns the run's figures, as written to its manifest."""
    from tng.pipeline.archive import RUNS, open_fs, remove_stale_temporaries, write_whole
    from tng.pipeline.run import init_ray

    check_writable(dst, storage_options)
    fs, root = open_fs(dst, storage_options)
    removed = remove_stale_temporaries(fs, root)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    started = dt.datetime.now(dt.timezone.utc)
    small = None if needs_ray(settings, address) else _small_todo(src, dst, storage_options, settings)
    if small is not None:  # a few files: in this process, without Ray's start-up (in_process.py)
        from tng.pipeline import in_process

        listed, archive_keys = small.listed, small.archive_keys
        written = in_process.encode_and_write(small.rows, dst, storage_options, settings, run_id)
    else:
        on_cluster = init_ray(address)
        todo, n_todo, listed, archive_keys = pending_sources(src, dst, storage_options, settings)
        written = encode_and_write(todo, dst, storage_options, settings, run_id, on_cluster) if n_todo else []
    summary = summarise(fs, written, run_id, listed, started)
    summary["archive_keys"] = summary["processed"] if archive_keys is None else archive_keys
    summary["shards"] = written
    summary["stale_temporaries_removed"] = removed
    summary["engine"] = "ray" if small is None else "in-process"
    # What produced these rows: rows carry their quality and model id, the run alone knows the rest.
    summary["settings"] = _manifest_settings(settings)
    write_whole(fs, posixpath.join(root, RUNS, f"{run_id}.json"), json.dumps(summary, indent=1).encode())
    return summary


def needs_ray(settings: CompressSettings, address: str | None) -> bool:
    """Whether a run goes to Ray whatever its size: where run.ray_wanted says so (a cluster, a Ray this
    process has started), on GPUs, from a listing manifest (made for buckets too large to list), or
    with in-process runs turned off. (SRC on a filesystem other than a local folder or S3 goes to Ray
    too: in_process.small_todo.)"""
    from tng.pipeline.run import ray_wanted

    return ray_wanted(address) or bool(settings.gpus_per_worker or settings.listing or settings.in_process_files <= 0)


def _small_todo(src: str, dst: str, storage_options: dict, settings: CompressSettings):
    from tng.pipeline.in_process import small_todo
    from tng.pipeline.listing import ListingError

    try:
        return small_todo(src, dst, storage_options, settings)
    except ListingError as e:
        raise RunError(str(e)) from None
    except Exception as e:  # the archive's shards (listing errors are ListingErrors)
        raise RunError(f"cannot read archive {dst}: {ray_cause(e)}") from None


def _manifest_settings(s: CompressSettings) -> dict:
    keys = ["quality", "target_psnr", "model_id", "effort", "codec", "lossless", "jpeg", "max_pixels", "workers", "max_error_share",
            "gpus_per_worker", "incremental", "listing", "in_process_files"]
    return {k: getattr(s, k) for k in keys}


def check_writable(dst: str, storage_options: dict) -> None:
    """Raises RunError unless a file can be written (and removed) under DST."""
    from tng.pipeline.archive import RUNS, open_fs

    try:
        fs, root = open_fs(dst, storage_options)
        probe = posixpath.join(root, RUNS, f".probe-{uuid.uuid4().hex}")
        fs.makedirs(posixpath.dirname(probe), exist_ok=True)
        fs.pipe_file(probe, b"")
        fs.rm(probe)
    except Exception as e:
        raise RunError(f"cannot write to {dst}: {type(e).__name__}: {e}") from None


def pending_sources(src: str, dst: str, storage_options: dict,
                    settings: CompressSettings) -> tuple[Dataset, int, int, int | None]:
    """(Dataset of the rows to do: key, source_uri, source_version, archived_sha256; how many rows it has;
    how many keys SRC lists; how many keys the archive will hold after the run, None when that is every
    key done). Listing and archive stay in Ray's object store, never in the driver (pending.py).
    All of it runs before the codec actors exist: its tasks take a CPU."""
    from tng.pipeline.listing import ListingError

    try:
        todo, n, listed, archive_keys = _todo(src, dst, storage_options, settings)
        # Up to 200 blocks: load tasks run side by side and shards are written while the run goes on.
        return (todo.repartition(min(n, 200)).materialize() if n else todo), n, listed, archive_keys
    except ListingError as e:
        raise RunError(str(e)) from None
    except Exception as e:  # a listing task failed
        raise RunError(f"cannot list {settings.listing or src}: {ray_cause(e)}") from None


def _todo(src: str, dst: str, opts: dict, settings: CompressSettings) -> tuple[Dataset, int, int, int | None]:
    """(the rows to do, lazily over materialized data; how many; keys listed; keys in the archive after
    the run, or None)."""
    from tng.pipeline.archive import open_fs, shard_paths
    from tng.pipeline.inventory import manifest_dataset
    from tng.pipeline.listing import listing_dataset
    from tng.pipeline.pending import as_todo, counts, resolve, todo_only

    listing = (manifest_dataset(settings.listing, src, opts) if settings.listing
               else listing_dataset(src, opts)).materialize()
    listed = listing.count()
    if not settings.listing and not shard_paths(*open_fs(dst, opts)):
        # a first run, listed by tasks: keys unique, nothing to compare with
        return listing.map_batches(as_todo, batch_format="pyarrow"), listed, listed, None
    resolved = resolve(listing, dst, opts, incremental=settings.incremental, listed=listed).materialize()
    todo, listed, in_archive = counts(resolved)
    return resolved.map_batches(todo_only, batch_format="pyarrow"), todo, listed, in_archive


def encode_and_write(todo: Dataset, dst: str, storage_options: dict, settings: CompressSettings, run_id: str,
                     on_cluster: bool) -> list[str]:
    """load_batch tasks ─▶ CompressActor pool ─▶ ShardSink; returns the shards written."""
    import ray

    from tng.pipeline.run import actor_pool, task_remote_args, task_slots
    from tng.pipeline.sink import ShardSink
    from tng.pipeline.stages import CompressActor, classic_batch, load_batch

    s = settings
    pool = actor_pool(s.workers, on_cluster, s.gpus_per_worker)
    ds = todo.map_batches(load_batch, fn_kwargs={"storage_options": storage_options, "max_pixels": s.max_pixels,
                                                 "jpeg": s.jpeg, "lossless": s.lossless},
                          batch_size=s.batch_size, batch_format="numpy",
                          **task_remote_args(), compute=ray.data.TaskPoolStrategy(size=task_slots(s.workers)))
    ds = ds.map_batches(
        CompressActor, batch_size=s.batch_size, batch_format="numpy",
        fn_constructor_kwargs={"quality": s.quality, "target_psnr": s.target_psnr, "model_id": s.model_id,
                               "run_id": run_id, "threads": pool.threads,
                               "device": "cuda" if s.gpus_per_worker else "cpu",
                               "max_pixels": s.max_pixels, "effort": s.effort, "codec": s.codec},
        **pool.map_args())
    if s.codec != "tng":  # the classic codecs run in CPU tasks beside the actors, not inside them
        ds = ds.map_batches(classic_batch, fn_kwargs={"codec": s.codec, "max_pixels": s.max_pixels},
                            batch_size=s.batch_size,
                            batch_format="pyarrow", **task_remote_args(),
                            compute=ray.data.TaskPoolStrategy(size=task_slots(s.workers)))
    sink = ShardSink(dst, storage_options, run_id, max_rows=s.rows_per_shard)
    ds.write_datasink(sink, ray_remote_args=task_remote_args(), concurrency=task_slots(s.workers))
    return sink.written


def summarise(fs: AbstractFileSystem, shards: list[str], run_id: str, listed: int, started: dt.datetime) -> dict:
    """The run's figures, recomputed from the shards it wrote, one shard at a time (flat memory)."""
    from collections import Counter

    import pyarrow.parquet as pq

    from tng.codec.formats import LOSSY
    from tng.pipeline.archive import SCHEMA

    n = Counter()
    sums = Counter()
    by_codec: Counter = Counter()
    reasons: Counter = Counter()
    fs.invalidate_cache()  # s3fs answers from its cached listings, which predate these shards
    for path in shards:
        t = pq.read_table(path, filesystem=fs, schema=SCHEMA, columns=[
            "status", "error", "codec", "source_bytes", "bitstream_bytes", "bpp", "psnr"]).to_pandas()
        ok = t[t["status"] == "ok"]
        tng = ok[ok["codec"] == "tng"]
        lossy = ok[ok["codec"].isin(LOSSY)]
        n.update(processed=len(t), ok=len(ok), tng=len(tng), errors=int((t["status"] == "error").sum()),
                 jxl=int((ok["codec"] == JPEG_XL).sum()), source=int((ok["codec"] == "source").sum()))
        by_codec.update(ok["codec"].tolist())
        sums.update(bytes_in=int(ok["source_bytes"].sum()), bytes_out=int(ok["bitstream_bytes"].sum()),
                    bpp=float(lossy["bpp"].sum()), psnr=float(lossy["psnr"].sum()), lossy=len(lossy))
        reasons.update(t.loc[t["status"] == "error", "error"].tolist())
    bytes_in, bytes_out = sums["bytes_in"], sums["bytes_out"]
    return {
        "run_id": run_id, "started": started.isoformat(), "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
        "listed": listed, "processed": n["processed"], "skipped_unchanged": listed - n["processed"],
        "ok": n["ok"], "errors": n["errors"], "codec_tng": n["tng"], "codec_jpeg_jxl": n["jxl"],
        "codec_source": n["source"], "by_codec": dict(by_codec.most_common()), "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "savings": (1 - bytes_out / bytes_in) if bytes_in else 0.0,
        "mean_bpp": sums["bpp"] / sums["lossy"] if sums["lossy"] else None,  # over the lossy rows
        "mean_psnr": sums["psnr"] / sums["lossy"] if sums["lossy"] else None,
        "errors_by_reason": dict(reasons.most_common(20)),
    }
