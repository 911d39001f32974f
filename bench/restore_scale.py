"""Driver memory and time of `tng audit` and `tng decompress` as the archive's bytes grow.

    .venv/bin/python bench/restore_scale.py --rows 2000 --row-kb 512 [--dir /tmp/tng-restore-bench]

An archive of `rows` rows in shards of 100, each an `ok` row of codec 'source' whose bitstream is
`row-kb` KB of random bytes (its hashes set to match, as a kept file's are), is written once; then
`tng audit` and `tng decompress` run over it in fresh processes (1 worker), each printing its time and
its driver's peak RSS (VmHWM) and peak private memory (RssAnon; RSS also counts the shared object
store's pages the driver has read). The codec costs nothing here (a kept file is only hashed), so what is
measured is reading the archive and moving its rows and files.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from listing_scale import run  # noqa: E402  (this folder: a command's time and driver peak RSS)
from tng.pipeline.archive import SCHEMA, SHARDS, table_bytes  # noqa: E402

ROWS_PER_SHARD = 100


def make_archive(dst: Path, rows: int, row_bytes: int) -> None:
    done = dst / ".complete"
    if done.exists():
        return
    shutil.rmtree(dst, ignore_errors=True)
    (dst / SHARDS).mkdir(parents=True)
    rng = np.random.default_rng(0)
    now = dt.datetime.now(dt.timezone.utc)
    for start in range(0, rows, ROWS_PER_SHARD):
        batch = []
        for i in range(start, min(rows, start + ROWS_PER_SHARD)):
            data = rng.bytes(row_bytes)
            sha = hashlib.sha256(data).hexdigest()
            batch.append({"key": f"f{i % 100:02d}/img{i:07d}.bin", "source_uri": f"/nowhere/img{i:07d}.bin",
                          "source_bytes": row_bytes, "source_sha256": sha, "codec": "source", "bitstream": data,
                          "bitstream_bytes": row_bytes, "decoded_sha256": sha, "status": "ok", "run_id": "bench",
                          "encoded_at": now})
        (dst / SHARDS / f"bench-{start // ROWS_PER_SHARD:06d}-000.parquet").write_bytes(
            table_bytes(pa.Table.from_pylist(batch, schema=SCHEMA)))
    done.touch()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--row-kb", type=int, default=512)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/tng-restore-bench"))
    args = ap.parse_args()
    archive = args.dir / f"archive-{args.rows}x{args.row_kb}k"
    make_archive(archive, args.rows, args.row_kb * 1024)
    out = args.dir / "restored"
    tng = [sys.executable, "-c", "import sys; from tng.jobs.cli import main; sys.exit(main(sys.argv[1:]))"]
    size = args.rows * args.row_kb / 1024
    for name, cmd in [("audit", ["audit", str(archive), "--workers", "1"]),
                      ("decompress", ["decompress", str(archive), str(out), "--workers", "1"])]:
        shutil.rmtree(out, ignore_errors=True)
        seconds, rss, private, summary = run([*tng, *cmd])
        print(f"{args.rows:,} rows of {args.row_kb} KB ({size:,.0f} MB)  {name:<10} {seconds:6.1f} s  "
              f"driver peak RSS {rss:6.0f} MB, private {private:6.0f} MB   [{summary[-70:]}]", flush=True)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
