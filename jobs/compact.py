"""`tng compact ARCHIVE`: few shards instead of many, each key's current row only (or every row).

The work and why it is safe beside readers and a running `tng compress` are in
`pipeline/compaction.py`. Exit status 0 when done, 1 when the archive cannot be read or written.
"""
from __future__ import annotations

import argparse

from tng.jobs.common import RunError, parse_storage_options


def run_compaction(archive: str, opts: dict, keep_history: bool = False, rows_per_shard: int = 1000) -> dict:
    from tng.pipeline.archive import open_fs
    from tng.pipeline.compaction import compact

    try:
        fs, root = open_fs(archive, opts)
        return compact(fs, root, keep_history=keep_history, rows_per_shard=rows_per_shard)
    except (OSError, ValueError) as e:  # fsspec/pyarrow: unreachable, unreadable, not writable
        raise RunError(f"cannot compact {archive}: {type(e).__name__}: {e}") from None


def summary_line(r: dict) -> str:
    if r.get("note"):
        return f"compact: {r['note']} ({r['shards_before']} shard, {r['rows_before']:,} rows)"
    return (f"compact {r['compaction_id']}: {r['shards_before']} shards -> {r['shards_written']}, "
            f"{r['rows_before']:,} rows -> {r['rows_after']:,} ({r['rows_dropped']:,} superseded rows dropped"
            + (", history kept" if r["keep_history"] else "") + f"), {r['seconds']:.1f} s")


def main(args: argparse.Namespace) -> int:
    r = run_compaction(args.archive, parse_storage_options(args.storage_option), args.keep_history,
                       args.rows_per_shard)
    print(summary_line(r))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", help="folder or fsspec URL of an archive made by `tng compress`")
    p.add_argument("--keep-history", action="store_true",
                   help="keep every row (superseded ones too); only the shards are merged")
    p.add_argument("--rows-per-shard", type=int, default=1000, help="upper bound of rows in one new shard")
