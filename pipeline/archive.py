"""The archive on disk: Parquet shards of one row per image, run manifests, and how to read them.

    DST/shards/{run_id}-{task:06d}-{part:03d}.parquet   rows (schema below), each file written whole
    DST/runs/{run_id}.json                               manifest + summary of a completed run

Shards appear atomically: local files are written under a temporary name and renamed; object
stores get one PUT per shard. A killed run leaves only complete shards and no manifest.

Reading rule: the current row of a key is its row with the latest `encoded_at`, an `ok` row winning
a tie.

Compaction (`tng compact`, pipeline/compaction.py) needs no lock beside readers and compress runs;
its fencing rule: it removes only the shards it listed when it started, and only after their picked
rows are written to new shards unchanged (`encoded_at` included). So the reading rule gives the same
current rows at every moment, and rows written meanwhile by a run are never touched. `current_rows` applies it; with `--incremental` a rerun never writes a second `ok` row for a
key whose source is unchanged, so archives read with pyarrow, pandas or DuckDB stay simple:
`SELECT * FROM shards QUALIFY row_number() OVER (PARTITION BY key ORDER BY encoded_at DESC) = 1`.

Archives larger than memory: `current_row_partitions` applies the rule one hash partition of the
keys at a time (`key_partition`: the partitions of compress and decompress too), from rows
spilled to a local folder, so that a reader holds one partition and never every key.
"""
from __future__ import annotations

import io
import posixpath
import zlib
from collections.abc import Iterable, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("key", pa.string()),               # path relative to SRC, '/'-separated
    ("source_uri", pa.string()),
    ("source_bytes", pa.int64()),
    ("source_sha256", pa.string()),
    ("source_version", pa.string()),    # the listing's ETag / generation / mtime (None in old shards)
    ("source_format", pa.string()),     # Pillow's name: JPEG, PNG, ...
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("mode", pa.string()),              # Pillow mode of the source
    ("codec", pa.string()),             # how `bitstream` holds the image (codec/formats.py): 'tng'; 'avif',
                                        # 'jxl' (lossy, at the row's target); 'jxl-lossless' (the source's exact
                                        # pixels); 'jpeg-jxl' (a JPEG recompressed losslessly: the file byte for
                                        # byte); 'source' (the file as it was: nothing made it smaller, or --jpeg
                                        # keep / a JPEG that cannot be recompressed)
    ("note", pa.string()),              # why the row holds another codec than the one asked for
    ("bitstream", pa.binary()),         # the .tng file, the JPEG XL file, or the source file as it was
    ("bitstream_bytes", pa.int64()),
    ("bpp", pa.float64()),              # bitstream_bytes·8 / (width·height)
    ("psnr", pa.float64()),             # dB, decoded RGB vs source RGB; null for the lossless codecs
    ("ms_ssim", pa.float64()),          # null above 16 MP (memory) and for the lossless codecs
    ("quality", pa.float64()),          # TNG's; null for the lossless codecs unless TNG was tried first
    ("setting", pa.float64()),          # the row codec's own: TNG quality, AVIF quality, JPEG XL distance
    ("target_psnr", pa.float64()),      # the PSNR every codec tried had to reach (--codec other than tng):
                                        # --target-psnr, or what TNG reached at --quality
    ("bytes_tng", pa.int64()),          # what each codec needed to reach target_psnr (the evidence of the
    ("bytes_avif", pa.int64()),         # choice), or a lower bound of it where its search stopped once it
    ("bytes_jxl", pa.int64()),          # could not win; null where it was not tried or cannot reach it
    ("model_id", pa.int32()),
    ("decoded_sha256", pa.string()),    # sha256 of the decoded pixels (tng) or of the restored file (lossless)
    ("exif", pa.binary()),
    ("icc_profile", pa.binary()),
    ("status", pa.string()),            # 'ok' or 'error'
    ("error", pa.string()),             # the reason, for 'error' rows
    ("run_id", pa.string()),
    ("encoded_at", pa.timestamp("us", tz="UTC")),
])

SHARDS, RUNS = "shards", "runs"


def open_fs(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path without scheme) for a local path or any fsspec URL."""
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def write_whole(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Make `path` appear with all of `data` or not at all."""
    if "file" in fs.protocol or "local" in fs.protocol:
        tmp = posixpath.join(posixpath.dirname(path), f".tmp-{posixpath.basename(path)}")
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)  # rename: atomic on POSIX
    else:
        fs.pipe_file(path, data)  # object stores: a single PUT is atomic


def remove_stale_temporaries(fs: fsspec.AbstractFileSystem, root: str, older_than_s: float = 3600) -> int:
    """Delete the `.tmp-*` files killed runs left in shards/ (local archives only); returns how many.

    Only files older than `older_than_s`: a run writing to the same archive now has younger ones.
    """
    import time

    d = posixpath.join(root, SHARDS)
    if not ("file" in fs.protocol or "local" in fs.protocol) or not fs.exists(d):
        return 0
    stale = [i["name"] for i in fs.ls(d, detail=True) if posixpath.basename(i["name"]).startswith(".tmp-")
             and time.time() - i.get("mtime", time.time()) > older_than_s]
    for path in stale:
        fs.rm(path)
    return len(stale)


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_shards(fs: fsspec.AbstractFileSystem, root: str, run_id: str, writer: int, table: pa.Table,
                 max_rows: int) -> list[str]:
    """Write `table` as shards of at most `max_rows` rows, each whole or not at all; returns their paths.
    Named for the run and the writer (a Ray write task, or one flush of an in-process run), so that a
    retried writer rewrites its own shards instead of adding duplicates."""
    paths = []
    for part, start in enumerate(range(0, table.num_rows, max_rows)):
        path = posixpath.join(root, SHARDS, f"{run_id}-{writer:06d}-{part:03d}.parquet")
        write_whole(fs, path, table_bytes(table.slice(start, max_rows)))
        paths.append(path)
    return paths


def shard_paths(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    d = posixpath.join(root, SHARDS)
    fs.invalidate_cache(d)  # s3fs caches listings: shards written since (by other processes) must show
    if not fs.exists(d):
        return []
    return sorted(p for p in fs.ls(d, detail=False) if p.endswith(".parquet") and not posixpath.basename(p).startswith("."))


def read_rows(fs: fsspec.AbstractFileSystem, root: str, columns: list[str] | None = None) -> pa.Table:
    """Every row of every shard (all runs, complete or not)."""
    paths = shard_paths(fs, root)
    if not paths:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    return pa.concat_tables(pq.read_table(p, filesystem=fs, columns=columns, schema=SCHEMA) for p in paths)


def current_rows(table: pa.Table) -> pa.Table:
    """The current row of each key (see the module docstring for the rule)."""
    if table.num_rows == 0:
        return table
    df = table.select(["key", "encoded_at", "status"]).to_pandas()
    df["_i"] = range(len(df))
    df["_ok"] = df["status"] == "ok"
    keep = df.sort_values(["key", "encoded_at", "_ok"]).groupby("key", sort=True).tail(1)["_i"].sort_values()
    return table.take(pa.array(keep.to_numpy()))


def key_partition(keys: pa.Array, parts: int) -> pa.Array:
    """Each key's partition of `parts` (crc32): how compress, decompress, audit and report split keys."""
    return pa.array([zlib.crc32(k.encode()) % parts for k in keys.to_pylist()], pa.int32())


def current_row_partitions(tables: Iterable[pa.Table], parts: int, spill: str) -> Iterator[pa.Table]:
    """The current row of every key (`current_rows`), one partition of the keys at a time.

    Every row of `tables` (the archive's, any number at a time, e.g. a shard's; one schema) is first
    written to the local folder `spill` (empty or absent), under its key's partition of `parts`; then
    each partition is read back and its current rows found alone: a key's rows all land in its
    partition. Memory: one table of `tables` while spilling (Arrow IPC files, written as they come),
    then one partition, about rows / parts; disk: every row given.
    """
    import itertools
    import os

    import pyarrow.dataset as ds

    tables = iter(tables)
    first = next((t for t in tables if t.num_rows), None)
    if first is None:
        return
    schema = first.schema.append(pa.field("_part", pa.int32()))
    batches = (batch for t in itertools.chain([first], tables) if t.num_rows
               for batch in t.append_column("_part", key_partition(t["key"], parts)).to_batches())
    ds.write_dataset(pa.RecordBatchReader.from_batches(schema, batches), spill, format="arrow",
                     partitioning=ds.partitioning(pa.schema([schema.field("_part")]), flavor="hive"),
                     max_partitions=parts, use_threads=False)
    for part in range(parts):
        folder = os.path.join(spill, f"_part={part}")
        if os.path.isdir(folder):
            yield current_rows(ds.dataset(folder, format="arrow").to_table())
