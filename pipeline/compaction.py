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


def picked_rows(fs: fsspec.AbstractFileSystem, paths: list[str], keep_history: bool) -> tuple[dict[int, list[int]], int]:
    """(shard index -> row indexes to keep, in order: each key's current row, or every row; rows read)."""
    tables = []
    for i, p in enumerate(paths):
        t = pq.read_table(p, filesystem=fs, columns=["key", "encoded_at", "status"], schema=SCHEMA)
        n = t.num_rows
        tables.append(t.append_column("_shard", pa.array([i] * n, pa.int32()))
                      .append_column("_row", pa.array(range(n), pa.int64())))
    if not tables:
        return {}, 0
    rows = pa.concat_tables(tables)
    total = rows.num_rows
    if not keep_history:
        rows = current_rows(rows)
    picked: dict[int, list[int]] = {}
    for s, r in zip(rows["_shard"].to_pylist(), rows["_row"].to_pylist()):
        picked.setdefault(s, []).append(r)
    return {s: sorted(r) for s, r in picked.items()}, total


def _write_shards(fs: fsspec.AbstractFileSystem, prefix: str, tables: list[pa.Table], rows_per_shard: int,
                  written: list[str], final: bool) -> list[pa.Table]:
    """Write the rows of `tables` as shards `{prefix}-{n:04d}.parquet` of rows_per_shard rows (the last
    one short only when `final`), appending their paths to `written`; returns the rows left over."""
    table = pa.concat_tables(tables)
    whole = table.num_rows if final else table.num_rows - table.num_rows % rows_per_shard
    for start in range(0, whole, rows_per_shard):
        path = f"{prefix}-{len(written):04d}.parquet"
        write_whole(fs, path, table_bytes(table.slice(start, rows_per_shard)))
        written.append(path)
    return [table.slice(whole)] if whole < table.num_rows else []


def compact(fs: fsspec.AbstractFileSystem, root: str, keep_history: bool = False, rows_per_shard: int = 1000,
            before_removal: Callable[[], None] | None = None) -> dict:
    """Compact the archive at root (see the module docstring); returns what was done.

    `before_removal` runs after the new shards are written and before the old ones are deleted
    (tests look at the archive there, as a concurrent reader would).
    """
    started = time.perf_counter()
    compaction_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    paths = shard_paths(fs, root)
    picked, rows_before = picked_rows(fs, paths, keep_history)
    rows_after = sum(len(r) for r in picked.values())
    record = {"compaction_id": None, "keep_history": keep_history, "shards_before": len(paths), "shards_removed": 0,
              "shards_written": 0, "rows_before": rows_before, "rows_after": rows_after,
              "rows_dropped": rows_before - rows_after}
    if len(paths) <= 1 and rows_after == rows_before:
        return {**record, "seconds": round(time.perf_counter() - started, 3), "note": "nothing to compact"}
    prefix = posixpath.join(root, SHARDS, f"compact-{compaction_id}")
    written: list[str] = []
    pending: list[pa.Table] = []
    for i, path in enumerate(paths):
        if i in picked:  # rows go out unchanged, encoded_at included: the reading rule holds throughout
            pending.append(pq.read_table(path, filesystem=fs, schema=SCHEMA).take(pa.array(picked[i])))
            if sum(t.num_rows for t in pending) >= rows_per_shard:
                pending = _write_shards(fs, prefix, pending, rows_per_shard, written, final=False)
    if pending:
        _write_shards(fs, prefix, pending, rows_per_shard, written, final=True)
    if before_removal:
        before_removal()
    for p in paths:  # only the shards listed at the start (the fencing rule)
        fs.rm(p)
    record.update(compaction_id=compaction_id, shards_removed=len(paths), shards_written=len(written),
                  seconds=round(time.perf_counter() - started, 3), finished=dt.datetime.now(dt.timezone.utc).isoformat())
    write_whole(fs, posixpath.join(root, COMPACTIONS, f"{compaction_id}.json"), json.dumps(record, indent=1).encode())
    return record
