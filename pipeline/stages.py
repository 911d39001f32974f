"""The per-batch work of the jobs, as Ray Data UDFs. Every input row leaves as exactly one output row:
all per-image failures are caught here and become `status='error'` rows with the reason.

- `load_batch` (tasks): read each file through fsspec, hash it, decode and validate the image; JPEGs
  under `--jpeg lossless|keep` are recompressed (JPEG XL) or kept here, their pixels not decoded.
- `CompressActor` (actor pool): holds the model; encodes a batch (tiles of equal size share network
  passes, see `Codec.encode_batch`), measures, builds the archive rows.
- `DecodeActor` (actor pool): decodes archive rows for `decompress` and `audit`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import pickle

import numpy as np

from tng.codec import Codec, TNGError, ms_ssim, open_image, psnr
from tng.codec.images import to_pil
from tng.codec.jpeg_transcode import CODEC as JPEG_XL, DEFAULT_JPEG_CHOICE, is_jpeg, jpeg_info, restore, store_jpeg

from .archive import SCHEMA, open_fs

MSSSIM_MAX_PIXELS = 16_000_000
CHUNK_PIXELS = 16_000_000  # a compress actor decodes and encodes at most about this many source pixels at once


def _pixels_sha256(image) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(image)).tobytes()).hexdigest()


def load_batch(batch: dict, storage_options: dict, max_pixels: int, jpeg: str = DEFAULT_JPEG_CHOICE) -> dict:
    """Columns in: key, source_uri, source_version and optionally archived_sha256. Out: the source facts, the decoded image (a pickled
    SourceImage, passed between our own stages only; empty when it could not be read) and an error.

    Rows whose sha256 is their archived_sha256 (the archive's current row holds this content) are left
    out: nothing to do.
    A JPEG file under `jpeg` 'lossless' or 'keep' is settled here, without decoding its pixels: `stored`
    names the codec of what `data` then holds (the JPEG XL file, or the file as it is), `note` says why
    a file was kept; the image column holds its header (an ImageInfo) instead of the pixels.
    """
    out = {k: [] for k in ("key", "source_uri", "source_version", "source_bytes", "source_sha256", "data", "image",
                           "stored", "note", "error")}
    archived = batch.get("archived_sha256", [None] * len(batch["key"]))
    for key, uri, version, archived_sha in zip(batch["key"], batch["source_uri"], batch["source_version"], archived):
        data, image, error, sha, stored = b"", None, None, None, None
        try:
            fs, path = open_fs(uri, storage_options)
            data = fs.cat_file(path)
            sha = hashlib.sha256(data).hexdigest()
            if sha == archived_sha:
                continue
            if jpeg != "tng" and is_jpeg(data):
                image = jpeg_info(data, max_pixels)
                stored = store_jpeg(data, jpeg)
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
        out["error"].append(error)
    return {k: np.array(v, dtype=np.int64 if k == "source_bytes" else object) for k, v in out.items()}


class CompressActor:
    """Holds one Codec (model + entropy coder). Never grows the archive: when the .tng would be larger
    than the source file, the row keeps the source bytes (codec='source')."""

    def __init__(self, quality: float, target_psnr: float | None, model_id: int, run_id: str, threads: int,
                 device: str | None = None, max_pixels: int | None = None, refine: int = 0):
        import torch

        torch.set_num_threads(max(1, threads))  # Ray sets OMP_NUM_THREADS=1 in workers
        self.codec = Codec(model_id=model_id, device=device, refine=refine,
                           **({"max_pixels": max_pixels} if max_pixels else {}))
        self.quality, self.target_psnr, self.run_id = quality, target_psnr, run_id

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
                if batch["stored"][i]:  # settled by load_batch (a JPEG recompressed or kept)
                    self._stored(rows[i], batch["stored"][i], batch["data"][i], batch["note"][i] or None)
                else:
                    sources[i] = src
                    pixels += src.width * src.height
            if sources and (pixels >= CHUNK_PIXELS or i == n - 1):
                self._encode(batch, rows, sources)
                sources, pixels = {}, 0
        return {name: np.array([r[name] for r in rows], dtype=object) for name in SCHEMA.names}

    def _encode(self, batch: dict, rows: list[dict], sources: dict) -> None:
        try:  # equal-size tiles of these images go through the networks together
            encoded = self.codec.encode_batch(list(sources.values()), quality=self.quality, target_psnr=self.target_psnr)
        except Exception as e:
            encoded = [e] * len(sources)
        done = dt.datetime.now(dt.timezone.utc)
        for (i, src), enc in zip(sources.items(), encoded):
            rows[i]["encoded_at"] = done
            if isinstance(enc, Exception):  # one image must not stop the job; record why
                rows[i]["error"] = f"encode failed: {enc}" if isinstance(enc, TNGError) else f"encode failed: {type(enc).__name__}: {enc}"
            else:
                self._encoded(rows[i], src, batch["data"][i], enc)

    def _stored(self, row: dict, codec: str, data: bytes, note: str | None) -> None:
        """A lossless row: `data` restores the source file exactly (sha256 of it = source_sha256)."""
        row.update(codec=codec, note=note, bitstream=data, bitstream_bytes=len(data),
                   bpp=len(data) * 8 / (row["width"] * row["height"]), decoded_sha256=row["source_sha256"],
                   status="ok", error=None)

    def _row(self, b: dict, i: int) -> dict:
        row = {name: None for name in SCHEMA.names}
        row.update(key=b["key"][i], source_uri=b["source_uri"][i], source_bytes=int(b["source_bytes"][i]),
                   source_sha256=b["source_sha256"][i], source_version=b["source_version"][i], run_id=self.run_id,
                   encoded_at=dt.datetime.now(dt.timezone.utc), status="error", error=b["error"][i])
        return row

    def _encoded(self, row: dict, src, data: bytes, enc) -> None:
        if len(enc.data) < len(data):
            decoded = to_pil(enc.reconstruction, src.alpha, src.colour)
            # MS-SSIM works in float64 on the whole image: skipped above MSSSIM_MAX_PIXELS to bound memory.
            small = src.width * src.height <= MSSSIM_MAX_PIXELS
            row.update(codec="tng", bitstream=enc.data, psnr=enc.psnr,
                       ms_ssim=ms_ssim(src.rgb, enc.reconstruction) if small else None,
                       decoded_sha256=_pixels_sha256(decoded))
        else:
            row.update(codec="source", bitstream=data, decoded_sha256=row["source_sha256"],
                       note=f"kept as it is: TNG would not make it smaller ({len(enc.data)} bytes)")
        row.update(bitstream_bytes=len(row["bitstream"]), bpp=len(row["bitstream"]) * 8 / (src.width * src.height),
                   quality=enc.quality, model_id=self.codec.model_id, status="ok", error=None)


class DecodeActor:
    """Decodes archive rows. Out: key, codec, the decoded image file bytes (PNG for 'tng'; the original
    file, byte for byte, for 'source' and 'jpeg-jxl'), its suffix, the sha256 of the decoded pixels
    (or of the restored file) and whether it matches, PSNR against the original when a source
    root is given, and the PSNR the row recorded (`stored_psnr`). With files=False (audit) the file
    is checked but not sent on (None), and a decoded image is not made into a PNG."""

    def __init__(self, threads: int, source_root: str | None = None, storage_options: dict | None = None,
                 files: bool = True):
        import torch

        torch.set_num_threads(max(1, threads))
        self.codec = Codec(device=None)
        self.source_root, self.storage_options, self.files = source_root, storage_options or {}, files

    def __call__(self, batch: dict) -> dict:
        rows = [self._row(batch, i) for i in range(len(batch["key"]))]
        return {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]} if rows else {}

    def _row(self, b: dict, i: int) -> dict:
        from tng.codec import image_bytes

        stored = b["psnr"][i] if "psnr" in b else None  # NaN or None where the row has none
        row = {"key": b["key"][i], "codec": b["codec"][i], "file": None, "suffix": None, "decoded_sha256": None,
               "hash_ok": False, "psnr": None, "error": None,
               "stored_psnr": None if stored is None or np.isnan(stored) else float(stored)}
        try:
            if b["codec"][i] in ("source", JPEG_XL):  # the original file, byte for byte
                file = b["bitstream"][i] if b["codec"][i] == "source" else restore(b["bitstream"][i])
                row.update(file=file if self.files else None, suffix="", decoded_sha256=hashlib.sha256(file).hexdigest())
            elif b["codec"][i] == "tng":
                dec = self.codec.decode(b["bitstream"][i])
                image = dec.image
                row.update(file=image_bytes(image, "PNG", dec.exif, dec.icc_profile) if self.files else None,
                           suffix=".png", decoded_sha256=_pixels_sha256(image))
                if self.source_root is not None:
                    row["psnr"] = self._psnr_vs_source(b["key"][i], dec.rgb)
            else:
                raise TNGError(f"unknown codec {b['codec'][i]!r} (a newer TNG wrote this row?)")
            row["hash_ok"] = row["decoded_sha256"] == b["decoded_sha256"][i]
            if b["codec"][i] != "tng":  # lossless: the very file that was archived
                row["hash_ok"] = row["hash_ok"] and row["decoded_sha256"] == b["source_sha256"][i]
        except Exception as e:
            row["error"] = str(e) if isinstance(e, TNGError) else f"{type(e).__name__}: {e}"
        return row

    def _psnr_vs_source(self, key: str, rgb: np.ndarray) -> float:
        fs, root = open_fs(self.source_root, self.storage_options)
        src = open_image(fs.cat_file(f"{root.rstrip('/')}/{key}"))
        return psnr(src.rgb, rgb)
