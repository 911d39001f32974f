"""Decoding archive rows on Ray Data, for `tng decompress` and `tng audit`:

    selected_rows(archive, ...)   the current `ok` rows, all, some keys, or a reproducible sample
      ─▶ decode_rows(rows, ...)   DecodeActor pool (stages.py): each row's file, its hash and whether
                                  it matches, PSNR against the source when given; a row's failure is
                                  its `error`, never the run's

Raises RunError when the archive cannot be read or the selection is impossible.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .run import RunError

if TYPE_CHECKING:
    import pyarrow as pa

DECODE_COLUMNS = ["key", "codec", "bitstream", "decoded_sha256", "source_sha256", "psnr"]


def selected_rows(archive: str, opts: dict, keys: list[str] | None, sample: float | None) -> pa.Table:
    """Current ok rows (a pyarrow Table), optionally only `keys`, or a reproducible `sample` fraction."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tng.pipeline.archive import current_rows, open_fs, read_rows

    try:
        fs, root = open_fs(archive, opts)
        rows = read_rows(fs, root, DECODE_COLUMNS + ["status", "encoded_at"])
    except Exception as e:
        raise RunError(f"cannot read archive {archive}: {type(e).__name__}: {e}") from None
    rows = current_rows(rows)
    rows = rows.filter(pc.equal(rows["status"], "ok"))
    if keys:
        missing = set(keys) - set(rows["key"].to_pylist())
        if missing:
            raise RunError(f"not in the archive (or not ok): {', '.join(sorted(missing)[:5])}")
        rows = rows.filter(pc.is_in(rows["key"], pa.array(keys)))
    if sample is not None:
        if not 0 < sample <= 1:
            raise RunError(f"--sample must be in (0, 1], got {sample}")
        pick = [int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) < sample * 2**32 for k in rows["key"].to_pylist()]
        rows = rows.filter(pa.array(pick))
    return rows


def decode_rows(rows: pa.Table, address: str | None, workers: int, source: str | None, opts: dict) -> list[dict]:
    """DecodeActor's output row for each of `rows` (stages.py), on `workers` actors."""
    import ray

    from tng.pipeline.run import actor_pool, init_ray
    from tng.pipeline.stages import DecodeActor

    if rows.num_rows == 0:
        return []
    pool = actor_pool(workers, init_ray(address))
    ds = ray.data.from_arrow(rows.select(["key", "codec", "bitstream", "decoded_sha256", "source_sha256"]))
    ds = ds.map_batches(DecodeActor, batch_size=4, batch_format="numpy",
                        fn_constructor_kwargs={"threads": pool.threads, "source_root": source,
                                               "storage_options": opts},
                        **pool.map_args())
    return list(ds.iter_rows())
