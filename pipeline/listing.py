"""SRC's files as a Ray Dataset of (key, source_uri, size, version) rows: the driver never holds the keys.

    listing_dataset(src, options)       SRC listed by tasks, one per prefix, page by page
    small_listing(src, options, limit)  SRC listed here, when it holds at most `limit` files (small runs)
    (a listing manifest instead: pipeline/inventory.py, same rows)

Listed by tasks, the driver only looks for prefixes: the folders under SRC, down to SPLIT_DEPTH levels
while there are fewer than MIN_TASKS. One task then lists each folder's own files, and one each
subtree below the split, yielding blocks of PAGE_ROWS rows as the listing pages arrive (S3: ListObjectsV2
pages of 1,000; local: os.scandir). Other fsspec backends (GCS, Azure, ...) list each prefix with
`fs.find` inside its task.

`key` is the path relative to SRC, '/'-separated; `version` is what the listing says about the file's
content (S3 ETag, GCS etag/generation, local mtime), used by `--incremental` to skip unchanged files
without reading them; None when the listing does not say.
"""
from __future__ import annotations

import os
import posixpath
import stat
from typing import Iterator

import pyarrow as pa

from .archive import open_fs

LISTING_SCHEMA = pa.schema([("key", pa.string()), ("source_uri", pa.string()), ("size", pa.int64()),
                            ("version", pa.string())])
PAGE_ROWS = 10_000
SPLIT_DEPTH = 2
MIN_TASKS = 16
LIST_TASKS = 4  # listing tasks at once: they wait on the network or the disk, not on a CPU
VERSION_FIELDS = ("ETag", "etag", "generation", "md5Hash", "mtime", "LastModified", "updated")


class ListingError(Exception):
    """SRC (or the listing manifest) cannot be listed at all."""


def source_version(info: dict) -> str | None:
    """What a listing entry says about a file's version (S3 ETag, GCS etag, local mtime), or None."""
    for field in VERSION_FIELDS:
        if info.get(field) is not None:
            return f"{field}={info[field]}"
    return None


def url_prefix(fs) -> str:
    """What turns a path of `fs` back into a URL: '' for local paths, 's3://' for S3, ..."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return "" if protocol in ("file", "local") else f"{protocol}://"


def listing_dataset(src: str, storage_options: dict):
    """The Dataset of SRC's files (LISTING_SCHEMA). Raises ListingError when SRC cannot be listed.

    Lazy, like every Dataset: listing errors of the tasks surface when it executes."""
    import ray

    fs, root, one_file = open_source(src, storage_options)
    if one_file is not None:
        return ray.data.from_arrow(one_file)
    try:
        prefixes = split_prefixes(fs, root)
    except Exception as e:
        raise ListingError(f"cannot list {src}: {type(e).__name__}: {e}") from None
    from .run import task_remote_args

    tasks = [{"prefix": p, "recursive": r} for p, r in prefixes]
    return ray.data.from_items(tasks, override_num_blocks=min(len(tasks), 4 * LIST_TASKS)).map_batches(
        list_prefixes, fn_kwargs={"src": src, "storage_options": storage_options, "root": root},
        batch_size=1, batch_format="pyarrow", compute=ray.data.TaskPoolStrategy(size=LIST_TASKS), **task_remote_args())


def small_listing(src: str, storage_options: dict, limit: int) -> pa.Table | None:
    """SRC's files (LISTING_SCHEMA) listed here, in the driver, when there are at most `limit` of them;
    None when there are more, or when SRC's filesystem cannot be counted cheaply (local folders and S3
    can: other backends list a whole tree at once, which the driver must not hold). A bounded count
    comes first (at most `limit` + 1 entries read, `_count_exceeds`), then the same prefixes and pages
    as listing_dataset's tasks, so that both list the same keys. Raises ListingError when SRC cannot be
    listed."""
    fs, root, one_file = open_source(src, storage_options)
    if one_file is not None:
        return one_file
    if not (_is_local(fs) or _is_s3(fs)):
        return None
    found: list[tuple[str, int | None, str | None]] = []
    try:
        if _count_exceeds(fs, root, limit):
            return None
        for prefix, recursive in split_prefixes(fs, root):
            for page in file_pages(fs, prefix, recursive):
                found += page
                if len(found) > limit:  # the count stopped short of it (folders linked twice)
                    return None
    except Exception as e:
        raise ListingError(f"cannot list {src}: {type(e).__name__}: {_first_line(e)}") from None
    uri = url_prefix(fs)
    return pa.table({"key": [p[len(root) + 1:] for p, _, _ in found], "source_uri": [uri + p for p, _, _ in found],
                     "size": [n for _, n, _ in found], "version": [v for _, _, v in found]}, schema=LISTING_SCHEMA)


def _count_exceeds(fs, root: str, limit: int) -> bool:
    """Whether there are more than `limit` files under root, stopping as soon as there are: on S3 one
    ListObjectsV2 request where there are; locally, folders read unsorted, each real folder once."""
    n = 0
    if _is_s3(fs):
        for page in _s3_pages(fs, root, recursive=True, page_rows=limit + 1):
            n += sum(i["type"] == "file" and not i["name"].endswith("/") for i in page)
            if n > limit:
                return True
        return False
    stack, seen = [root], set()
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                try:
                    st = e.stat()
                except OSError:
                    st = None  # a dangling link: listed, as _local_files lists it
                if st is not None and stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        stack.append(e.path)
                    continue
                n += 1
                if n > limit:
                    return True
    return False


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


def open_source(src: str, storage_options: dict) -> tuple:
    """(filesystem, root path, None) of a SRC folder; (filesystem, root, its one-row listing) when SRC is
    one file (its folder is the root, its name the key). Raises ListingError when SRC is neither."""
    try:
        fs, root = open_fs(src, storage_options)
        root = root.rstrip("/") or root
        if fs.isfile(root):
            info = fs.info(root)
            return fs, root, pa.table({
                "key": [posixpath.basename(root)], "source_uri": [url_prefix(fs) + root], "size": [info.get("size")],
                "version": [source_version(info)]}, schema=LISTING_SCHEMA)
        if not fs.isdir(root):
            raise ListingError(f"cannot list {src}: no such file or directory")
        return fs, root, None
    except ListingError:
        raise
    except Exception as e:
        raise ListingError(f"cannot list {src}: {type(e).__name__}: {e}") from None


def split_prefixes(fs, root: str) -> list[tuple[str, bool]]:
    """(folder, recursive) pairs that together list every file under root exactly once: each folder
    above the split for its own files, each folder at the split for its whole subtree."""
    tasks, frontier = [], [root]
    for _ in range(SPLIT_DEPTH):
        if len(tasks) + len(frontier) >= MIN_TASKS:
            break
        below = []
        for folder in frontier:
            tasks.append((folder, False))
            below += subfolders(fs, folder)
        frontier = below
    return tasks + [(folder, True) for folder in frontier]


def subfolders(fs, folder: str) -> list[str]:
    """The folders directly in `folder` (its files are skipped as they stream past, never kept)."""
    if _is_local(fs):
        with os.scandir(folder) as it:
            return sorted(e.path for e in it if e.is_dir())
    if _is_s3(fs):
        return sorted(info["name"] for page in _s3_pages(fs, folder, recursive=False) for info in page
                      if info["type"] == "directory")
    return sorted(i["name"] for i in fs.ls(folder, detail=True) if i["type"] == "directory")


def list_prefixes(batch: pa.Table, src: str, storage_options: dict, root: str) -> Iterator[pa.Table]:
    """Ray Data UDF: (prefix, recursive) rows in, their files out as blocks of at most PAGE_ROWS rows."""
    fs, _ = open_fs(src, storage_options)
    uri = url_prefix(fs)
    for prefix, recursive in zip(batch["prefix"].to_pylist(), batch["recursive"].to_pylist()):
        for page in file_pages(fs, prefix, recursive):
            yield pa.table({"key": [p[len(root) + 1:] for p, _, _ in page],
                            "source_uri": [uri + p for p, _, _ in page],
                            "size": [n for _, n, _ in page], "version": [v for _, _, v in page]}, schema=LISTING_SCHEMA)


def file_pages(fs, folder: str, recursive: bool) -> Iterator[list[tuple[str, int | None, str | None]]]:
    """(path, size, version) of the files in `folder` (and below it when recursive), page by page."""
    if _is_local(fs):
        yield from _paged(_local_files(folder, recursive))
    elif _is_s3(fs):
        for page in _s3_pages(fs, folder, recursive):
            yield [(i["name"], i.get("size"), source_version(i)) for i in page
                   if i["type"] == "file" and not i["name"].endswith("/")]  # "folder/" marker objects
    else:
        found = fs.find(folder, maxdepth=None if recursive else 1, detail=True)
        yield from _paged((p, i.get("size"), source_version(i)) for p, i in sorted(found.items()))


def _paged(items) -> Iterator[list]:
    page = []
    for item in items:
        page.append(item)
        if len(page) == PAGE_ROWS:
            yield page
            page = []
    if page:
        yield page


def _local_files(folder: str, recursive: bool) -> Iterator[tuple[str, int | None, str | None]]:
    """As fsspec's local `find`: symlinks followed (to files and folders), each real folder walked once.
    A file that cannot be stat'ed (a dangling link) is still listed: reading it gives its error row."""
    stack, seen = [folder], set()
    while stack:
        with os.scandir(stack.pop()) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            try:
                st = e.stat()
            except OSError:
                yield e.path, None, None
                continue
            if stat.S_ISDIR(st.st_mode):
                if recursive and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    stack.append(e.path)
            else:
                yield e.path, st.st_size, f"mtime={st.st_mtime}"  # fsspec's format: archives compare it


def _s3_pages(fs, folder: str, recursive: bool, page_rows: int | None = None) -> Iterator[list[dict]]:
    """s3fs info dicts of the objects under `folder` (and the sub-'folders' when not recursive), as
    ListObjectsV2 returns them: `page_rows` (default PAGE_ROWS) at a time, never the whole listing in memory."""
    from fsspec.asyn import sync

    bucket, _, key = folder.partition("/")
    pages = fs._iterdir(bucket, delimiter="" if recursive else "/", prefix=f"{key}/" if key else "")

    async def take(n: int) -> list[dict]:
        out = []
        async for info in pages:
            out.append(info)
            if len(out) == n:
                break
        return out

    while page := sync(fs.loop, take, page_rows or PAGE_ROWS):
        yield page


def _is_local(fs) -> bool:
    return url_prefix(fs) == ""


def _is_s3(fs) -> bool:
    return url_prefix(fs) in ("s3://", "s3a://") and hasattr(fs, "_iterdir")
