"""A small compress run in this process, without Ray: the same stages, rows, shards and manifest as
the Ray Data graph (compress_graph.py), run one batch after another.

    small_todo(src, dst, options, settings) -> Todo | None    None: not a small run, Ray runs it
    encode_and_write(todo.rows, dst, options, settings, run_id) -> the shards written

Whatever the job, Ray costs ~10 s before the first image on 2 cores (its start, Ray Data's first
executions, the actors' start: BENCHMARKS.md), which is most of a run of a few photos. A run is
small when the archive has at most `settings.in_process_files` shards and SRC, a local folder or
an S3 prefix, at most as many files (counted first, stopping as soon as there are more; listing.py
`small_listing`); compress_graph.py `needs_ray` says when Ray runs it anyway (a cluster, GPUs, a
listing manifest, a Ray already started).

What is shared with the graph, not copied: the listing (listing.py), the anti-join of one partition
(pending.py), the load, encode and classic stages (stages.py) and the shard writer (archive.py):
the same rows and run figures. Shards hold `--rows-per-shard` rows each but the last, where Ray's
write tasks may cut them otherwise. The one codec here uses every CPU the process may (`--workers`
sizes Ray's actor pool: there is none here).
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import pyarrow as pa

from .archive import SCHEMA, open_fs, shard_paths, write_shards
from .compress_settings import CompressSettings
from .run import local_cpus

FLUSH_BYTES = 256 << 20  # rows kept before a shard is written, whatever --rows-per-shard says: memory


@dataclass(frozen=True)
class Todo:
    """What a small run has to do: the rows (key, source_uri, source_version, archived_sha256), how many
    keys SRC lists, and how many keys the archive holds after the run (None: every key done)."""
    rows: pa.Table
    listed: int
    archive_keys: int | None


def small_todo(src: str, dst: str, storage_options: dict, settings: CompressSettings) -> Todo | None:
    """The run's work when it is small (module docstring), else None. Raises ListingError as the
    graph's listing does."""
    from .listing import small_listing
    from .pending import as_todo, resolve_here

    limit = settings.in_process_files
    shards = shard_paths(*open_fs(dst, storage_options))  # first: cheaper than listing SRC
    if len(shards) > limit:
        return None
    listing = small_listing(src, storage_options, limit)
    if listing is None:
        return None
    if not shards:  # a first run: keys unique, nothing to compare with
        return Todo(as_todo(listing), listing.num_rows, None)
    return Todo(*resolve_here(listing, dst, storage_options, shards, incremental=settings.incremental))


def encode_and_write(todo: pa.Table, dst: str, storage_options: dict, settings: CompressSettings,
                     run_id: str) -> list[str]:
    """load_batch ─▶ CompressActor ─▶ (classic_batch) ─▶ shards, batch by batch; returns the shards written."""
    from .stages import CompressActor

    import torch

    s = settings
    threads = torch.get_num_threads()  # the actor sets this process's; given back at the end
    try:
        coder = CompressActor(quality=s.quality, target_psnr=s.target_psnr, model_id=s.model_id, run_id=run_id,
                              threads=local_cpus(), device="cpu", max_pixels=s.max_pixels, effort=s.effort,
                              codec=s.codec)
        return _run(coder, todo, dst, storage_options, s, run_id)
    finally:
        torch.set_num_threads(threads)


def _run(coder, todo: pa.Table, dst: str, storage_options: dict, s: CompressSettings, run_id: str) -> list[str]:
    from .stages import classic_batch, load_batch

    fs, root = open_fs(dst, storage_options)
    written: list[str] = []
    kept: list[pa.Table] = []

    def flush(whole_shards_only: bool) -> None:
        """Write what is kept: full shards only (the rest stays kept), or everything."""
        rows = pa.concat_tables(kept)
        n = rows.num_rows - rows.num_rows % s.rows_per_shard if whole_shards_only else rows.num_rows
        if n:
            written.extend(write_shards(fs, root, run_id, len(written), rows.slice(0, n), s.rows_per_shard))
        kept[:] = [rows.slice(n)] if n < rows.num_rows else []

    for start in range(0, todo.num_rows, s.batch_size):
        batch = {c: np.array(todo[c].slice(start, s.batch_size).to_pylist(), dtype=object) for c in todo.column_names}
        loaded = load_batch(batch, storage_options, s.max_pixels, jpeg=s.jpeg, lossless=s.lossless)
        if not len(loaded["key"]):  # every file unchanged since the archive's row
            continue
        rows = _table(coder(loaded))
        kept.append(classic_batch(rows, s.codec, s.max_pixels) if s.codec != "tng" else rows)
        if sum(t.nbytes for t in kept) >= FLUSH_BYTES:
            flush(whole_shards_only=False)
        elif sum(t.num_rows for t in kept) >= s.rows_per_shard:
            flush(whole_shards_only=True)
    if kept:
        flush(whole_shards_only=False)
    return written


def _table(columns: dict) -> pa.Table:
    """The actor's columns (numpy object arrays, as Ray Data hands them on) as an Arrow table: the
    archive's schema, and the classic stage's carried source file where there is one."""
    fields = [SCHEMA.field(name) if name in SCHEMA.names else pa.field(name, pa.binary()) for name in columns]
    return pa.table({f.name: pa.array(list(columns[f.name]), type=f.type) for f in fields})
