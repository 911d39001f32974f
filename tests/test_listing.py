"""SRC listed by tasks and listing manifests (pipeline/listing.py, pipeline/inventory.py), and the
listing-vs-archive resolution of --incremental (pipeline/pending.py), on real files, a real moto S3
and a real local Ray."""
from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLES

from tng.jobs.cli import main
from tng.pipeline import listing
from tng.pipeline.inventory import manifest_dataset
from tng.pipeline.pending import RESOLVED, TAGGED, _resolve_partition


def _rows(ds) -> list[dict]:
    return ds.take_all()


def _tree(root, n_dirs: int = 20) -> set[str]:
    """Files at every depth, more folders than one split level, a linked folder, a dangling link."""
    keys = {"top.png", "a/b/c/deep.png"}
    for i in range(n_dirs):
        keys |= {f"d{i:02d}/x.png", f"d{i:02d}/sub/y.png"}
    for k in keys:
        (root / k).parent.mkdir(parents=True, exist_ok=True)
        (root / k).write_bytes(b"x" * len(k))
    (root / "empty-dir").mkdir()
    os.symlink(root / "a" / "b", root / "linked")
    os.symlink(root / "nowhere.png", root / "dangling.png")
    return keys | {"linked/c/deep.png", "dangling.png"}


@pytest.mark.parametrize("n_dirs", [3, 20])
def test_local_split_lists_every_file_once(tmp_path, n_dirs):
    root = tmp_path / "src"
    expected = _tree(root, n_dirs)
    prefixes = listing.split_prefixes(listing.open_fs(str(root))[0], str(root))
    assert (len(prefixes) >= listing.MIN_TASKS) == (n_dirs >= listing.MIN_TASKS)
    found = [p for folder, rec in prefixes for page in listing.file_pages(listing.open_fs(str(root))[0], folder, rec)
             for p in page]
    keys = [p[len(str(root)) + 1:] for p, _, _ in found]
    assert sorted(keys) == sorted(expected)  # each once
    by_key = {p[len(str(root)) + 1:]: (n, v) for p, n, v in found}
    assert by_key["dangling.png"] == (None, None)  # listed: reading it will give its error row
    assert by_key["top.png"] == (7, f"mtime={(root / 'top.png').stat().st_mtime}")
    # the same version string fsspec's listing gives, which older archives hold
    fs = listing.open_fs(str(root))[0]
    assert listing.source_version(fs.info(str(root / "top.png"))) == by_key["top.png"][1]


def test_s3_listing_is_paged(s3, monkeypatch):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3})
    fs.mkdir("lst-paged")
    # The server answers ListObjectsV2 in pages of 100 keys (S3: 1,000), so that 120 objects in a
    # folder take two requests, as 1,200 would on S3, at a tenth of the uploads.
    monkeypatch.setenv("MOTO_S3_DEFAULT_MAX_KEYS", "100")
    keys = {f"in/{d}/{i:04d}.png" for d in ("a", "b") for i in range(120)} | {"in/top.png", "in/a/deeper/z.png"}
    fs.pipe({f"lst-paged/{k}": b"abc" for k in keys})  # concurrent puts
    fs.pipe_file("lst-paged/in/a/", b"")  # a "folder" marker object: not a file
    fs.pipe_file("lst-paged/out/other.png", b"abc")
    monkeypatch.setattr(listing, "PAGE_ROWS", 70)
    fs.invalidate_cache()
    prefixes = listing.split_prefixes(fs, "lst-paged/in")
    assert ("lst-paged/in", False) in prefixes and ("lst-paged/in/a", False) in prefixes
    pages = [page for folder, rec in prefixes for page in listing.file_pages(fs, folder, rec)]
    assert max(len(p) for p in pages) == 70
    found = [p for page in pages for p in page]
    assert sorted(p for p, _, _ in found) == sorted(f"lst-paged/{k}" for k in keys)
    path, size, version = found[0]
    assert size == 3 and version == f"ETag={fs.info(path)['ETag']}" and version.startswith('ETag="')
    # A small run's listing in the driver (pipeline/in_process.py): the same keys, or None past its limit.
    small = listing.small_listing("s3://lst-paged/in", {}, limit=len(keys))
    assert sorted(small["key"].to_pylist()) == sorted(k[len("in/"):] for k in keys)
    assert listing.small_listing("s3://lst-paged/in", {}, limit=len(keys) - 1) is None


def test_listing_dataset_folder_single_file_and_missing(ray_local, tmp_path):
    root = tmp_path / "src"
    expected = _tree(root)
    rows = listing.listing_dataset(str(root), {}).take_all()
    assert sorted(r["key"] for r in rows) == sorted(expected)
    assert {r["source_uri"] for r in rows} == {str(root / k) for k in expected}
    one = listing.listing_dataset(str(root / "d01" / "x.png"), {}).take_all()
    assert [(r["key"], r["source_uri"], r["size"]) for r in one] == [("x.png", str(root / "d01" / "x.png"), 9)]
    with pytest.raises(listing.ListingError, match="no such file"):
        listing.listing_dataset(str(tmp_path / "nope"), {})


# --- listing manifests ----------------------------------------------------------------------------

PHOTOS = {"incoming/cat.png": SAMPLES / "chelsea.png", "incoming/my photo.png": SAMPLES / "coffee.png",
          "incoming/a+b.png": SAMPLES / "astronaut.png", "incoming/deep/%20odd.png": SAMPLES / "chelsea.png"}


@pytest.fixture(scope="module")
def bucket(s3):
    """s3://lst-photos with PHOTOS under incoming/, one object outside it; their s3fs listing."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3})
    fs.mkdir("lst-photos")
    fs.mkdir("lst-inventory")
    for k, f in PHOTOS.items():
        fs.pipe_file(f"lst-photos/{k}", f.read_bytes())
    fs.pipe_file("lst-photos/elsewhere/x.png", b"x")
    fs.invalidate_cache()
    return fs, {k: fs.info(f"lst-photos/{k}") for k in [*PHOTOS, "elsewhere/x.png"]}


def _inventory_rows(infos) -> list[dict]:
    """Rows as S3 Inventory writes them: ETags unquoted; a folder marker, an old version, a delete marker."""
    rows = [{"bucket": "lst-photos", "key": k, "size": i["size"], "e_tag": i["ETag"].strip('"'), "is_latest": True,
             "is_delete_marker": False} for k, i in infos.items()]
    rows += [{"bucket": "lst-photos", "key": "incoming/deep/", "size": 0, "e_tag": "d41d", "is_latest": True,
              "is_delete_marker": False},
             {"bucket": "lst-photos", "key": "incoming/cat.png", "size": 5, "e_tag": "old", "is_latest": False,
              "is_delete_marker": False},
             {"bucket": "lst-photos", "key": "incoming/gone.png", "size": 0, "e_tag": "", "is_latest": True,
              "is_delete_marker": True}]
    return rows


def _s3_manifest(fs, fmt: str, rows: list[dict]) -> str:
    """An S3 Inventory report in s3://lst-inventory: two data files and the manifest.json naming them."""
    base = f"lst-inventory/photos/cfg-{fmt}"
    files = []
    for n, part in enumerate((rows[:3], rows[3:])):
        if fmt == "CSV":
            import urllib.parse

            text = "".join(",".join(f'"{v}"' for v in (r["bucket"], urllib.parse.quote_plus(r["key"], safe="/"),
                                                       r["size"], "2026-11-30T00:00:00.000Z", r["e_tag"],
                                                       str(r["is_latest"]).lower(), str(r["is_delete_marker"]).lower()))
                           + "\n" for r in part)
            key, data = f"{base}/data/part-{n}.csv.gz", gzip.compress(text.encode())
        else:
            key, buf = f"{base}/data/part-{n}.parquet", io.BytesIO()
            pq.write_table(pa.Table.from_pylist(part), buf)
            data = buf.getvalue()
        fs.pipe_file(key, data)
        files.append({"key": key.partition("/")[2], "size": len(data), "MD5checksum": "x"})
    schema = ("Bucket, Key, Size, LastModifiedDate, ETag, IsLatest, IsDeleteMarker" if fmt == "CSV"
              else "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); ... }")
    manifest = {"sourceBucket": "lst-photos", "destinationBucket": "arn:aws:s3:::lst-inventory", "version": "2016-11-30",
                "fileFormat": fmt, "fileSchema": schema, "files": files}
    fs.pipe_file(f"{base}/2026-11-30T01-00Z/manifest.json", json.dumps(manifest).encode())
    return f"s3://{base}/2026-11-30T01-00Z/manifest.json"


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_s3_inventory_manifest(ray_local, bucket, fmt):
    fs, infos = bucket
    manifest = _s3_manifest(fs, fmt, _inventory_rows(infos))
    rows = manifest_dataset(manifest, "s3://lst-photos/incoming", {}).take_all()
    # URL-decoded (CSV), outside SRC left out, folder marker / old version / delete marker left out
    assert sorted(r["key"] for r in rows) == sorted(k.partition("/")[2] for k in PHOTOS)
    for r in rows:  # the version string s3fs's own listing gives: a rerun either way skips the same files
        info = infos["incoming/" + r["key"]]
        assert (r["source_uri"], r["size"], r["version"]) == (
            f"s3://lst-photos/incoming/{r['key']}", info["size"], listing.source_version(info))


def test_table_and_key_list_manifests(ray_local, bucket, tmp_path):
    fs, infos = bucket
    gcs_like = tmp_path / "report.csv"  # a header row, GCS inventory column names
    gcs_like.write_text("bucket,name,size,etag\n" + "".join(
        f"lst-photos,{k},{i['size']},abc{n}\n" for n, (k, i) in enumerate(infos.items())))
    rows = manifest_dataset(str(gcs_like), "s3://lst-photos/incoming", {}).take_all()
    assert sorted(r["key"] for r in rows) == sorted(k.partition("/")[2] for k in PHOTOS)
    assert all(r["version"].startswith("etag=abc") for r in rows)
    keys = tmp_path / "keys.txt"  # relative keys, a URL, a blank line, a key out of SRC, a duplicate
    keys.write_text("cat.png\n\ns3://lst-photos/incoming/deep/%20odd.png\n../elsewhere/x.png\ncat.png\n")
    rows = manifest_dataset(str(keys), "s3://lst-photos/incoming", {}).take_all()
    assert sorted(r["key"] for r in rows) == ["cat.png", "cat.png", "deep/%20odd.png"]  # pending.py dedupes
    assert all(r["size"] is None and r["version"] is None for r in rows)
    table = tmp_path / "keys.parquet"
    pq.write_table(pa.table({"key": ["0001.png", "deep/x.png"], "size": [3, 4]}), table)
    rows = manifest_dataset(str(table), str(tmp_path / "src"), {}).take_all()
    assert [(r["key"], r["source_uri"], r["size"]) for r in rows] == [
        ("0001.png", str(tmp_path / "src" / "0001.png"), 3), ("deep/x.png", str(tmp_path / "src" / "deep/x.png"), 4)]


def test_unreadable_manifests_are_one_line_errors(ray_local, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    assert main(["compress", str(src), str(tmp_path / "a"), "--listing", str(tmp_path / "nope.txt")]) == 1
    assert "cannot list" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("path,bytes\na.png,3\n")
    assert main(["compress", str(src), str(tmp_path / "a"), "--listing", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert "no key column" in err and len(err.splitlines()) == 1
    not_inventory = tmp_path / "manifest.json"
    not_inventory.write_text("{}")
    assert main(["compress", str(src), str(tmp_path / "a"), "--listing", str(not_inventory)]) == 1
    assert "not an S3 Inventory manifest" in capsys.readouterr().err


def test_compress_from_listings_and_incremental_across_listing_kinds(ray_local, bucket, tmp_path, capsys):
    """A key list compresses just its keys (each once); a rerun from the S3 Inventory with --incremental
    skips, without reading them, the files the task listing archived (same size and ETag)."""
    fs, infos = bucket
    keys = tmp_path / "keys.txt"
    keys.write_text("cat.png\ncat.png\nmy photo.png\n")
    out = str(tmp_path / "archive")
    assert main(["compress", "s3://lst-photos/incoming", out, "--workers", "1", "--listing", str(keys)]) == 0
    assert "2 files, 2 processed" in capsys.readouterr().out
    assert sorted(pq.read_table(tmp_path / "archive" / "shards")["key"].to_pylist()) == ["cat.png", "my photo.png"]
    assert main(["compress", "s3://lst-photos/incoming", out, "--workers", "1", "--incremental"]) == 0
    # archived from a key list, without versions: read again, hashed, found unchanged
    assert "4 files, 2 processed, 2 unchanged" in capsys.readouterr().out
    manifest = _s3_manifest(fs, "CSV", _inventory_rows(infos))
    fs.rm("lst-photos/incoming/a+b.png")  # still in the inventory (they lag): were it read, it would be an error row
    try:
        assert main(["compress", "s3://lst-photos/incoming", out, "--workers", "1", "--incremental",
                     "--listing", manifest]) == 0
    finally:
        fs.pipe_file("lst-photos/incoming/a+b.png", PHOTOS["incoming/a+b.png"].read_bytes())
    assert "4 files, 0 processed, 4 unchanged" in capsys.readouterr().out
    run = json.loads(sorted((tmp_path / "archive" / "runs").glob("*.json"))[-1].read_text())
    assert run["settings"]["listing"] == manifest and run["archive_keys"] == 4


# --- the listing against the archive --------------------------------------------------------------

def _tagged(listed: list[tuple], archived: list[tuple]) -> pa.Table:
    t0 = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)
    rows = [{"part": 0, "listed": True, "key": k, "source_uri": f"s3://b/{k}", "size": n, "version": v}
            for k, n, v in listed]
    rows += [{"part": 0, "listed": False, "key": k, "size": n, "version": v, "sha256": sha, "status": st,
              "encoded_at": t0 + dt.timedelta(minutes=m)} for k, n, v, sha, st, m in archived]
    return pa.Table.from_pylist(rows, schema=TAGGED)


def test_resolve_follows_the_current_row():
    out = _resolve_partition(_tagged(
        listed=[("same", 3, "ETag=1"), ("touched", 3, "mtime=2"), ("grown", 4, "ETag=1"), ("new", 3, "ETag=1"),
                ("failed-last", 3, "ETag=1"), ("unversioned", 3, None), ("twice", 3, "ETag=1"),
                ("twice", 3, "ETag=1")],
        archived=[("same", 3, "ETag=1", "s1", "ok", 0),
                  ("touched", 3, "mtime=1", "s2", "ok", 0),
                  ("grown", 3, "ETag=1", "s3", "ok", 0),
                  ("failed-last", 3, "ETag=1", "s4", "ok", 0), ("failed-last", 3, "ETag=1", None, "error", 5),
                  ("unversioned", 3, None, "s5", "ok", 0),
                  ("twice", 3, "ETag=1", "old", "ok", 0), ("twice", 3, "ETag=1", "s6", "ok", 9),
                  ("gone", 3, "ETag=1", "s7", "ok", 0)]))
    assert out.schema == RESOLVED
    got = {r["key"]: (r["todo"], r["archived_sha256"], r["listed"], r["in_archive"]) for r in out.to_pylist()}
    assert got == {"same": (False, "s1", 1, 1), "touched": (True, "s2", 1, 1), "grown": (True, "s3", 1, 1),
                   "new": (True, None, 1, 1), "failed-last": (True, None, 1, 1), "unversioned": (True, "s5", 1, 1),
                   "twice": (False, "s6", 1, 1),
                   "gone": (False, "s7", 0, 1)}  # deleted from SRC: still in the archive, not done
    assert out.num_rows == 8  # each key once


def test_resolve_without_incremental_does_every_listed_key():
    out = _resolve_partition(_tagged(listed=[("same", 3, "ETag=1"), ("new", 3, None)],
                                     archived=[("same", 3, "ETag=1", "s1", "ok", 0), ("gone", 3, None, "s2", "ok", 0)]),
                             incremental=False)
    got = {r["key"]: (r["todo"], r["archived_sha256"], r["listed"], r["in_archive"]) for r in out.to_pylist()}
    assert got == {"same": (True, None, 1, 1), "new": (True, None, 1, 1), "gone": (False, None, 0, 1)}


def test_load_batch_skips_the_archived_content(tmp_path):
    from tng.pipeline.stages import load_batch

    shutil.copy(SAMPLES / "chelsea.png", tmp_path / "a.png")
    shutil.copy(SAMPLES / "chelsea.png", tmp_path / "b.png")
    import hashlib

    sha = hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    out = load_batch({"key": ["a.png", "b.png"], "source_uri": [str(tmp_path / "a.png"), str(tmp_path / "b.png")],
                      "source_version": ["", ""], "archived_sha256": [sha, "other"]}, {}, 10_000_000)
    assert list(out["key"]) == ["b.png"]


def test_resolve_on_ray_keeps_every_key_once_across_partitions(ray_local, tmp_path, monkeypatch):
    """resolve() through Ray's shuffle with many partitions per run: listing rows in several blocks
    and archive rows in several shards meet in their partition, and every key comes out once, with
    rows of one key never split between two groups (which would do or count a key twice)."""
    import ray

    from tng.pipeline import pending
    from tng.pipeline.archive import SCHEMA, SHARDS, table_bytes

    monkeypatch.setattr(pending, "PARTITION_ROWS", 7)  # 40 listed + 3 shards sized as 10 rows: 10 partitions
    monkeypatch.setattr(pending, "SHARD_ROWS", 10)
    listed = [{"key": f"k{i:02d}", "source_uri": f"/src/k{i:02d}", "size": 3, "version": "v1"} for i in range(40)]
    t0 = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)
    archived = [{"key": f"k{i:02d}", "source_sha256": f"s{i}", "source_bytes": 3, "status": "ok", "encoded_at": t0,
                 "source_version": "v1" if i < 20 else "v0"} for i in range(30)]  # k20-k29 changed since
    archived += [{"key": f"gone{i}", "source_sha256": "g", "source_bytes": 3, "source_version": "v1", "status": "ok",
                  "encoded_at": t0} for i in range(5)]  # deleted from SRC
    (tmp_path / SHARDS).mkdir()
    for n in range(3):
        (tmp_path / SHARDS / f"r-{n}.parquet").write_bytes(table_bytes(pa.Table.from_pylist(archived[n::3], schema=SCHEMA)))
    blocks = [pa.Table.from_pylist(listed[i::4], schema=listing.LISTING_SCHEMA) for i in range(4)]
    resolved = pending.resolve(ray.data.from_arrow(blocks), str(tmp_path), {}, incremental=True, listed=40).materialize()
    out = resolved.take_all()
    assert sorted(r["key"] for r in out) == sorted([r["key"] for r in listed] + [f"gone{i}" for i in range(5)])
    todo = sorted(r["key"] for r in out if r["todo"])
    assert todo == [f"k{i:02d}" for i in range(20, 40)]  # changed or new; k00-k19 unchanged, not read
    assert pending.counts(resolved) == (20, 40, 45)  # to do, listed, in the archive after the run
    assert {r["archived_sha256"] for r in out if r["key"] in ("k05", "k25")} == {"s5", "s25"}
