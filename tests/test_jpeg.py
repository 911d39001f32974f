"""JPEG archives: lossless recompression with JPEG XL beside TNG, with the original file given back
byte for byte; JPEGs that cannot be recompressed are kept with the reason. Real libjxl, real Ray,
Parquet read back with plain pyarrow."""
from __future__ import annotations

import hashlib
import io
import json
from functools import cache

import imagecodecs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageCms

from conftest import ROOT, SAMPLES
from tng.codec import TNGError
from tng.codec.jpeg_transcode import CODEC, describe, jpeg_info, recompress, restore, store_jpeg
from tng.jobs.cli import main

ARITHMETIC = ROOT / "tests" / "data" / "arithmetic.jpg"


def _photo(w: int = 240, h: int = 160) -> Image.Image:
    return Image.open(SAMPLES / "coffee.png").convert("RGB").crop((100, 80, 100 + w, 80 + h))


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "TNG test camera"  # Make
    exif[0x0112] = 6  # Orientation: rotated; pixels stay as stored
    return exif.tobytes()


@cache  # the same bytes every call: a new sRGB profile would carry a new creation time
def transcodable() -> dict[str, bytes]:
    """Camera-style JPEGs libjxl can recompress: baseline 4:2:0, progressive, 4:4:4, gray, EXIF + ICC."""
    photo = _photo()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return {
        "baseline-420.jpg": _jpeg(photo, quality=90),
        "progressive.jpeg": _jpeg(photo, quality=85, progressive=True),
        "full-chroma-444.JPG": _jpeg(photo, quality=92, subsampling=0),
        "gray.jpg": _jpeg(photo.convert("L"), quality=88),
        "camera/exif-icc.jpg": _jpeg(photo, quality=95, exif=_exif(), icc_profile=srgb),
    }


@cache
def untranscodable() -> dict[str, tuple[bytes, str]]:
    """JPEGs libjxl cannot recompress, and what the kept row's note must name."""
    rgb = np.asarray(_photo(96, 64))
    whole = _jpeg(_photo(), quality=90)
    return {
        "odd/arithmetic.jpg": (ARITHMETIC.read_bytes(), "arithmetic-coded"),
        "odd/lossless.jpg": (imagecodecs.jpeg8_encode(rgb, lossless=True), "lossless (SOF3)"),
        "odd/twelve-bit.jpg": (imagecodecs.jpeg8_encode(rgb.astype(np.uint16) * 16, bitspersample=12), "12-bit"),
        "odd/truncated.jpg": (whole[: len(whole) * 2 // 3], "truncated"),
    }


# ---------------------------------------------------------------------------------------------- the codec module

@pytest.mark.parametrize("name", sorted(transcodable()))
def test_recompression_gives_back_the_original_file(name):
    jpeg = transcodable()[name]
    jxl = recompress(jpeg)
    assert restore(jxl) == jpeg
    assert len(jxl) < len(jpeg)
    stored = store_jpeg(jpeg, "lossless")
    assert (stored.codec, stored.data, stored.note) == (CODEC, jxl, None)


@pytest.mark.parametrize("name", sorted(untranscodable()))
def test_untranscodable_jpegs_are_kept_with_the_reason(name):
    jpeg, reason = untranscodable()[name]
    with pytest.raises(TNGError, match="JPEG XL cannot transcode"):
        recompress(jpeg)
    stored = store_jpeg(jpeg, "lossless")
    assert stored.codec == "source" and stored.data == jpeg
    assert stored.note.startswith("kept as it is: JPEG XL cannot transcode") and reason in stored.note


def test_frame_headers_are_described():
    assert describe(transcodable()["progressive.jpeg"]) == "progressive, 8-bit"
    assert describe(ARITHMETIC.read_bytes()) == "arithmetic-coded sequential, 8-bit"
    assert describe(b"\xff\xd8\xff\xe0\x00\x10JFIF") == "damaged: truncated before the frame header"
    # Pillow cannot read a 12-bit JPEG; its frame header still gives the facts a kept row records.
    info = jpeg_info(untranscodable()["odd/twelve-bit.jpg"][0], max_pixels=10**6)
    assert (info.width, info.height, info.source_mode, info.source_format) == (96, 64, "RGB;12", "JPEG")
    with pytest.raises(TNGError, match="pixel limit"):
        jpeg_info(untranscodable()["odd/twelve-bit.jpg"][0], max_pixels=1000)


def test_exact_or_not_done(monkeypatch):
    """A transcode that would not restore the same bytes is refused, and the file kept."""
    jpeg = transcodable()["baseline-420.jpg"]
    real = imagecodecs.jpegxl_decode_jpeg
    monkeypatch.setattr(imagecodecs, "jpegxl_decode_jpeg", lambda data, **kw: real(data, **kw)[:-1] + b"\x00")
    with pytest.raises(TNGError, match="not exact"):
        recompress(jpeg)
    stored = store_jpeg(jpeg, "lossless")
    assert stored.codec == "source" and "not exact" in stored.note


def test_never_grows_and_keep_keeps(monkeypatch):
    jpeg = transcodable()["gray.jpg"]
    assert store_jpeg(jpeg, "keep") == type(store_jpeg(jpeg, "keep"))("source", jpeg, "kept as it is (--jpeg keep)")
    from tng.codec import jpeg_transcode

    monkeypatch.setattr(jpeg_transcode, "recompress", lambda data: data + b"more")
    stored = store_jpeg(jpeg, "lossless")
    assert stored.codec == "source" and "would not make it smaller" in stored.note


# ---------------------------------------------------------------------------------------------- the archive jobs

@pytest.fixture
def jpegs(tmp_path):
    src = tmp_path / "src"
    for name, data in transcodable().items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    for name, (data, _) in untranscodable().items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (src / "photo.png").write_bytes((SAMPLES / "chelsea.png").read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return src


def _table(archive):
    return pq.read_table(archive / "shards")  # plain pyarrow


def test_lossless_is_the_default_and_every_jpeg_comes_back_byte_for_byte(ray_local, jpegs, tmp_path, capsys):
    archive, out = tmp_path / "archive", tmp_path / "restored"
    assert main(["compress", str(jpegs), str(archive), "--workers", "1"]) == 0
    assert "10 ok (5 JPEG recompressed losslessly (JPEG XL), 4 kept as source, 1 TNG), 1 errors" in capsys.readouterr().out
    table = _table(archive)
    keys = table["key"].to_pylist()
    assert sorted(keys) == sorted([*transcodable(), *untranscodable(), "photo.png", "broken.jpg"])
    assert len(keys) == len(set(keys))  # one row per key, not one per attempt
    rows = {r["key"]: r for r in table.to_pylist()}
    for name, data in transcodable().items():
        r = rows[name]
        assert (r["status"], r["codec"], r["note"]) == ("ok", CODEC, None), name
        assert restore(r["bitstream"]) == data and r["bitstream_bytes"] < r["source_bytes"] == len(data)
        assert r["decoded_sha256"] == r["source_sha256"] == hashlib.sha256(data).hexdigest()
        assert r["psnr"] is None and r["quality"] is None and r["model_id"] is None
        assert r["bpp"] == pytest.approx(len(r["bitstream"]) * 8 / (r["width"] * r["height"]))
    assert rows["camera/exif-icc.jpg"]["exif"] and rows["camera/exif-icc.jpg"]["icc_profile"]
    assert rows["gray.jpg"]["mode"] == "L" and rows["progressive.jpeg"]["width"] == 240
    for name, (data, reason) in untranscodable().items():
        r = rows[name]
        assert (r["status"], r["codec"], r["bitstream"]) == ("ok", "source", data), name
        assert reason in r["note"], (name, r["note"])
    assert rows["odd/twelve-bit.jpg"]["mode"] == "RGB;12"
    assert (rows["photo.png"]["codec"], rows["photo.png"]["status"]) == ("tng", "ok")  # other formats: TNG as before
    assert rows["broken.jpg"]["status"] == "error" and "truncated image file" in rows["broken.jpg"]["error"]
    manifest = json.loads(next((archive / "runs").glob("*.json")).read_text())
    assert manifest["settings"]["jpeg"] == "lossless"
    assert (manifest["codec_jpeg_jxl"], manifest["codec_source"], manifest["codec_tng"]) == (5, 4, 1)

    assert main(["decompress", str(archive), str(out), "--workers", "1"]) == 0
    for name, data in transcodable().items():
        assert (out / name).read_bytes() == data, name  # original name, extension and bytes
    for name, (data, _) in untranscodable().items():
        assert (out / name).read_bytes() == data, name
    assert (out / "photo.png").exists() and not (out / "broken.jpg").exists()

    report = tmp_path / "audit.json"
    assert main(["audit", str(archive), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["rows_checked"] == 10

    # The audit checks the restored file against the original's hash: a damaged stream is caught.
    shard = next((archive / "shards").glob("*.parquet"))
    t = pq.read_table(shard)
    at = t["key"].to_pylist().index("progressive.jpeg")
    streams = t["bitstream"].to_pylist()
    hashes = t["source_sha256"].to_pylist()
    hashes[at] = "0" * 64
    t = t.set_column(t.schema.get_field_index("source_sha256"), "source_sha256", pa.array(hashes, pa.string()))
    damaged = bytearray(streams[t["key"].to_pylist().index("gray.jpg")])
    damaged[len(damaged) // 2] ^= 0xFF
    streams[t["key"].to_pylist().index("gray.jpg")] = bytes(damaged)
    t = t.set_column(t.schema.get_field_index("bitstream"), "bitstream", pa.array(streams, pa.binary()))
    pq.write_table(t, shard)
    capsys.readouterr()
    assert main(["audit", str(archive), "--report", str(report)]) == 1
    problems = {p["key"]: p["error"] for p in json.loads(report.read_text())["problems"]}
    assert problems["progressive.jpeg"] == "restored file does not match the original's source_sha256"
    assert set(problems) == {"progressive.jpeg", "gray.jpg"}


def test_jpeg_tng_and_keep(ray_local, jpegs, tmp_path):
    keep, tng = tmp_path / "keep", tmp_path / "tng"
    assert main(["compress", str(jpegs), str(keep), "--workers", "1", "--jpeg", "keep"]) == 0
    rows = {r["key"]: r for r in _table(keep).to_pylist()}
    for name in [*transcodable(), *untranscodable()]:
        assert (rows[name]["codec"], rows[name]["note"]) == ("source", "kept as it is (--jpeg keep)"), name
    assert main(["compress", str(jpegs), str(tng), "--workers", "1", "--jpeg", "tng", "--quality", "2"]) == 0
    rows = {r["key"]: r for r in _table(tng).to_pylist()}
    for name in transcodable():
        assert (rows[name]["status"], rows[name]["codec"], rows[name]["quality"]) == ("ok", "tng", 2.0), name
    assert rows["odd/arithmetic.jpg"]["codec"] == "tng"  # Pillow decodes it, so TNG can code it
    assert rows["odd/twelve-bit.jpg"]["status"] == "error"  # TNG needs pixels Pillow cannot give
    assert main(["decompress", str(tng), str(tmp_path / "out"), "--workers", "1", "--keys", "baseline-420.jpg"]) == 0
    with Image.open(tmp_path / "out" / "baseline-420.png") as im:
        assert im.size == (240, 160)


def test_info_and_report_show_bytes_per_codec(ray_local, jpegs, tmp_path, capsys):
    archive = tmp_path / "archive"
    assert main(["compress", str(jpegs), str(archive), "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["info", str(archive)]) == 0
    text = capsys.readouterr().out
    assert "5 JPEGs recompressed losslessly, 4 kept as source" in text
    assert "JPEG recompressed losslessly (JPEG XL): 5 images (50.0%)" in text and "kept as source: 4 images" in text
    assert main(["report", str(archive), str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    codecs = {c["codec"]: c for c in summary["by_codec"]}
    assert list(codecs) == ["tng", CODEC, "source"]
    rows = [r for r in _table(archive).to_pylist() if r["status"] == "ok"]
    for name, c in codecs.items():
        mine = [r for r in rows if r["codec"] == name]
        assert c["images"] == len(mine)
        assert c["bytes_in"] == sum(r["source_bytes"] for r in mine)
        assert c["saved_bytes"] == c["bytes_in"] - sum(r["bitstream_bytes"] for r in mine)
        assert c["share_of_bytes_out"] == pytest.approx(sum(r["bitstream_bytes"] for r in mine)
                                                        / sum(r["bitstream_bytes"] for r in rows))
    assert codecs[CODEC]["saved_bytes"] > 0 and codecs["source"]["saved_bytes"] == 0
    kept = {k["kind"]: k["count"] for k in summary["kept"]}
    assert sum(kept.values()) == 4
    html = (tmp_path / "report" / "report.html").read_text()
    assert "By codec" in html and "JPEG recompressed losslessly (JPEG XL)" in html and "why kept as source" in html


# ---------------------------------------------------------------------------------------------- JPEG XL as a baseline

def test_jpeg_xl_baseline_sweeps_distances(small_photo):
    from tng.evaluation.measure import JXL_DISTANCES, baseline_encoders, sweep
    from tng.jobs.report import parse_baselines

    assert parse_baselines("jpeg,jxl") == ("JPEG", "JPEG XL")
    enc = baseline_encoders(1, ("JPEG XL",))
    assert enc == {"JPEG XL": {"format": "JXL", "effort": 7, "numthreads": 1}}
    points = [p for p in sweep(None, small_photo, enc, tng_q=()) if p["codec"] == "JPEG XL"]
    assert [p["setting"] for p in points] == list(JXL_DISTANCES)
    rates, psnrs = [p["bpp"] for p in points], [p["psnr"] for p in points]
    assert rates == sorted(rates, reverse=True) and psnrs == sorted(psnrs, reverse=True)  # larger distance: fewer bits
    jxl = imagecodecs.jpegxl_encode(small_photo, effort=7, distance=1.0, numthreads=1)
    assert points[JXL_DISTANCES.index(1.0)]["bytes"] == len(jxl)  # the file libjxl writes, measured whole
