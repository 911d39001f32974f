"""`tng compact` on an archive of many small shards: time, shards and rows before and after.

    .venv/bin/python bench/compact.py [--shards 200] [--rows 20] [--superseded 0.25] [--bitstream-kb 30]
                                      [--out DIR]

Builds the archive without the codec (rows with the real schema; bitstreams of random bytes, which
Parquet cannot shrink, the size of a photo's .tng at quality 4): --shards shards of --rows rows, as
nightly runs leave them, where a share --superseded of the rows are later versions of keys already
archived (changed files). Then compacts it (`pipeline.compaction.compact`, what `tng compact` runs)
and checks that the current rows are the same. Prints one line of figures.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import posixpath
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tng.pipeline.archive import SCHEMA, SHARDS, current_rows, open_fs, read_rows, table_bytes, write_whole  # noqa: E402
from tng.pipeline.compaction import compact  # noqa: E402


def build(root: str, shards: int, rows: int, superseded: float, kb: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    fs, root = open_fs(root)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    keys: list[str] = []
    for s in range(shards):
        batch = []
        for r in range(rows):
            if keys and rng.random() < superseded:
                key = rng.choice(keys)
            else:
                key = f"photos/{len(keys):07d}.jpg"
                keys.append(key)
            data = os.urandom(kb * 1024)
            batch.append({"key": key, "source_uri": "s3://bucket/" + key, "source_bytes": 4 * len(data),
                          "source_sha256": f"{rng.getrandbits(256):064x}", "codec": "tng", "bitstream": data,
                          "bitstream_bytes": len(data), "width": 1024, "height": 768, "status": "ok",
                          "run_id": f"run{s:04d}", "encoded_at": t0 + dt.timedelta(minutes=s * rows + r)})
        path = posixpath.join(root, SHARDS, f"run{s:04d}-000000-000.parquet")
        write_whole(fs, path, table_bytes(pa.Table.from_pylist(batch, schema=SCHEMA)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--superseded", type=float, default=0.25)
    ap.add_argument("--bitstream-kb", type=int, default=30)
    ap.add_argument("--out", help="where to build the archive (default: a temporary folder)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or os.path.join(tmp, "archive")
        build(root, args.shards, args.rows, args.superseded, args.bitstream_kb)
        fs, path = open_fs(root)
        before = current_rows(read_rows(fs, path)).sort_by("key").to_pylist()
        t = time.perf_counter()
        r = compact(fs, path)
        seconds = time.perf_counter() - t
        after = current_rows(read_rows(fs, path)).sort_by("key").to_pylist()
        assert after == before, "compaction changed the current rows"
        mb = sum(f.stat().st_size for f in Path(path, SHARDS).glob("*.parquet")) / 1e6
        print(f"compact: {r['shards_before']} shards -> {r['shards_written']}, {r['rows_before']:,} rows -> "
              f"{r['rows_after']:,} ({r['rows_dropped']:,} superseded dropped), {mb:.0f} MB left, {seconds:.2f} s; "
              "current rows identical")


if __name__ == "__main__":
    main()
