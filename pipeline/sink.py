"""Ray Data datasink for archive shards (see archive.py for the layout and atomicity)."""
from __future__ import annotations

import pyarrow as pa
from ray.data.datasource import Datasink

from .archive import SCHEMA, open_fs, write_shards


class ShardSink(Datasink):
    """Ray Data datasink writing archive rows as Parquet shards of at most `max_rows` rows each.

    Shard names derive from the run and the write task (archive.write_shards). `write` returns the
    paths it wrote.
    """

    def __init__(self, url: str, storage_options: dict, run_id: str, max_rows: int = 1000):
        self.url, self.storage_options, self.run_id, self.max_rows = url, storage_options, run_id, max_rows
        self.written: list[str] = []

    @property
    def min_rows_per_write(self) -> int:
        return self.max_rows

    def write(self, blocks, ctx) -> list[str]:
        fs, root = open_fs(self.url, self.storage_options)
        # Empty blocks come without columns (e.g. an --incremental batch whose keys were all done):
        # drop them before casting.
        tables = [pa.Table.from_pandas(b, schema=SCHEMA, preserve_index=False) if not isinstance(b, pa.Table)
                  else b.cast(SCHEMA) for b in blocks if len(b)]
        if not tables:
            return []
        return write_shards(fs, root, self.run_id, ctx.task_idx, pa.concat_tables(tables), self.max_rows)

    def on_write_complete(self, write_result) -> None:
        self.written = sorted(p for paths in write_result.write_returns for p in paths)
