"""`tng decompress ARCHIVE OUT` and `tng audit ARCHIVE`: decode archive rows on the actor pool, or in
this process for a few rows (pipeline/decode_graph.py), and write or check what comes back.

decompress writes each current `ok` row to OUT/<key> (TNG rows as PNG: OUT/<key>.png with the
original suffix replaced; JPEGs recompressed with JPEG XL and rows kept as source: the original file,
byte for byte, under its own name). Keys are checked so that nothing is ever written outside OUT,
whatever a key says: a key that would land there (`..`, an absolute path, a symlink inside OUT) is
skipped with its reason, every other row is written, and the exit status is 1.

audit decodes the rows, checks each stream's checksums (the container's CRCs) and that the decoded
pixels hash to `decoded_sha256` (for the lossless codecs: that the restored file hashes to
`source_sha256`, the original's); with --source it recomputes PSNR against the originals. It prints
and writes a JSON report and exits 1 on any mismatch or undecodable row. The driver keeps counts and
running sums only: what it finds of each row (`FIGURES_FIELDS`) goes, as the rows arrive, to a JSON
Lines file (--figures; with --source and --report, by default next to the report), one line per key.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import IO

from tng.codec.errors import TNGError
from tng.jobs.common import RunError, parse_storage_options
from tng.pipeline.decode_graph import decode, select


def safe_target(out: Path, key: str, suffix: str) -> Path:
    """OUT/key with its suffix replaced; refuses keys that would land outside OUT."""
    if (not key or key.startswith("/") or "\\" in key or "\0" in key
            or any(p in ("", ".", "..") for p in key.split("/"))):
        raise RunError(f"refusing unsafe key {key!r}")
    target = out / key
    if suffix:
        target = target.with_suffix(suffix) if target.suffix.lower() != suffix else target
    resolved = target.resolve()
    if out.resolve() not in resolved.parents:
        raise RunError(f"refusing key {key!r}: it resolves outside {out}")
    return target


def decompress(args: argparse.Namespace) -> int:
    """Write every selected row under OUT, as the decoded files stream in. A key that would land
    outside OUT is skipped with its reason, as `unzip` does, and everything else is still written; the
    exit status is 1 if any row was skipped or failed to decode."""
    from tng.codec.images import write_atomically

    opts = parse_storage_options(args.storage_option)
    selected = select(args.archive, opts, args.keys, args.sample, args.address, args.in_process_files)
    out = Path(args.out)
    total = written = unsafe = 0
    for r in decode(selected, args.archive, opts, args.address, args.workers, None):
        total += 1
        try:
            target = safe_target(out, r["key"], r["suffix"] or "")
        except RunError as e:
            print(f"{r['key']!r}: skipped: {e}", file=sys.stderr)
            unsafe += 1
            continue
        try:
            if r["error"]:
                raise RunError(r["error"])
            write_atomically(target, r["file"])
            written += 1
        except (RunError, TNGError, OSError) as e:
            print(f"{r['key']}: error: {e}", file=sys.stderr)
    failed = total - written - unsafe
    print(f"decompressed {written} of {total} images to {out}"
          + (f"; {failed} failed" if failed else "") + (f"; {unsafe} unsafe keys skipped" if unsafe else ""))
    return 1 if failed or unsafe else 0


# Problems listed one by one in the report (all are counted); the rest of a run this broken is the same story.
MAX_PROBLEMS_LISTED = 100_000
# One line of the figures file per checked row. status: 'ok', 'error' (the row does not decode or its
# source cannot be read: `error` says why), 'hash mismatch', or 'psnr mismatch' (the PSNR recomputed
# against the source differs from the stored one by more than PSNR_TOLERANCE dB); stored_psnr and
# psnr (recomputed, with --source) in dB, null where there is none.
FIGURES_FIELDS = ("key", "codec", "status", "error", "stored_psnr", "psnr")
PSNR_TOLERANCE = 1e-6


def audit(args: argparse.Namespace) -> int:
    """Decode the selected rows and check them as they stream in; the driver keeps counts, running
    sums and the first MAX_PROBLEMS_LISTED problems, never the rows nor one figure per key: those go
    to the figures file as they come."""
    opts = parse_storage_options(args.storage_option)
    figures_path = figures_file(args)
    selected = select(args.archive, opts, None, args.sample, args.address, args.in_process_files)
    checked, problems, n_problems, drift, n_drift = 0, [], 0, [], 0
    psnr = {"images": 0, "sum_stored": 0.0, "sum_recomputed": 0.0, "max_abs_difference": 0.0}
    with _FiguresWriter(figures_path) as figures:
        for r in decode(selected, args.archive, opts, args.address, args.workers, args.source, files=False):
            checked += 1
            status = "error" if r["error"] else "ok" if r["hash_ok"] else "hash mismatch"
            if status != "ok":
                n_problems += 1
                if len(problems) < MAX_PROBLEMS_LISTED:
                    problems.append({"key": r["key"], "error": r["error"] or _mismatch(r["codec"])})
            if r["psnr"] is not None and r["stored_psnr"] is not None:  # with --source: recomputed
                difference = abs(r["stored_psnr"] - r["psnr"])
                psnr["images"] += 1
                psnr["sum_stored"] += r["stored_psnr"]
                psnr["sum_recomputed"] += r["psnr"]
                psnr["max_abs_difference"] = max(psnr["max_abs_difference"], difference)
                if difference > PSNR_TOLERANCE:
                    status = "psnr mismatch" if status == "ok" else status
                    n_drift += 1
                    if len(drift) < MAX_PROBLEMS_LISTED:
                        drift.append(r["key"])
            figures.write({"key": r["key"], "codec": r["codec"], "status": status, "error": r["error"],
                           "stored_psnr": r["stored_psnr"], "psnr": r["psnr"]})
    report = {"archive": args.archive, "rows_checked": checked, "mismatches": n_problems, "problems": problems,
              "figures": figures_path}
    if args.source:
        n = psnr.pop("images")
        report["psnr_vs_source"] = {"images": n, "mean_stored": psnr["sum_stored"] / n if n else None,
                                    "mean_recomputed": psnr["sum_recomputed"] / n if n else None,
                                    "max_abs_difference": psnr["max_abs_difference"] if n else None}
        report["psnr_mismatches"] = drift
        report["psnr_mismatch_count"] = n_drift
    text = json.dumps(report, indent=1)
    if args.report:
        Path(args.report).write_text(text + "\n")
    print(f"audit {args.archive}: {checked} rows checked, {n_problems + n_drift} problems"
          + (f"; each row's figures in {figures_path}" if figures_path else ""))
    for p in problems[:20]:
        print(f"  {p['key']}: {p['error']}")
    return 1 if n_problems or n_drift else 0


def figures_file(args: argparse.Namespace) -> str | None:
    """--figures, or with --source and --report the report's name with .figures.jsonl (audit.json ->
    audit.figures.jsonl); None: no figures file."""
    if args.figures:
        return args.figures
    if args.source and args.report:
        return str(Path(args.report).with_suffix(".figures.jsonl"))
    return None


class _FiguresWriter:
    """JSON lines to `path` as they come, in `path`.part until the audit is through, then renamed: a
    file under the name asked for holds every checked row. Without a path, nothing is written."""

    def __init__(self, path: str | None):
        self.path = path
        self.file: IO[str] | None = None

    def __enter__(self) -> _FiguresWriter:
        if self.path:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(f"{self.path}.part", "w")
        return self

    def write(self, row: dict) -> None:
        if self.file:
            self.file.write(json.dumps({k: row[k] for k in FIGURES_FIELDS}) + "\n")

    def __exit__(self, kind, *_) -> None:
        if self.file:
            self.file.close()
            if kind is None:
                os.replace(f"{self.path}.part", self.path)


def _mismatch(codec: str) -> str:
    return ("decoded pixels do not match decoded_sha256" if codec == "tng"
            else "restored file does not match the original's source_sha256")


def add_decompress_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive")
    p.add_argument("out")
    p.add_argument("--keys", nargs="+", help="only these keys")
    p.add_argument("--sample", type=float, help="a reproducible fraction of the keys (0-1]")


def add_audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive")
    p.add_argument("--source", help="the original SRC: recompute PSNR against it")
    p.add_argument("--sample", type=float, help="a reproducible fraction of the keys (0-1]")
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("--figures", help="write each checked row's figures here as they come, one JSON line per key "
                                     "(key, codec, status, error, stored and recomputed PSNR); default with --source "
                                     "and --report: next to the report, REPORT.figures.jsonl")
