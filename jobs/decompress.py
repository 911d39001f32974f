"""`tng decompress ARCHIVE OUT` and `tng audit ARCHIVE`: decode archive rows on the actor pool
(pipeline/decode_graph.py) and write or check what comes back.

decompress writes each current `ok` row to OUT/<key> (TNG rows as PNG: OUT/<key>.png with the
original suffix replaced; JPEGs recompressed with JPEG XL and rows kept as source: the original file,
byte for byte, under its own name). Keys are checked so that nothing is ever written outside OUT,
whatever a key says: a key that would land there (`..`, an absolute path, a symlink inside OUT) is
skipped with its reason, every other row is written, and the exit status is 1.

audit decodes the rows, checks each stream's checksums (the container's CRCs) and that the decoded
pixels hash to `decoded_sha256` (for the lossless codecs: that the restored file hashes to
`source_sha256`, the original's); with --source it recomputes PSNR against the originals. It prints
and writes a JSON report and exits 1 on any mismatch or undecodable row.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    selected = select(args.archive, opts, args.keys, args.sample, args.address)
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


def audit(args: argparse.Namespace) -> int:
    """Decode the selected rows and check them as they stream in; the driver keeps counts and the
    problems, never the rows."""
    opts = parse_storage_options(args.storage_option)
    selected = select(args.archive, opts, None, args.sample, args.address)
    checked, problems, n_problems, psnr_vs_source, drift = 0, [], 0, {}, []
    for r in decode(selected, args.archive, opts, args.address, args.workers, args.source, files=False):
        checked += 1
        if r["error"] or not r["hash_ok"]:
            n_problems += 1
            if len(problems) < MAX_PROBLEMS_LISTED:
                problems.append({"key": r["key"], "error": r["error"] or _mismatch(r["codec"])})
        if r["psnr"] is not None:  # with --source: recomputed against the original
            psnr_vs_source[r["key"]] = {"stored": r["stored_psnr"], "recomputed": r["psnr"]}
            if r["stored_psnr"] is not None and abs(r["stored_psnr"] - r["psnr"]) > 1e-6:
                drift.append(r["key"])
    report = {"archive": args.archive, "rows_checked": checked, "mismatches": n_problems, "problems": problems}
    if args.source:
        report["psnr_vs_source"] = psnr_vs_source
        report["psnr_mismatches"] = drift
    text = json.dumps(report, indent=1)
    if args.report:
        Path(args.report).write_text(text + "\n")
    print(f"audit {args.archive}: {checked} rows checked, {n_problems + len(drift)} problems")
    for p in problems[:20]:
        print(f"  {p['key']}: {p['error']}")
    return 1 if n_problems or drift else 0


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
