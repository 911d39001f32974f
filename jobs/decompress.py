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
from tng.pipeline.decode_graph import decode_rows, selected_rows


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
    """Write every selected row under OUT. A key that would land outside OUT is skipped with its reason,
    as `unzip` does, and everything else is still written; the exit status is 1 if any row was skipped
    or failed to decode."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tng.codec.images import write_atomically

    opts = parse_storage_options(args.storage_option)
    rows = selected_rows(args.archive, opts, args.keys, args.sample)
    out = Path(args.out)
    unsafe = {}
    for key in rows["key"].to_pylist():  # refused before any decoding work
        try:
            safe_target(out, key, "")
        except RunError as e:
            unsafe[key] = str(e)
    for key, reason in unsafe.items():
        print(f"{key!r}: skipped: {reason}", file=sys.stderr)
    if unsafe:
        rows = rows.filter(pc.invert(pc.is_in(rows["key"], pa.array(list(unsafe), pa.string()))))
    failed = 0
    for r in decode_rows(rows, args.address, args.workers, None, opts):
        try:
            if r["error"]:
                raise RunError(r["error"])
            write_atomically(safe_target(out, r["key"], r["suffix"]), r["file"])  # checked again: OUT may change
        except (RunError, TNGError) as e:
            print(f"{r['key']}: error: {e}", file=sys.stderr)
            failed += 1
    total = rows.num_rows + len(unsafe)
    print(f"decompressed {rows.num_rows - failed} of {total} images to {out}"
          + (f"; {failed} failed" if failed else "") + (f"; {len(unsafe)} unsafe keys skipped" if unsafe else ""))
    return 1 if failed or unsafe else 0


def audit(args: argparse.Namespace) -> int:
    opts = parse_storage_options(args.storage_option)
    rows = selected_rows(args.archive, opts, None, args.sample)
    stored_psnr = dict(zip(rows["key"].to_pylist(), rows["psnr"].to_pylist()))
    results = decode_rows(rows, args.address, args.workers, args.source, opts)
    bad = [r for r in results if r["error"] or not r["hash_ok"]]
    report = {
        "archive": args.archive, "rows_checked": len(results), "mismatches": len(bad),
        "problems": [{"key": r["key"], "error": r["error"] or _mismatch(r["codec"])} for r in bad],
    }
    if args.source:
        diffs = [(r["key"], stored_psnr[r["key"]], r["psnr"]) for r in results if r["psnr"] is not None]
        report["psnr_vs_source"] = {k: {"stored": s, "recomputed": p} for k, s, p in diffs}
        drift = [k for k, s, p in diffs if s is not None and abs(s - p) > 1e-6]
        report["psnr_mismatches"] = drift
        bad += drift
    text = json.dumps(report, indent=1)
    if args.report:
        Path(args.report).write_text(text + "\n")
    print(f"audit {args.archive}: {len(results)} rows checked, {len(bad)} problems")
    for p in report["problems"][:20]:
        print(f"  {p['key']}: {p['error']}")
    return 1 if bad else 0


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
