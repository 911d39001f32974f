"""The `tng` command: one entry point, one subcommand per job.

    tng encode IN OUT.tng [--quality Q | --target-psnr DB | --target-bpp B] [--effort N]
    tng decode IN.tng OUT.png
    tng compress SRC DST [--incremental] [--workers N] ...   (Ray Data; see pipeline/compress_graph.py)
    tng decompress ARCHIVE OUT [--keys K ...] [--sample F]
    tng audit ARCHIVE [--source SRC] [--sample F]
    tng compact ARCHIVE [--keep-history]
    tng models
    tng train DATA OUT [--minutes M | --steps N] [--resume CKPT]
    tng export CHECKPOINT OUT.safetensors --model-id N --name NAME

Every failure a user can cause (bad input, missing file, corrupt stream) ends as one line on stderr
and exit status 1; never a traceback. Library code raises (the codec TNGError, a run RunError from
jobs/common.py, OSError); main() here alone turns that into the message and the exit status.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _read(path: str) -> bytes:
    from tng.jobs.common import RunError

    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise RunError(f"{path} is a directory") from None
    except OSError as e:
        raise RunError(f"cannot read {path}: {e.strerror}") from None


def cmd_encode(a: argparse.Namespace) -> None:
    from tng.codec import Codec, open_image
    from tng.codec.images import write_atomically

    src = open_image(_read(a.input), max_pixels=a.max_pixels)
    enc = Codec(model_id=a.model, tile=a.tile, max_pixels=a.max_pixels, effort=a.effort).encode(
        src, quality=a.quality, target_psnr=a.target_psnr, target_bpp=a.target_bpp)
    write_atomically(a.output, enc.data)
    line = (f"{a.input} -> {a.output}: {enc.width}x{enc.height}, {len(enc.data):,} bytes, "
            f"{enc.bpp:.3f} bpp, PSNR {enc.psnr:.2f} dB, quality {enc.quality:g}, effort {a.effort}")
    if a.target_psnr is not None or a.target_bpp is not None:
        what = f"PSNR {a.target_psnr:g} dB" if a.target_psnr is not None else f"{a.target_bpp:g} bpp"
        line += f" (target {what} {'met' if enc.target_met else 'not reachable; closest quality used'})"
    print(line)


def cmd_decode(a: argparse.Namespace) -> None:
    from tng.codec import Codec, save_image

    data = _read(a.input)
    dec = Codec(max_pixels=a.max_pixels).decode(data)
    save_image(dec.image, a.output, dec.exif, dec.icc_profile)
    h = dec.header
    print(f"{a.input} -> {a.output}: {h.width}x{h.height} {dec.image.mode}, {len(data):,} bytes, "
          f"{len(data) * 8 / (h.width * h.height):.3f} bpp, quality {h.quality:g}, model {h.model_id}")


def cmd_models(a: argparse.Namespace) -> None:
    from tng.codec.registry import DEFAULT_MODEL_ID, available_models, load_model

    for mid, path in sorted(available_models().items()):
        lm = load_model(mid)
        default = " (default)" if mid == DEFAULT_MODEL_ID else ""
        entropy = f"{lm.net.context_kind} context" if lm.net.context_kind else "hyper-prior"
        print(f"{mid}{default}\t{lm.name}\t{lm.net.synthesis} synthesis\t{entropy}\t{lm.digest.hex()}\t{path}")


def cmd_train(a: argparse.Namespace) -> None:
    """In this process, or on Ray Train workers (jobs/train_ray.py) with --workers N > 1 or --address."""
    from tng.jobs.common import RunError
    from tng.jobs.train import fit

    if not (a.steps or a.minutes):
        raise RunError("give --steps or --minutes")
    if a.workers < 1:
        raise RunError("--workers must be at least 1")
    if a.workers > 1 or a.address:
        from tng.jobs.train_ray import train_ray

        train_ray(a)
    else:
        fit(a)


def cmd_export(a: argparse.Namespace) -> None:
    from tng.codec.registry import available_models, export_weights
    from tng.jobs.common import RunError
    from tng.jobs.train import load_checkpoint

    if a.model_id in available_models():
        raise RunError(f"model id {a.model_id} exists already; ids are never reused")
    ck = load_checkpoint(a.checkpoint, "cpu")
    export_weights(ck["model"], ck["n"], ck["m"], a.model_id, a.output, a.name,
                   {"steps": str(ck["step"]), "train_minutes": f"{ck['elapsed'] / 60:.1f}"})
    print(f"{a.checkpoint} -> {a.output}: model id {a.model_id} ({a.name}), step {ck['step']}")


def _quality(s: str) -> float:
    q = float(s)
    if not 1 <= q <= 8:
        raise argparse.ArgumentTypeError(f"quality must be between 1 and 8, got {s}")
    return q


def parser() -> argparse.ArgumentParser:
    from tng.jobs.common import effort_parent, in_process_parent, ray_parent, storage_options_parent

    p = argparse.ArgumentParser(prog="tng", description="TNG learned image compression")
    sub = p.add_subparsers(dest="command", required=True)
    effort = effort_parent()
    _add_image_commands(sub, effort)
    _add_archive_jobs(sub, storage=storage_options_parent(), on_ray=ray_parent(), effort=effort,
                      small=in_process_parent())
    _add_model_commands(sub)
    return p


def _add_image_commands(sub, effort: argparse.ArgumentParser) -> None:
    """encode and decode: one file, in this process."""
    from tng.codec.images import DEFAULT_MAX_PIXELS
    from tng.codec.registry import DEFAULT_MODEL_ID

    e = sub.add_parser("encode", help="compress an image to a .tng file", parents=[effort])
    e.add_argument("input")
    e.add_argument("output")
    g = e.add_mutually_exclusive_group()
    g.add_argument("--quality", "-q", type=_quality, default=4.0, help="1 (smallest) to 8 (best), fractions allowed; default 4")
    g.add_argument("--target-psnr", type=float, help="lowest quality whose PSNR reaches this many dB")
    g.add_argument("--target-bpp", type=float, help="highest quality whose size stays within this many bits per pixel")
    e.add_argument("--model", type=int, default=DEFAULT_MODEL_ID, help="model id (see `tng models`)")
    e.add_argument("--tile", type=int, default=1024, help="tile side in pixels (multiple of 64); bounds memory")
    e.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="decompress a .tng file to an image (format from the extension)")
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    d.set_defaults(func=cmd_decode)


def _add_archive_jobs(sub, *, storage: argparse.ArgumentParser, on_ray: argparse.ArgumentParser,
                      effort: argparse.ArgumentParser, small: argparse.ArgumentParser) -> None:
    """The jobs on an archive: (name, help, the shared options they take, their own, their entry point,
    which returns the exit status)."""
    from tng.jobs import compact, compress, decompress, report

    for name, text, parents, add, fn in [
        ("compress", "compress a folder or bucket of images into Parquet shards (Ray Data; a few files in this process)", [on_ray, small, effort, storage],
         compress.add_arguments, compress.main),
        ("decompress", "decode archive rows back to image files (Ray Data; a few rows in this process)", [on_ray, small, storage],
         decompress.add_decompress_arguments, decompress.decompress),
        ("audit", "decode archive rows and verify them; exit 1 on any mismatch", [on_ray, small, storage],
         decompress.add_audit_arguments, decompress.audit),
        ("report", "rate–distortion report of an archive: report.html, report.md, summary.json",
         [on_ray, small, effort, storage],
         report.add_report_arguments, report.report),
        ("info", "an archive's headline figures", [storage], report.add_info_arguments, report.info),
        ("compact", "rewrite an archive's shards as few, keeping each key's current row", [storage],
         compact.add_arguments, compact.main),
    ]:
        job = sub.add_parser(name, help=text, parents=parents)
        add(job)
        job.set_defaults(func=fn)


def _add_model_commands(sub) -> None:
    """models, train, export: the weights."""
    from tng.jobs import train

    m = sub.add_parser("models", help="list the model ids this installation can decode")
    m.set_defaults(func=cmd_models)

    t = sub.add_parser("train", help="train the codec's weights on a folder of images")
    train.add_arguments(t)
    t.set_defaults(func=cmd_train)
    x = sub.add_parser("export", help="turn a training checkpoint into a weights file with a new model id")
    x.add_argument("checkpoint", help="a last.pt, or a training state folder (tng train --state-out)")
    x.add_argument("output", help="a .safetensors path, in codec/weights/ or a folder on TNG_MODEL_PATH")
    x.add_argument("--model-id", type=int, required=True)
    x.add_argument("--name", required=True)
    x.set_defaults(func=cmd_export)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status. Each failure a user can cause is one line on stderr, status 1."""
    args = parser().parse_args(argv)
    from tng.codec.errors import TNGError
    from tng.jobs.common import RunError
    from tng.jobs.stderr_filter import filtered_stderr

    try:
        with filtered_stderr():  # one known-harmless line of Ray's core is not shown (see there)
            return args.func(args) or 0
    except (TNGError, RunError, OSError) as e:
        print(f"tng: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tng: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
