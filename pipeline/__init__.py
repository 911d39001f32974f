"""The archive pipeline on Ray Data: a thin layer over `codec`. Every Ray Dataset graph is built here;
`jobs/` parses arguments, calls these and prints the outcome.

- compress_graph.py: a compress run, listing to shards and manifest (`tng compress`); its settings
  in compress_settings.py
- in_process.py: a small compress run (a few files) in the driver's process, without Ray's start-up
- decode_graph.py: archive rows decoded on the actor pool (`tng decompress`, `tng audit`)
- sweep.py: the RD sweep of `tng report --source`
- listing.py, inventory.py, pending.py: SRC's keys (listed by tasks, or from a manifest), less what
  the archive holds
- stages.py: the per-batch UDFs (load tasks, compress and decode actors); per-image errors become rows
- sink.py: the Ray Datasink that writes shards
- archive.py: the on-disk layout (Parquet shards + run manifests), atomic writes, the reading rule
- compaction.py: `tng compact`, few shards instead of many, current rows only
- run.py: Ray start-up, the one sizing rule of the actor pools, RunError
"""
