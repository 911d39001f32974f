"""The per-batch work of the jobs, as Ray Data UDFs. Every input row leaves as exactly one output row:
all per-image failures are caught here and become `status='error'` rows with the reason.

- `load_batch` (tasks): read each file through fsspec, hash it, decode and validate the image; JPEGs
  under `--jpeg lossless|keep` are recompressed (JPEG XL) or kept here, their pixels not decoded, and
  so is every file under `--lossless` (codec/classic.py `store_lossless`).
- `CompressActor` (actor pool): holds the model; encodes a batch (tiles of equal size share network
  passes, see `Codec.encode_batch`), measures, builds the archive rows.
- `classic_batch` (tasks, after the actors, for `--codec avif|jxl|auto`): searches the classic codecs
  for each image's target and keeps the smallest file that reaches it (codec/classic.py `choose`).
- `DecodeActor` (actor pool): decodes archive rows for `decompress` and `audit` (codec/formats.py).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import pickle

import numpy as np
import pyarrow as pa

from tng.codec import Codec, TNGError, ms_ssim, open_image, psnr
from tng.codec.classic import DEFAULT_CHOICE, LOSSY, Candidate, choose, exact_pixels, pixels_sha256, store_lossless
from tng.codec.effort import DEFAULT_EFFORT
from tng.codec.formats import format_of
from tng.codec.images import DEFAULT_MAX_PIXELS, read_info, to_pil
from tng.codec.jpeg_transcode import DEFAULT_JPEG_CHOICE, is_jpeg, jpeg_info, store_jpeg

from .archive import SCHEMA, open_fs

MSSSIM_MAX_PIXELS = 16_000_000
CHUNK_PIXELS = 16_000_000  # a compress actor decodes and encodes at most about this many source pixels at once
# What the classic stage searches, in order (the likeliest winner first: its file bounds the others'
# searches), for each --codec; TNG's own file, coded by the actors, is a candidate under auto only.
CLASSIC_ORDER = {"avif": ("avif", "jxl"), "jxl": ("jxl", "avif"), "auto": ("avif", "jxl")}
CARRIED = ("source_file",)  # what the actors pass on to the classic stage beside the archive row


def load_batch(batch: dict, storage_options: dict, max_pixels: int, jpeg: str = DEFAULT_JPEG_CHOICE,
               lossless: bool = False) -> dict:
    """Columns in: key, source_uri, source_version and optionally archived_sha256. Out: the source facts, the decoded image (a pickled
    SourceImage, passed between our own stages only; empty when it could not be read) and an error.

    Rows whose sha256 is their archived_sha256 (the archive's current row holds this content) are left
    out: nothing to do.
    A JPEG file under `jpeg` 'lossless' or 'keep', and with `lossless` every file, is settled here:
    `stored` names the codec of what `data` then holds (the JPEG XL file, the lossless JPEG XL of its
    pixels, or the file as it is), `note` says why a file was kept, `pixels_sha256` is the hash of the
    pixels a pixel form restores; the image column holds the file's header (an ImageInfo) instead of
    its pixels.
    """
    out = {k: [] for k in ("key", "source_uri", "source_version", "source_bytes", "source_sha256", "data", "image",
                           "stored", "note", "pixels_sha256", "error")}
    archived = batch.get("archived_sha256", [None] * len(batch["key"]))
    for key, uri, version, archived_sha in zip(batch["key"], batch["source_uri"], batch["source_version"], archived):
        data, image, error, sha, stored = b"", None, None, None, None
        try:
            fs, path = open_fs(uri, storage_options)
            data = fs.cat_file(path)
            sha = hashlib.sha256(data).hexdigest()
            if sha == archived_sha:
                continue
            if (jpeg != "tng" or lossless) and is_jpeg(data):
                image = jpeg_info(data, max_pixels)
                stored = store_jpeg(data, "lossless" if lossless and jpeg == "tng" else jpeg)
            elif lossless:
                image = read_info(data, max_pixels)
                stored = store_lossless(data, max_pixels)
            else:
                image = open_image(data, max_pixels=max_pixels)
        except TNGError as e:
            error = str(e)
        except Exception as e:  # I/O: permissions, vanished object, network
            error = f"cannot read source: {type(e).__name__}: {e}"
        out["key"].append(key)
        out["source_uri"].append(uri)
        out["source_version"].append(version or None)
        out["source_bytes"].append(len(data))
        out["source_sha256"].append(sha)
        out["data"].append(stored.data if stored else data)
        out["image"].append(pickle.dumps(image) if image is not None else b"")  # opaque to Arrow
        # "" rather than None: a column of only None reaches the actor as float NaN
        out["stored"].append(stored.codec if stored else "")
        out["note"].append(stored.note or "" if stored else "")
        out["pixels_sha256"].append(stored.pixels_sha256 or "" if stored else "")
        out["error"].append(error)
    return {k: np.array(v, dtype=np.int64 if k == "source_bytes" else object) for k, v in out.items()}


class CompressActor:
    """Holds one Codec (model + entropy coder). Never grows the archive: when the .tng would be larger
    than the source file, the row keeps the source bytes (codec='source').

    With `codec` other than 'tng', TNG's file is a candidate (auto), or the fallback and, at --quality,
    what sets the target (avif, jxl): the rows leave with their `target_psnr` and their source file
    (column `source_file`) for `classic_batch`, which applies the source rule to whatever it keeps."""

    def __init__(self, quality: float, target_psnr: float | None, model_id: int, run_id: str, threads: int,
                 device: str | None = None, max_pixels: int | None = None, effort: int = DEFAULT_EFFORT,
                 codec: str = DEFAULT_CHOICE):
        import torch

        torch.set_num_threads(max(1, threads))  # Ray sets OMP_NUM_THREADS=1 in workers
        self.codec = Codec(model_id=model_id, device=device, effort=effort,
                           **({"max_pixels": max_pixels} if max_pixels else {}))
        self.quality, self.target_psnr, self.run_id, self.choice = quality, target_psnr, run_id, codec

    def __call__(self, batch: dict) -> dict:
        n = len(batch["key"])
        rows = [self._row(batch, i) for i in range(n)]
        sources: dict[int, object] = {}
        pixels = 0
        for i in range(n):
            if len(batch["image"][i]):
                src = pickle.loads(batch["image"][i])
                rows[i].update(source_format=src.source_format, width=src.width, height=src.height,
                               mode=src.source_mode, exif=src.exif, icc_profile=src.icc_profile)
                if batch["stored"][i]:  # settled by load_batch (a JPEG recompressed or kept, --lossless)
                    self._stored(rows[i], batch["stored"][i], batch["data"][i], batch["note"][i] or None,
                                 batch["pixels_sha256"][i] or None)
                else:
                    sources[i] = src
                    pixels += src.width * src.height
                    if self.choice != "tng":  # for the classic stage
                        rows[i]["source_file"] = batch["data"][i]
            if sources and (pixels >= CHUNK_PIXELS or i == n - 1):
                self._encode(batch, rows, sources)
                sources, pixels = {}, 0
        names = SCHEMA.names + (list(CARRIED) if self.choice != "tng" else [])
        return {name: np.array([r.get(name, b"") if name in CARRIED else r[name] for r in rows], dtype=object)
                for name in names}

    def _encode(self, batch: dict, rows: list[dict], sources: dict) -> None:
        try:  # equal-size tiles of these images go through the networks together
            encoded = self.codec.encode_batch(list(sources.values()), quality=self.quality, target_psnr=self.target_psnr)
        except Exception as e:
            encoded = [e] * len(sources)
        done = dt.datetime.now(dt.timezone.utc)
        for (i, src), enc in zip(sources.items(), encoded):
            rows[i]["encoded_at"] = done
            rows[i]["target_psnr"] = self.target_psnr if self.choice != "tng" else None
            if isinstance(enc, Exception):  # one image must not stop the job; record why
                rows[i]["error"] = f"encode failed: {enc}" if isinstance(enc, TNGError) else f"encode failed: {type(enc).__name__}: {enc}"
            else:
                self._encoded(rows[i], src, batch["data"][i], enc)

    def _stored(self, row: dict, codec: str, data: bytes, note: str | None, pixels: str | None) -> None:
        """A lossless row: `data` restores the source file exactly (sha256 of it = source_sha256), or its
        exact pixels (their hash: `pixels`)."""
        row.update(codec=codec, note=note, bitstream=data, bitstream_bytes=len(data),
                   bpp=len(data) * 8 / (row["width"] * row["height"]), decoded_sha256=pixels or row["source_sha256"],
                   status="ok", error=None)

    def _row(self, b: dict, i: int) -> dict:
        row = {name: None for name in SCHEMA.names}
        row.update(key=b["key"][i], source_uri=b["source_uri"][i], source_bytes=int(b["source_bytes"][i]),
                   source_sha256=b["source_sha256"][i], source_version=b["source_version"][i], run_id=self.run_id,
                   encoded_at=dt.datetime.now(dt.timezone.utc), status="error", error=b["error"][i])
        return row

    def _encoded(self, row: dict, src, data: bytes, enc) -> None:
        row.update(quality=enc.quality, setting=enc.quality, model_id=self.codec.model_id, status="ok", error=None)
        if self.choice != "tng":
            # At --quality, TNG's PSNR is every codec's target; its file, kept whatever its size, is a
            # candidate or the fallback (classic_batch applies the source rule).
            row["target_psnr"] = row["target_psnr"] or enc.psnr
            row["bytes_tng"] = len(enc.data) if enc.psnr >= row["target_psnr"] else None
        if len(enc.data) < len(data) or self.choice != "tng":
            decoded = to_pil(enc.reconstruction, src.alpha, src.colour)
            row.update(codec="tng", bitstream=enc.data, psnr=enc.psnr, ms_ssim=_ms_ssim(src.rgb, enc.reconstruction),
                       decoded_sha256=pixels_sha256(np.asarray(decoded)))
        else:
            row.update(codec="source", bitstream=data, decoded_sha256=row["source_sha256"],
                       note=f"kept as it is: TNG would not make it smaller ({len(enc.data)} bytes)")
        row.update(bitstream_bytes=len(row["bitstream"]), bpp=len(row["bitstream"]) * 8 / (src.width * src.height))


def _ms_ssim(rgb: np.ndarray, decoded: np.ndarray) -> float | None:
    # MS-SSIM works in float64 on the whole image: skipped above MSSSIM_MAX_PIXELS to bound memory.
    return ms_ssim(rgb, decoded) if rgb.shape[0] * rgb.shape[1] <= MSSSIM_MAX_PIXELS else None


def classic_batch(batch: pa.Table, codec: str, max_pixels: int) -> pa.Table:
    """Ray Data UDF after the compress actors (--codec avif|jxl|auto; pyarrow batches): each image that
    carries its source file (`source_file`) and a target gets the file its codec choice keeps (module
    docstring of codec/classic.py; CLASSIC_ORDER), the evidence of the choice and the source rule; every
    row leaves as an archive row. If the classic codecs fail on an image for a reason of their own, the
    row keeps TNG's file (or its error) and says why."""
    rows = batch.to_pylist()
    for row in rows:
        file = row.pop("source_file")
        if not file or row["target_psnr"] is None or np.isnan(row["target_psnr"]):
            continue  # settled before the actors, or unreadable, or TNG failed at --quality: no target
        before = dict(row)
        try:
            _classic(row, file, codec, max_pixels)
        except Exception as e:  # one image must not stop the job
            row.clear()
            row.update(before)
            reason = f"classic codecs failed: {e if isinstance(e, TNGError) else f'{type(e).__name__}: {e}'}"
            if row["status"] == "ok":
                _keep_smaller(row, file, [reason])
            else:
                row["error"] = f"{row['error']}; {reason}"
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _classic(row: dict, file: bytes, codec: str, max_pixels: int) -> None:
    src = open_image(file, max_pixels=max_pixels)  # decoded here, not carried from the actors: memory
    target = float(row["target_psnr"])
    tng = None
    if row["status"] == "ok":  # TNG's file (the actors keep it whatever its size in these runs)
        tng = Candidate("tng", row["quality"], row["bitstream"], row["psnr"], None, row["psnr"] >= target)
    if src.alpha is not None:  # only TNG keeps the alpha plane without loss
        notes = ["alpha: only TNG keeps it without loss, the classic codecs were not tried"]
        if tng is None:
            row["error"] = "; ".join([row["error"]] + notes)
        else:
            _keep_smaller(row, file, notes)
        return
    first, *fallbacks = CLASSIC_ORDER[codec]
    if codec == "auto":
        choice = choose(src, target, [LOSSY[n] for n in CLASSIC_ORDER[codec]], tng)
    else:  # one codec; the next only where it failed on the image (not where it missed the target)
        choice = choose(src, target, [LOSSY[first]])
        for name in fallbacks:
            if choice.winner is not None or not choice.notes:
                break
            more = choose(src, target, [LOSSY[name]])
            choice.winner, choice.notes = more.winner, choice.notes + more.notes
            choice.tried.update(more.tried)
            if more.winner is not None:
                choice.notes.append(f"stored as {LOSSY[name].label} instead")
    row.update({f"bytes_{name}": n for name, n in choice.tried.items() if name != "tng"})  # TNG's: the actors'
    notes = list(choice.notes)
    winner = choice.winner
    if winner is None:  # nothing reaches the target: TNG's file, as TNG alone would have kept it
        if tng is None:
            row["error"] = "; ".join([row["error"] or "TNG failed"] + notes)
            return
        notes.append(f"no codec reached {target:.2f} dB" if codec == "auto" else
                     f"{LOSSY[first].label} did not reach {target:.2f} dB: TNG's file kept")
    elif winner is not tng:
        # Hashed as decompress and audit will restore it (the same decoder, codec/formats.py).
        restored = format_of(winner.codec).restore(winner.data, files=False)
        row.update(codec=winner.codec, setting=winner.setting, bitstream=winner.data, psnr=winner.psnr,
                   ms_ssim=_ms_ssim(src.rgb, winner.rgb), decoded_sha256=restored.sha256, status="ok", error=None)
    _keep_smaller(row, file, notes)


def _keep_smaller(row: dict, file: bytes, notes: list[str]) -> None:
    """The source rule, then the row's note and sizes: a row never holds more bytes than the file it stands for."""
    if len(row["bitstream"]) >= len(file):
        notes = notes + [f"kept as it is: {row['codec']} would not make it smaller ({len(row['bitstream'])} bytes)"]
        row.update(codec="source", bitstream=file, decoded_sha256=row["source_sha256"], psnr=None, ms_ssim=None,
                   setting=None)
    row.update(note="; ".join(notes) or None, bitstream_bytes=len(row["bitstream"]),
               bpp=len(row["bitstream"]) * 8 / (row["width"] * row["height"]))


class DecodeActor:
    """Decodes archive rows, whatever form they hold (codec/formats.py). Out: key, codec, the file to
    write (PNG for the pixel forms; the original file, byte for byte, for 'source' and 'jpeg-jxl'), its
    suffix, the sha256 of the decoded pixels (or of the restored file) and whether it matches the row's
    (and, for the file forms, the original's source_sha256); with a source root, PSNR against the
    original (lossy forms) or the check that the original's exact pixels are the ones restored
    ('jxl-lossless'); and the PSNR the row recorded (`stored_psnr`). With files=False (audit) the file
    is checked but not sent on (None), and a decoded image is not made into a PNG."""

    def __init__(self, threads: int, source_root: str | None = None, storage_options: dict | None = None,
                 files: bool = True):
        import torch

        torch.set_num_threads(max(1, threads))
        self.source_root, self.storage_options, self.files = source_root, storage_options or {}, files

    def __call__(self, batch: dict) -> dict:
        rows = [self._row(batch, i) for i in range(len(batch["key"]))]
        return {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]} if rows else {}

    def _row(self, b: dict, i: int) -> dict:
        stored = b["psnr"][i] if "psnr" in b else None  # NaN or None where the row has none
        row = {"key": b["key"][i], "codec": b["codec"][i], "file": None, "suffix": None, "decoded_sha256": None,
               "hash_ok": False, "psnr": None, "error": None,
               "stored_psnr": None if stored is None or np.isnan(stored) else float(stored)}
        try:
            form = format_of(b["codec"][i])
            meta = {k: b[k][i] if k in b and b[k][i] is not None and len(b[k][i]) else None for k in ("exif", "icc_profile")}
            restored = form.restore(b["bitstream"][i], meta["exif"], meta["icc_profile"], files=self.files)
            row.update(file=restored.file, suffix=restored.suffix, decoded_sha256=restored.sha256)
            row["hash_ok"] = restored.sha256 == b["decoded_sha256"][i]
            if form.restores_file:  # the very file that was archived
                row["hash_ok"] = row["hash_ok"] and restored.sha256 == b["source_sha256"][i]
            if self.source_root is not None and not form.restores_file:
                source = self._source(b["key"][i])
                if form.lossless:  # the original's exact pixels, hashed anew
                    pixels = exact_pixels(source, DEFAULT_MAX_PIXELS)
                    row["hash_ok"] = row["hash_ok"] and pixels is not None and pixels_sha256(pixels) == restored.sha256
                else:
                    row["psnr"] = psnr(open_image(source).rgb, restored.rgb)
        except Exception as e:
            row["error"] = str(e) if isinstance(e, TNGError) else f"{type(e).__name__}: {e}"
        return row

    def _source(self, key: str) -> bytes:
        fs, root = open_fs(self.source_root, self.storage_options)
        return fs.cat_file(f"{root.rstrip('/')}/{key}")
