"""Driver memory and keys/s of `tng compress` as SRC and the archive grow (issue: archives past one driver).

    .venv/bin/python bench/listing_scale.py --keys 20000 200000 1000000 [--modes first incremental]
                                            [--dir /tmp/tng-listing-bench]

For each size, a local SRC of that many empty files in 100 folders (made once, kept in --dir), then
`tng compress` in a fresh process (its driver's peak RSS read from /proc: VmHWM), one mode at a time:
- first: a first run into an empty archive. Empty files cost the codec nothing (each becomes an
  `error` row), so what is measured is listing, loading, the actors' row building and the shards.
- incremental: the nightly rerun with `--incremental` over an archive that already holds an `ok`
  row for every key (written here without the codec, with the sizes and mtimes the listing shows):
  SRC listed, the archive read, the anti-join done, nothing left to do.
Prints one line per run; keys/s is keys listed per second of the whole command (Ray start included).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tng.pipeline.archive import SCHEMA, SHARDS, table_bytes  # noqa: E402

FOLDERS = 100


def make_src(d: Path, keys: int) -> Path:
    src = d / f"src-{keys}"
    done = src / ".complete"
    if done.exists():
        return src
    for i in range(keys):
        folder = src / f"f{i % FOLDERS:03d}"
        if i < FOLDERS:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:08d}.jpg").touch()
    done.touch()
    return src


def make_archive(src: Path, dst: Path, rows_per_shard: int = 1000) -> None:
    """An `ok` row for every file of src, as a previous run would have left it (bitstream empty)."""
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    part = 0
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        with os.scandir(folder) as it:
            for e in it:
                st = e.stat()
                rows.append({"key": f"{folder.name}/{e.name}", "source_uri": e.path, "source_bytes": st.st_size,
                             "source_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                             "source_version": f"mtime={st.st_mtime}", "codec": "source", "bitstream": b"",
                             "bitstream_bytes": 0, "status": "ok", "run_id": "bench", "encoded_at": now})
                if len(rows) == rows_per_shard:
                    _write(dst, part, rows)
                    rows, part = [], part + 1
    if rows:
        _write(dst, part, rows)


def _write(dst: Path, part: int, rows: list[dict]) -> None:
    (dst / SHARDS).mkdir(parents=True, exist_ok=True)
    (dst / SHARDS / f"bench-{part:06d}-000.parquet").write_bytes(table_bytes(pa.Table.from_pylist(rows, schema=SCHEMA)))


def run(cmd: list[str]) -> tuple[float, float, float, str]:
    """(seconds, driver peak RSS in MB, driver peak private memory in MB, last line of output) of a
    command in a fresh process. Private memory is RssAnon, sampled every 0.2 s: RSS also counts the
    pages of Ray's shared object store that the driver has read, which are not its own."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    peak = anon = 0.0
    while p.poll() is None:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{p.pid}/status").read_text().splitlines())
            peak = max(peak, int(fields["VmHWM"].split()[0]) / 1024)
            anon = max(anon, int(fields["RssAnon"].split()[0]) / 1024)
        except (OSError, KeyError, ValueError):
            pass  # not started yet, or exiting
        time.sleep(0.2)
    out = p.stdout.read()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    summary = next((line for line in out.splitlines() if line.startswith("run ")), out.strip().splitlines()[-1])
    return time.perf_counter() - t0, peak, anon, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    ap.add_argument("--modes", nargs="+", choices=["first", "incremental"], default=["first", "incremental"])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/tng-listing-bench"))
    args = ap.parse_args()
    tng = [sys.executable, "-c", "import sys; from tng.jobs.cli import main; sys.exit(main(sys.argv[1:]))"]
    for keys in args.keys:
        src = make_src(args.dir, keys)
        for mode in args.modes:
            dst = args.dir / f"archive-{keys}-{mode}"
            subprocess.run(["rm", "-rf", str(dst)], check=True)
            extra = []
            if mode == "incremental":
                make_archive(src, dst)
                extra = ["--incremental"]
            seconds, rss, _, summary = run([*tng, "compress", str(src), str(dst), "--workers", "1", "--batch-size", "64",
                                         *extra])
            print(f"{keys:>9,} keys  {mode:<11} {seconds:7.1f} s  {keys / seconds:8,.0f} keys/s  "
                  f"driver peak RSS {rss:6.0f} MB   [{summary.split(': ', 1)[-1][:80]}]", flush=True)


if __name__ == "__main__":
    main()
