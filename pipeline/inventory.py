"""Listing manifests (`tng compress --listing URL`): a bucket's listing as files, read by parallel tasks.

What URL may name (recognised by its name):
- `.../manifest.json` of an **S3 Inventory** report: its CSV or Parquet data files are read from the
  destination bucket the manifest names (with the same storage options). CSV keys are URL-decoded, as
  the inventory writes them encoded.
- a `.parquet` file, a `.csv` / `.csv.gz` file with a header row, or a folder of either: a **GCS
  Storage Insights** inventory report, or any table with a key column (`key`, `Key` or `name`), and
  optionally `bucket`, a size (`size`) and a version (`e_tag`/`ETag`/`etag`, `generation`, ...).
- anything else: a text file of keys, one per line.

Keys: with a bucket column, object names in that bucket; otherwise relative to SRC, or full URLs or
absolute paths under SRC. Rows outside SRC are left out (an inventory covers a whole bucket), as are
"folder/" markers and, in versioned inventories, every version but the live one. A listing may name
a key twice: `pipeline/pending.py` keeps one.
"""
from __future__ import annotations

import json
import posixpath
import urllib.parse
from typing import Callable, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .archive import open_fs
from .listing import LISTING_SCHEMA, ListingError, url_prefix

KEY_COLUMNS = ("key", "Key", "name", "Name", "text")  # "text": Ray's read_text
BUCKET_COLUMNS = ("bucket", "Bucket")
SIZE_COLUMNS = ("size", "Size")
# (column, label): the label matches what pipeline/listing.py writes for the same backend, so that a run
# listed one way and rerun the other way still skips unchanged files without reading them.
VERSION_COLUMNS = (("e_tag", "ETag"), ("ETag", "ETag"), ("etag", "etag"), ("generation", "generation"),
                   ("md5Hash", "md5Hash"), ("last_modified_date", "LastModified"), ("LastModifiedDate", "LastModified"),
                   ("updated", "updated"))
LATEST_COLUMNS = ("is_latest", "IsLatest")
DELETE_MARKER_COLUMNS = ("is_delete_marker", "IsDeleteMarker")


class Plan(NamedTuple):
    """How to read one manifest: a Ray Data reader over `paths` of `fs`, with its options."""
    reader: Callable
    paths: str | list[str]
    fs: object
    options: dict
    url_encoded: bool = False  # S3 Inventory CSV keys


def manifest_dataset(manifest: str, src: str, storage_options: dict):
    """The listing of SRC (LISTING_SCHEMA rows) that the manifest at `manifest` holds."""
    import pyarrow.fs as pafs

    try:
        plan = _plan(*open_fs(manifest, storage_options), storage_options)
        _check_columns(plan, manifest)
        src_fs, root = open_fs(src, storage_options)
    except ListingError:
        raise
    except Exception as e:
        raise ListingError(f"cannot read listing {manifest}: {type(e).__name__}: {e}") from None
    ds = plan.reader(plan.paths, filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(plan.fs)), **plan.options)
    return ds.map_batches(to_listing, batch_format="pyarrow", fn_kwargs={
        "root": root.rstrip("/"), "uri": url_prefix(src_fs), "url_encoded": plan.url_encoded})


def _plan(fs, path: str, storage_options: dict) -> Plan:
    import ray

    name = posixpath.basename(path.rstrip("/")).lower()
    if name.endswith(".json"):
        return _s3_inventory(fs, path, storage_options)
    kind = name if not fs.isdir(path) else next(
        (p.lower() for p in fs.ls(path, detail=False) if p.lower().endswith((".parquet", ".csv", ".csv.gz"))), "")
    if kind.endswith(".parquet"):
        return Plan(ray.data.read_parquet, path, fs, {})
    if kind.endswith((".csv", ".csv.gz")):
        return Plan(ray.data.read_csv, path, fs, {"convert_options": _csv_types()})
    if fs.isdir(path):
        raise ListingError(f"cannot read listing {path}: a folder of .parquet or .csv files was expected")
    return Plan(ray.data.read_text, path, fs, {})


def _s3_inventory(fs, path: str, storage_options: dict) -> Plan:
    """An S3 Inventory manifest.json: its data files, in the destination bucket it names."""
    import ray
    from pyarrow import csv

    with fs.open(path, "rb") as f:
        m = json.load(f)
    try:
        bucket = m["destinationBucket"].rpartition(":")[2]  # arn:aws:s3:::name
        files, fmt = [f"{bucket}/{f['key']}" for f in m["files"]], m["fileFormat"].lower()
    except (KeyError, TypeError, AttributeError) as e:
        raise ListingError(f"cannot read listing {path}: not an S3 Inventory manifest (no {e})") from None
    data_fs = open_fs(f"s3://{bucket}", storage_options)[0]
    if fmt == "csv":  # no header row: the manifest names the columns
        columns = [c.strip() for c in m["fileSchema"].split(",")]
        return Plan(ray.data.read_csv, files, data_fs, {"read_options": csv.ReadOptions(column_names=columns),
                                                        "convert_options": _csv_types()}, url_encoded=True)
    if fmt == "parquet":
        return Plan(ray.data.read_parquet, files, data_fs, {})
    raise ListingError(f"cannot read listing {path}: {m['fileFormat']} inventories are not read; "
                       "configure the inventory as CSV or Parquet")


def _check_columns(plan: Plan, manifest: str) -> None:
    """A table without a key column is refused here, in one line, before any task runs."""
    if plan.reader.__name__ == "read_text":
        return
    options = plan.options.get("read_options")
    if options is not None and options.column_names:
        columns = options.column_names
    else:
        first = plan.paths[0] if isinstance(plan.paths, list) else plan.paths
        if plan.fs.isdir(first):
            first = sorted(p for p in plan.fs.ls(first, detail=False) if p.lower().endswith((".parquet", ".csv", ".csv.gz")))[0]
        if first.lower().endswith(".parquet"):
            columns = pq.read_schema(first, filesystem=plan.fs).names
        else:
            with plan.fs.open(first, "rb", compression="infer") as f:
                columns = [c.strip().strip('"') for c in f.readline().decode().strip().split(",")]
    if _first(columns, KEY_COLUMNS) is None:
        raise ListingError(f"cannot read listing {manifest}: no key column ({', '.join(KEY_COLUMNS[:3])}); "
                           f"columns: {', '.join(columns)}")


def _csv_types():
    """Keys, buckets and versions stay strings (a key '0001' must not become the number 1)."""
    from pyarrow import csv

    return csv.ConvertOptions(strings_can_be_null=False, column_types={
        c: pa.string() for c in (*KEY_COLUMNS, *BUCKET_COLUMNS, *(c for c, _ in VERSION_COLUMNS))})


def to_listing(t: pa.Table, root: str, uri: str, url_encoded: bool) -> pa.Table:
    """Ray Data UDF: manifest rows in, LISTING_SCHEMA rows under SRC (`root`) out."""
    names = t.column_names
    key_col = _first(names, KEY_COLUMNS)
    if key_col is None:
        raise ListingError(f"listing has no key column ({', '.join(KEY_COLUMNS[:3])}); columns: {', '.join(names)}")
    t = _live_versions(t)
    keys = [k.strip() if key_col == "text" else k for k in t[key_col].to_pylist()]
    if url_encoded:
        keys = [urllib.parse.unquote_plus(k) for k in keys]
    bucket_col = _first(names, BUCKET_COLUMNS)
    paths = [f"{b}/{k}" for b, k in zip(t[bucket_col].to_pylist(), keys)] if bucket_col else [
        _path_under(root, k) for k in keys]
    size_col = _first(names, SIZE_COLUMNS)
    sizes = t[size_col].cast(pa.int64()).to_pylist() if size_col else [None] * len(keys)
    versions = _versions(t)
    rows = [(p[len(root) + 1:], p, n, v) for p, n, v in zip(paths, sizes, versions)
            if p and p.startswith(root + "/") and not p.endswith("/")]
    return pa.table({"key": [r[0] for r in rows], "source_uri": [uri + r[1] for r in rows],
                     "size": [r[2] for r in rows], "version": [r[3] for r in rows]}, schema=LISTING_SCHEMA)


def _path_under(root: str, key: str) -> str | None:
    """The path a key of a table without a bucket names: relative to SRC, or a URL or absolute path."""
    if not key:
        return None
    if "://" in key:
        key = key.partition("://")[2]
    elif not key.startswith("/") or not root.startswith("/"):
        key = f"{root}/{key}"
    path = posixpath.normpath(key)
    return path if path.startswith(root + "/") else None  # '..' out of SRC counts as outside it


def _live_versions(t: pa.Table) -> pa.Table:
    """Versioned inventories list every version: keep the latest, unless it is a delete marker."""
    for cols, keep in ((LATEST_COLUMNS, True), (DELETE_MARKER_COLUMNS, False)):
        col = _first(t.column_names, cols)
        if col is not None:
            flag = pc.equal(pc.utf8_lower(t[col].cast(pa.string())), "true")
            t = t.filter(pc.fill_null(flag if keep else pc.invert(flag), not keep))
    return t


def _versions(t: pa.Table) -> list[str | None]:
    for col, label in VERSION_COLUMNS:
        if col in t.column_names:
            values = t[col].cast(pa.string()).to_pylist()
            if label == "ETag":  # S3 lists ETags quoted (s3fs keeps the quotes); inventories drop them
                values = [v if not v or v.startswith('"') else f'"{v}"' for v in values]
            return [f"{label}={v}" if v else None for v in values]
    return [None] * t.num_rows


def _first(names: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in names), None)
