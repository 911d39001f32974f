"""S3 that misbehaves: compress, audit and decompress through a proxy on 127.0.0.1 that answers a
seeded share of requests with 503 SlowDown, 500 InternalError, a dropped connection or a slow
response (tests/s3faults.py, in front of the moto server). Every key must end with exactly one row,
every readable key `ok`, no shard half-written; and a source that vanishes between the listing and
its read is one `error` row with the reason, not a failed run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from s3faults import FaultProxy
from test_pipeline_kill import ENGINES, make_images

TNG = Path(sys.executable).with_name("tng")
N_IMAGES = 8


def tng(*args: str, endpoint: str) -> subprocess.CompletedProcess:
    """The real command in its own process (its own Ray), talking to S3 at `endpoint`."""
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint)
    return subprocess.run([str(TNG), *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("engine", ENGINES)
def test_jobs_survive_s3_faults(s3, tmp_path, engine):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3})
    bucket = f"faulty-{engine}"
    fs.mkdir(bucket)
    make_images(tmp_path / "src", N_IMAGES)
    fs.put(str(tmp_path / "src") + "/", f"{bucket}/in/", recursive=True)
    with FaultProxy(s3, share=0.3, seed=7) as proxy:
        r = tng("compress", f"s3://{bucket}/in", f"s3://{bucket}/archive", "--workers", "1", "--batch-size", "2",
                "--rows-per-shard", "2", *ENGINES[engine], endpoint=proxy.url)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"{N_IMAGES} ok" in r.stdout and "0 errors" in r.stdout
        before = dict(proxy.counts)
        r = tng("audit", f"s3://{bucket}/archive", "--workers", "1", *ENGINES[engine], endpoint=proxy.url)
        assert r.returncode == 0 and f"{N_IMAGES} rows checked, 0 problems" in r.stdout, r.stdout + r.stderr[-2000:]
        r = tng("decompress", f"s3://{bucket}/archive", str(tmp_path / "out"), "--workers", "1", *ENGINES[engine],
                endpoint=proxy.url)
        assert r.returncode == 0 and f"decompressed {N_IMAGES} of {N_IMAGES}" in r.stdout, r.stderr[-2000:]
    assert all(proxy.counts[k] > 0 for k in ("slowdown", "internal", "reset", "slow")), proxy.counts
    faults = lambda counts: sum(n for kind, n in counts.items() if kind != "forwarded")  # noqa: E731
    assert faults(proxy.counts) > faults(before), "no fault met audit and decompress"
    fs.invalidate_cache()
    (manifest,) = fs.glob(f"{bucket}/archive/runs/*.json")
    assert json.loads(fs.cat_file(manifest))["engine"] == engine
    shards = fs.glob(f"{bucket}/archive/shards/*")
    tables = [pq.read_table(p, filesystem=fs) for p in shards]  # each whole: a partial one would not parse
    rows = [r for t in tables for r in t.to_pylist()]
    assert sorted(r["key"] for r in rows) == sorted(p.name for p in (tmp_path / "src").iterdir())  # once each
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:
        if r["codec"] != "tng":  # the lossless rows came back byte for byte
            assert (tmp_path / "out" / r["key"]).read_bytes() == (tmp_path / "src" / r["key"]).read_bytes()


def test_a_source_gone_between_listing_and_reading_is_an_error_row(s3, tmp_path):
    """A real run over S3 from a key list (as an inventory gives) that names an object deleted since:
    the job exits 0 with that key as one `error` row saying why, and every other key `ok`."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3})
    fs.mkdir("gone")
    make_images(tmp_path / "src", 3)
    fs.put(str(tmp_path / "src") + "/", "gone/in/", recursive=True)
    keys = sorted(p.name for p in (tmp_path / "src").iterdir())
    (tmp_path / "keys.txt").write_text("".join(k + "\n" for k in keys))
    fs.rm(f"gone/in/{keys[0]}")  # listed, then gone before the run reads it
    r = tng("compress", "s3://gone/in", "s3://gone/archive", "--workers", "1", "--listing", str(tmp_path / "keys.txt"),
            endpoint=s3)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 files, 3 processed" in r.stdout and "1 errors" in r.stdout, r.stdout
    fs.invalidate_cache()
    rows = {row["key"]: row for p in fs.glob("gone/archive/shards/*") for row in pq.read_table(p, filesystem=fs).to_pylist()}
    assert sorted(rows) == keys
    assert rows[keys[0]]["status"] == "error" and rows[keys[0]]["error"].startswith("cannot read source: FileNotFoundError")
    assert all(rows[k]["status"] == "ok" for k in keys[1:])
