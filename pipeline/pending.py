"""What a compress run has to do: SRC's listing less what the archive already holds, on Ray Data.

    resolve(listing, archive_url, options, incremental=True, listed=n)
        -> Dataset[key, source_uri, source_version, archived_sha256, todo, listed, archived]
    resolve_here(listing_table, archive_url, options, shards, incremental=True)   (small runs, no Ray)

A distributed anti-join on a hash shuffle, so that neither the listing nor the archive passes through
the driver: listing rows and archive rows (all shards, every run) are tagged with a partition
(crc32 of the key mod P) and meet per partition. There, each key's current row is picked by the
archive's reading rule (archive.py), and a listed key is `todo=False` when that row is `ok` and the
listing shows the same size and version: not read at all, as rsync does. Every other key goes on with
the current row's sha256, so that a file merely touched is read, hashed and then skipped in
`stages.load_batch`, and a file changed back to older content is done again (the current row holds
the other content). A listing that names a key twice (a manifest may) keeps it once. Keys the
archive holds and the listing does not (deleted from SRC) come out too, `listed=False`, so that the
run's figures (keys listed, keys in the archive after the run) are sums over the result.

The partitioning (`key_partition`, `partitions_for`, `grouped`) is also how decompress and audit
find each key's current row without the driver (decode_graph.py).
"""
from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .archive import SCHEMA, current_rows, key_partition, open_fs, shard_paths

PARTITION_ROWS = 50_000  # listing rows per partition: a partition is resolved in one task's memory
MAX_SHUFFLE_PARTITIONS = 64
SHARD_ROWS = 1000  # rows in a shard, for sizing partitions: the default --rows-per-shard, which few exceed
ARCHIVE_COLUMNS = ["key", "source_sha256", "source_bytes", "source_version", "status", "encoded_at"]
TAGGED = pa.schema([("part", pa.int32()), ("listed", pa.bool_()), ("key", pa.string()), ("source_uri", pa.string()),
                    ("size", pa.int64()), ("version", pa.string()), ("sha256", pa.string()), ("status", pa.string()),
                    ("encoded_at", pa.timestamp("us", tz="UTC"))])
RESOLVED = pa.schema([("key", pa.string()), ("source_uri", pa.string()), ("source_version", pa.string()),
                      ("archived_sha256", pa.string()), ("todo", pa.bool_()),
                      ("listed", pa.int8()), ("in_archive", pa.int8())])  # 0/1, to be summed


def partitions_for(rows: int) -> int:
    return max(1, math.ceil(rows / PARTITION_ROWS))


def resolve(listing, archive_url: str, storage_options: dict, *, incremental: bool, listed: int):
    """Every key of the listing and the archive once, with `todo` and the archived sha256 (see the
    module docstring). Without `incremental` every listed key is todo."""
    shards = shard_paths(*open_fs(archive_url, storage_options))
    parts = partitions_for(listed + len(shards) * SHARD_ROWS)
    tagged = listing.map_batches(_tag_listing, fn_kwargs={"parts": parts}, batch_format="pyarrow")
    if shards:
        tagged = tagged.union(shard_dataset(shards).map_batches(
            _tag_archive, fn_kwargs={"url": archive_url, "storage_options": storage_options, "parts": parts},
            batch_size=1, batch_format="pyarrow"))
    return grouped(tagged, "part", parts).map_groups(_resolve_partition, fn_kwargs={"incremental": incremental},
                                                     batch_format="pyarrow")


def resolve_here(listing: pa.Table, archive_url: str, storage_options: dict, shards: list[str], *,
                 incremental: bool) -> tuple[pa.Table, int, int]:
    """resolve() of a small run, in this process (pipeline/in_process.py): the listing (a table) and
    the archive's `shards` meet as one partition does in the graph. Returns (the rows to do, as
    todo_only gives them; keys listed; keys in the archive after the run)."""
    archive = _tag_archive(pa.table({"path": shards}), archive_url, storage_options, parts=1)
    resolved = _resolve_partition(pa.concat_tables([_tag_listing(listing, parts=1), archive]), incremental)
    sums = _block_sums(resolved)
    return todo_only(resolved), sums["listed"][0].as_py(), sums["in_archive"][0].as_py()


def as_todo(listing: pa.Table) -> pa.Table:
    """A first run's listing as the rows to do (nothing archived: every key, no archived sha256)."""
    return pa.table({"key": listing["key"], "source_uri": listing["source_uri"], "source_version": listing["version"],
                     "archived_sha256": pa.nulls(listing.num_rows, pa.string())})


def todo_only(resolved: pa.Table) -> pa.Table:
    """The rows of resolve()'s result that are to be done, in the columns load_batch takes."""
    return resolved.filter(resolved["todo"]).select(["key", "source_uri", "source_version", "archived_sha256"])


def grouped(ds, column: str, parts: int):
    """`ds` grouped by `column` for map_groups, sized for `parts` partitions of at most PARTITION_ROWS.
    One partition (most nightly runs) meets in one task, no shuffle: Ray Data's hash shuffle starts a
    pool of aggregator actors each time, whose start-up dominates a small run. Larger runs need it (its
    sort-based alternative was slower there and grew the driver: BENCHMARKS.md)."""
    if parts == 1:
        return ds.groupby(None)  # one group: the function sees every row at once
    return ds.groupby(column, num_partitions=min(parts, MAX_SHUFFLE_PARTITIONS))


def counts(resolved) -> tuple[int, int, int]:
    """(keys to do, keys listed, keys in the archive after the run) of resolve()'s result: one row of
    sums per block, added up here. Dataset.sum would be an aggregation, run on a pool of actors
    started for it (see `grouped`)."""
    sums = resolved.map_batches(_block_sums, batch_size=None, batch_format="pyarrow").take_all()
    return tuple(sum(int(row[c]) for row in sums) for c in ("todo", "listed", "in_archive"))


def _block_sums(t: pa.Table) -> pa.Table:
    return pa.table({c: [pc.sum(t[c].cast(pa.int64())).as_py() or 0] for c in ("todo", "listed", "in_archive")})


def shard_dataset(shards: list[str]):
    import ray

    return ray.data.from_items([{"path": p} for p in shards], override_num_blocks=min(len(shards), 200))


def _tag_listing(t: pa.Table, parts: int) -> pa.Table:
    n = t.num_rows
    return pa.table({"part": key_partition(t["key"], parts), "listed": pa.repeat(True, n), "key": t["key"],
                     "source_uri": t["source_uri"], "size": t["size"], "version": t["version"],
                     "sha256": pa.nulls(n, pa.string()), "status": pa.nulls(n, pa.string()),
                     "encoded_at": pa.nulls(n, TAGGED.field("encoded_at").type)}, schema=TAGGED)


def _tag_archive(batch: pa.Table, url: str, storage_options: dict, parts: int) -> pa.Table:
    """One shard's rows (every run's, complete or not), in the tagged schema."""
    fs, _ = open_fs(url, storage_options)
    t = pa.concat_tables(pq.read_table(p, filesystem=fs, columns=ARCHIVE_COLUMNS, schema=SCHEMA)
                         for p in batch["path"].to_pylist())
    n = t.num_rows
    return pa.table({"part": key_partition(t["key"], parts), "listed": pa.repeat(False, n), "key": t["key"],
                     "source_uri": pa.nulls(n, pa.string()), "size": t["source_bytes"], "version": t["source_version"],
                     "sha256": t["source_sha256"], "status": t["status"], "encoded_at": t["encoded_at"]}, schema=TAGGED)


def _resolve_partition(t: pa.Table, incremental: bool = True) -> pa.Table:
    listing = _first_per_key(t.filter(t["listed"])).select(["key", "source_uri", "size", "version"])
    archived = current_rows(t.filter(pc.invert(t["listed"])))
    current = archived.select(["key", "sha256", "size", "version", "status"]).rename_columns(
        ["key", "archived_sha256", "archived_size", "archived_version", "archived_status"])
    joined = listing.append_column("in_listing", pa.repeat(True, listing.num_rows)).join(
        current, "key", join_type="full outer")
    listed = pc.fill_null(joined["in_listing"], False)
    ok = pc.fill_null(pc.equal(joined["archived_status"], "ok"), False)
    unchanged = pc.and_(ok, pc.fill_null(pc.and_(  # a null (unknown) size or version is not equal
        pc.equal(joined["size"], joined["archived_size"]), pc.equal(joined["version"], joined["archived_version"])),
        False))
    if not incremental:  # everything listed is done again, read or not
        unchanged = ok = pa.repeat(False, joined.num_rows)
    todo = pc.and_(listed, pc.invert(unchanged))
    return pa.table({"key": joined["key"], "source_uri": joined["source_uri"], "source_version": joined["version"],
                     "archived_sha256": pc.if_else(ok, joined["archived_sha256"], pa.scalar(None, pa.string())),
                     "todo": todo, "listed": listed.cast(pa.int8()),
                     # after the run: a row for every key archived before, and one for every key done now
                     "in_archive": pc.or_(pc.is_valid(joined["archived_status"]), todo).cast(pa.int8())},
                    schema=RESOLVED)


def _first_per_key(t: pa.Table) -> pa.Table:
    first: dict[str, int] = {}
    for i, k in enumerate(t["key"].to_pylist()):
        first.setdefault(k, i)
    return t if len(first) == t.num_rows else t.take(pa.array(sorted(first.values())))
