"""The archive pipeline on Ray Data: a thin layer over `codec`.

- archive.py: the on-disk layout (Parquet shards + run manifests), atomic writes, the reading rule
- stages.py: the per-batch UDFs (load tasks, compress and decode actors); per-image errors become rows
- sink.py: the Ray Datasink that writes shards
- run.py: Ray start-up and resource sizing
- compaction.py: `tng compact`, few shards instead of many, current rows only

The jobs that assemble them are in `jobs/` (compress.py, decompress.py).
"""
