"""Decoding archive rows for `tng decompress` and `tng audit`, on Ray Data, or in the command's own
process for a small job (no Ray start-up; the same picks and DecodeActor):

    select(archive, ...)   the current `ok` rows, all, some keys, or a reproducible sample: tasks read
                           the shards' small columns, each key's rows meet in their partition (as in
                           pending.py) and the current one is picked; then the picks of one shard
                           meet; a materialized Dataset of (key, path, row). For an archive of at
                           most `in_process_files` shards the driver reads them and picks, as one
                           partition does, and keeps the picks as a table when they are that few too
      ─▶ decode(selected, ...)  tasks read the picked rows' streams, a shard at a time ─▶ DecodeActor
                           pool (stages.py): each row's file, its hash and whether it matches, PSNR
                           against the source when given; a row's failure is its `error`, never the run's
                           ─▶ (audit) tasks make each output block one Arrow chunk (`_one_chunk`).
                           A table of picks: one DecodeActor here, a shard's streams at a time

Everything that shuffles runs in `select`, before the actors exist and take the CPUs; `decode` only
maps (run.py: why tasks beside the actors reserve no CPU).

On Ray the driver holds neither the archive's rows nor the decoded files: it gets the results one
block at a time (`decode` is an iterator); for a small archive it holds its picks. Raises RunError
when the archive cannot be read or the selection is impossible.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Iterator

import pyarrow as pa

from .run import IN_PROCESS_FILES, RunError, ray_cause

if TYPE_CHECKING:
    from ray.data import Dataset

DECODE_COLUMNS = ["key", "codec", "bitstream", "decoded_sha256", "source_sha256", "psnr", "exif", "icc_profile"]
PICK_COLUMNS = ["key", "status", "encoded_at"]
PICKS = pa.schema([("key", pa.string()), ("path", pa.string()), ("row", pa.int64())])  # what select gives


def select(archive: str, opts: dict, keys: list[str] | None, sample: float | None, address: str | None,
           in_process_files: int = IN_PROCESS_FILES) -> Dataset | pa.Table:
    """The current ok rows to decode, (key, path, row) each: all of them, only `keys` (every one must
    be there), or a reproducible `sample` fraction of the keys. A materialized Dataset, each block one
    shard's picks; or, when Ray is not wanted (run.ray_wanted) and the archive has at most
    `in_process_files` shards, picked here, in this process: a table, which `decode` decodes here too
    when it holds at most `in_process_files` rows (more go to Ray as they are, not picked again)."""
    from tng.pipeline.archive import open_fs, shard_paths
    from tng.pipeline.run import init_ray, ray_wanted

    if sample is not None and not 0 < sample <= 1:
        raise RunError(f"--sample must be in (0, 1], got {sample}")
    try:
        fs, root = open_fs(archive, opts)
        shards = shard_paths(fs, root)
    except Exception as e:
        raise RunError(f"cannot read archive {archive}: {type(e).__name__}: {e}") from None
    if not shards:  # nothing to decode, on any engine
        picked = PICKS.empty_table()
    elif not ray_wanted(address) and len(shards) <= in_process_files:
        picked = _select_here(archive, opts, shards, keys, sample)
        if picked.num_rows > in_process_files:
            init_ray(address)
            picked = _as_dataset(picked)
    else:
        init_ray(address)
        picked = _select_on_ray(archive, opts, shards, keys, sample)
    if keys:
        found = set(picked["key"].to_pylist() if isinstance(picked, pa.Table) else
                    [r["key"] for r in picked.select_columns(["key"]).take_all()])  # at most len(keys) rows
        missing = set(keys) - found
        if missing:
            raise RunError(f"not in the archive (or not ok): {', '.join(sorted(missing)[:5])}")
    return picked


def _select_here(archive: str, opts: dict, shards: list[str], keys: list[str] | None,
                 sample: float | None) -> pa.Table:
    """select's picks in this process: the shards' small columns (read side by side: S3 answers each
    in a round trip) meet as one partition does on Ray."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(8) as pool:
            tables = list(pool.map(lambda p: _tag_rows(pa.table({"path": [p]}), archive, opts, parts=1), shards))
        return _pick(pa.concat_tables(tables), keys, sample)
    except Exception as e:  # a shard that cannot be read
        raise RunError(f"cannot read archive {archive}: {ray_cause(e)}") from None


def _as_dataset(picked: pa.Table) -> Dataset:
    """Picks made here, for decode on Ray: one block per shard, as _select_on_ray makes them."""
    import pyarrow.compute as pc
    import ray

    return ray.data.from_arrow([picked.filter(pc.equal(picked["path"], p)) for p in pc.unique(picked["path"]).to_pylist()])


def _select_on_ray(archive: str, opts: dict, shards: list[str], keys: list[str] | None, sample: float | None) -> Dataset:
    from tng.pipeline.pending import SHARD_ROWS, grouped, partitions_for, shard_dataset

    parts = partitions_for(len(shards) * SHARD_ROWS)
    rows = shard_dataset(shards).map_batches(_tag_rows, fn_kwargs={"url": archive, "opts": opts, "parts": parts},
                                             batch_size=1, batch_format="pyarrow")
    picked = grouped(rows, "part", parts).map_groups(_pick, fn_kwargs={"only": keys, "sample": sample},
                                                     batch_format="pyarrow")
    try:  # the picks of one shard meet, so that decode reads each shard once
        return grouped(picked, "path", parts).map_groups(_unchanged, batch_format="pyarrow").materialize()
    except Exception as e:  # a shard that cannot be read
        raise RunError(f"cannot read archive {archive}: {ray_cause(e)}") from None


def decode(selected: Dataset | pa.Table, archive: str, opts: dict, address: str | None, workers: int,
           source: str | None, files: bool = True) -> Iterator[dict]:
    """DecodeActor's output row for each selected row (stages.py), as they come: on `workers` actors,
    or in this process for select's table; without `files` (audit) rows are checked but their files
    not made or sent."""
    from tng.pipeline.run import actor_pool, init_ray, task_remote_args
    from tng.pipeline.stages import DecodeActor

    if isinstance(selected, pa.Table):
        yield from _decode_here(selected, archive, opts, source, files)
        return
    if selected.count() == 0:
        return
    pool = actor_pool(workers, init_ray(address))
    ds = selected.map_batches(_fetch, fn_kwargs={"url": archive, "opts": opts}, batch_size=None,
                              batch_format="pyarrow", **task_remote_args())
    ds = ds.map_batches(DecodeActor, batch_size=4, batch_format="numpy",
                        fn_constructor_kwargs={"threads": pool.threads, "source_root": source,
                                               "storage_options": opts, "files": files},
                        **pool.map_args())
    if not files:  # audit: many small rows (see _one_chunk)
        ds = ds.map_batches(_one_chunk, batch_size=None, batch_format="pyarrow", **task_remote_args())
    try:
        yield from ds.iter_rows()
    except Exception as e:  # a shard or a task failed (a row's own failure is its `error`)
        raise RunError(f"cannot decode archive {archive}: {ray_cause(e)}") from None


def _decode_here(selected: pa.Table, archive: str, opts: dict, source: str | None, files: bool) -> Iterator[dict]:
    """decode in this process: one DecodeActor on every CPU, the picked rows read a shard at a time
    (`_fetch`), in batches of 4 as on Ray; this process's torch threads given back at the end."""
    import torch

    from tng.pipeline.run import local_cpus
    from tng.pipeline.stages import DecodeActor

    if not selected.num_rows:
        return
    threads = torch.get_num_threads()
    try:
        actor = DecodeActor(threads=local_cpus(), source_root=source, storage_options=opts, files=files)
        blocks = _fetch(selected, archive, opts)
        while True:
            try:
                block = next(blocks, None)
            except Exception as e:  # a shard that cannot be read (a row's own failure is its `error`)
                raise RunError(f"cannot decode archive {archive}: {ray_cause(e)}") from None
            if block is None:
                return
            for start in range(0, block.num_rows, 4):
                batch = block.slice(start, 4)
                out = actor({c: batch[c].to_numpy(zero_copy_only=False) for c in batch.column_names})
                yield from (dict(zip(out, values)) for values in zip(*out.values()))
    finally:
        torch.set_num_threads(threads)


def _tag_rows(batch: pa.Table, url: str, opts: dict, parts: int) -> pa.Table:
    """One shard's rows, small columns only, with their partition and where they are (path, row)."""
    import pyarrow.parquet as pq

    from tng.pipeline.archive import SCHEMA, open_fs
    from tng.pipeline.archive import key_partition

    fs, _ = open_fs(url, opts)
    tables = []
    for path in batch["path"].to_pylist():
        t = pq.read_table(path, filesystem=fs, columns=PICK_COLUMNS, schema=SCHEMA)
        tables.append(t.append_column("part", key_partition(t["key"], parts))
                       .append_column("path", pa.repeat(path, t.num_rows))
                       .append_column("row", pa.array(range(t.num_rows), pa.int64())))
    return pa.concat_tables(tables)


def _pick(t: pa.Table, only: list[str] | None, sample: float | None) -> pa.Table:
    """A partition's current ok rows, of the keys `only` or of the sample only: (key, path, row).
    (Not `keys`: map_groups passes its own.)"""
    import pyarrow.compute as pc

    from tng.pipeline.archive import current_rows

    t = current_rows(t)
    t = t.filter(pc.equal(t["status"], "ok"))
    if only:
        t = t.filter(pc.is_in(t["key"], pa.array(only, pa.string())))
    if sample is not None:
        t = t.filter(pa.array([in_sample(k, sample) for k in t["key"].to_pylist()], pa.bool_()))
    return t.select(["key", "path", "row"])


def in_sample(key: str, fraction: float) -> bool:
    """--sample's rule: a key is in when a hash of it falls in the first `fraction` of the range, so
    the same keys are picked every time and a larger fraction picks a superset."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) < fraction * 2**32


def _unchanged(t: pa.Table) -> pa.Table:
    return t


def _one_chunk(t: pa.Table) -> pa.Table:
    """The actors' output block as one Arrow chunk. Ray Data builds it of one chunk per batch of 4
    rows, and the driver pays ~11 KB a chunk to read a block: 115 MB for an audit's block of 40,000
    small rows (no files), whose size grows with the archive up to a partition; one chunk costs it
    the rows' bytes, 12 MB there (BENCHMARKS.md)."""
    return t.combine_chunks()


def _fetch(t: pa.Table, url: str, opts: dict) -> Iterator[pa.Table]:
    """The picked rows' DECODE_COLUMNS, one shard's at a time (so a task holds one shard's streams)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tng.pipeline.archive import SCHEMA, open_fs

    fs, _ = open_fs(url, opts)
    for path in pc.unique(t["path"]).to_pylist():
        rows = t.filter(pc.equal(t["path"], path))["row"]
        yield pq.read_table(path, filesystem=fs, columns=DECODE_COLUMNS, schema=SCHEMA).take(rows)
