"""What the `tng` jobs share: the run error, storage options and the options every job declares alike.

    RunError                  a run cannot proceed; jobs/cli.py alone makes it one line and exit 1
    parse_storage_options     --storage-option KEY=VALUE items -> fsspec keyword arguments
    storage_options_parent()  argparse parents: --storage-option
    ray_parent()              --address, --workers (the codec actors)
    refine_parent()           --refine (encode, compress, the RD study of report)

Each job module declares its own arguments (`add_arguments`-style functions) and takes these as
argparse parents in jobs/cli.py, so that one option is declared once and reads the same in every
command. The actor-sizing rule and the Ray set-up are in pipeline/run.py, with RunError.
"""
from __future__ import annotations

import argparse
import json

from tng.pipeline.run import RunError

__all__ = ["RunError", "parse_storage_options", "ray_parent", "refine_parent", "storage_options_parent"]


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


def _steps(s: str) -> int:
    if not s.isdigit():
        raise argparse.ArgumentTypeError(f"steps must be a whole number 0 or more, got {s}")
    return int(s)


def refine_parent() -> argparse.ArgumentParser:
    """--refine (codec/refine.py)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--refine", type=_steps, default=0, metavar="STEPS",
                   help="fit each image's latents to it for STEPS steps before coding: smaller files at equal "
                        "quality, each step one pass of the decoder and its gradient (much slower on CPU; "
                        "BENCHMARKS.md measures both); default 0")
    return p
