"""What the `tng` jobs share: the run error, storage options and the options every job declares alike.

    RunError                  a run cannot proceed; jobs/cli.py alone makes it one line and exit 1
    parse_storage_options     --storage-option KEY=VALUE items -> fsspec keyword arguments
    storage_options_parent()  argparse parents: --storage-option
    ray_parent()              --address, --workers (the codec actors)
    in_process_parent()       --in-process-files (small jobs without Ray: compress, decompress, audit, report)
    effort_parent()           --effort (encode, compress, the RD study of report)

Each job module declares its own arguments (`add_arguments`-style functions) and takes these as
argparse parents in jobs/cli.py, so that one option is declared once and reads the same in every
command. The actor-sizing rule and the Ray set-up are in pipeline/run.py, with RunError.
"""
from __future__ import annotations

import argparse
import json

from tng.pipeline.run import RunError

__all__ = ["RunError", "effort_parent", "in_process_parent", "parse_storage_options", "ray_parent",
           "storage_options_parent"]


def parse_storage_options(items: list[str] | None) -> dict:
    """{key: value} of KEY=VALUE items; true/false and whole numbers become JSON values. Raises
    RunError for an item without '='."""
    opts = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise RunError(f"--storage-option needs KEY=VALUE, got {item!r}")
        opts[k] = json.loads(v) if v in ("true", "false") or v.lstrip("-").isdigit() else v
    return opts


def storage_options_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec storage option for the command's URLs (repeatable), e.g. endpoint_url=http://...")
    return p


def ray_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--workers", type=int, default=2, help="codec actors (model copies)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    return p


def in_process_parent() -> argparse.ArgumentParser:
    """--in-process-files (compress, decompress, audit, report): small jobs run without Ray's start-up."""
    from tng.pipeline.run import IN_PROCESS_FILES

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--in-process-files", type=int, default=IN_PROCESS_FILES, metavar="N",
                   help="a job of at most N files (and an archive of at most N shards; report: an RD study of at "
                        "most N images) runs in this process, one codec on every CPU, without Ray's start-up "
                        "(compress: from a local folder or S3, not from a --listing, not on GPUs); larger jobs, and "
                        f"any job on a cluster (--address, RAY_ADDRESS), run on Ray. 0: always Ray. Default {IN_PROCESS_FILES}")
    return p


def _effort(s: str) -> int:
    from tng.codec.effort import MAX_EFFORT

    if not s.isdigit() or int(s) > MAX_EFFORT:
        raise argparse.ArgumentTypeError(f"effort must be a whole number from 0 to {MAX_EFFORT}, got {s}")
    return int(s)


def effort_parent() -> argparse.ArgumentParser:
    """--effort (codec/effort.py): its help lists every level's recipe and cost."""
    from tng.codec.effort import DEFAULT_EFFORT, LEVELS

    p = argparse.ArgumentParser(add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    levels = "; ".join(f"{e.level}: {e.describe()}, {e.cost}" for e in LEVELS)
    p.add_argument("--effort", "-e", type=_effort, default=DEFAULT_EFFORT, metavar="N",
                   help=f"encoder effort, 0-{len(LEVELS) - 1}: smaller files at equal quality for more encode time, "
                        f"decoded as fast at every level (measured on 2 cores: BENCHMARKS.md). {levels}. "
                        f"Default {DEFAULT_EFFORT}")
    return p
