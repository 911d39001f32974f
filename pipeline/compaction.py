"""`tng compact`: rewrite an archive's many small shards as few, keeping each key's current row.

Every `tng compress` run adds shards, so an archive read slows with its age and keeps every row a
later run superseded. Compaction reads the shards in two passes, with memory bounded by one shard
and one output shard (plus key, time and status of every row):

    1. list the shards (this set, and no other, is what the compaction will remove) and read their
       key, encoded_at and status columns; pick each key's current row (`archive.current_rows`),
       or every row with keep_history;
    2. stream the picked rows, shard by shard, into new shards `compact-{id}-{n:04d}.parquet` of at
       most `rows_per_shard` rows, each written whole; only when all are written, delete the listed
       shards.

Why this is safe for readers and writers without a lock (the fencing rule, see `archive.py`):
rows are copied unchanged, `encoded_at` included, so at every moment the shards present give the
same current row for every key: before the deletions a picked row is there twice (identical), after
them once, and a row not picked was already superseded. Shards that appear after the listing (a
compress run writing now) are never touched; their rows are newer and win as they would have. A
compaction killed before its deletions leaves duplicates only (the next one removes them), killed
during them leaves a consistent archive.
"""
from __future__ import annotations

import datetime as dt
import json
import posixpath
import time
import uuid
from collections.abc import Callable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .archive import SCHEMA, SHARDS, current_rows, shard_paths, table_bytes, write_whole

COMPACTIONS = "compactions"  # DST/compactions/{id}.json: what each compaction did


def picked_rows(fs: fsspec.AbstractFileSystem, paths: list[str], keep_history: bool) -> dict[int, list[int]]:
    """Shard index -> row indexes to keep, in order: each key's current row, or every row."""
    tables = []
    for i, p in enumerate(paths):
        t = pq.read_table(p, filesystem=fs, columns=["key", "encoded_at", "status"], schema=SCHEMA)
        n = t.num_rows
        tables.append(t.append_column("_shard", pa.array([i] * n, pa.int32()))
                      .append_column("_row", pa.array(range(n), pa.int64())))
    if not tables:
        return {}
    rows = pa.concat_tables(tables)
    if not keep_history:
        rows = current_rows(rows)
    picked: dict[int, list[int]] = {}
    for s, r in zip(rows["_shard"].to_pylist(), rows["_row"].to_pylist()):
        picked.setdefault(s, []).append(r)
    return {s: sorted(r) for s, r in picked.items()}


def compact(fs: fsspec.AbstractFileSystem, root: str, keep_history: bool = False, rows_per_shard: int = 1000,
            before_removal: Callable[[], None] | None = None) -> dict:
    """Compact the archive at root (see the module docstring); returns what was done.

    `before_removal` runs after the new shards are written and before the old ones are deleted
    (tests look at the archive there, as a concurrent reader would).
    """
    started = time.perf_counter()
    compaction_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    paths = shard_paths(fs, root)
    picked = picked_rows(fs, paths, keep_history)
    rows_before = sum(pq.ParquetFile(p, filesystem=fs).metadata.num_rows for p in paths)
    if len(paths) <= 1 and sum(len(r) for r in picked.values()) == rows_before:
        return {"compaction_id": None, "keep_history": keep_history, "shards_before": len(paths), "shards_removed": 0,
                "shards_written": 0, "rows_before": rows_before, "rows_after": rows_before, "rows_dropped": 0,
                "seconds": round(time.perf_counter() - started, 3), "note": "nothing to compact"}
    written: list[str] = []
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        table = pa.concat_tables(pending)
        for start in range(0, table.num_rows, rows_per_shard):
            path = posixpath.join(root, SHARDS, f"compact-{compaction_id}-{len(written):04d}.parquet")
            write_whole(fs, path, table_bytes(table.slice(start, rows_per_shard)))
            written.append(path)
        pending, pending_rows = [], 0

    for i, path in enumerate(paths):
        if picked.get(i):
            pending.append(pq.read_table(path, filesystem=fs, schema=SCHEMA).take(pa.array(picked[i])))
            pending_rows += len(picked[i])
            if pending_rows >= rows_per_shard:
                flush()
    if pending:
        flush()
    if before_removal:
        before_removal()
    removed = [p for p in paths if p not in set(written)]
    for p in removed:
        fs.rm(p)
    record = {"compaction_id": compaction_id, "keep_history": keep_history, "shards_before": len(paths),
              "shards_removed": len(removed), "shards_written": len(written), "rows_before": rows_before,
              "rows_after": sum(len(r) for r in picked.values()), "seconds": round(time.perf_counter() - started, 3),
              "finished": dt.datetime.now(dt.timezone.utc).isoformat()}
    record["rows_dropped"] = record["rows_before"] - record["rows_after"]
    write_whole(fs, posixpath.join(root, COMPACTIONS, f"{compaction_id}.json"), json.dumps(record, indent=1).encode())
    return record
