"""`tng compress --codec avif|jxl|auto` and `--lossless` through the real pipeline (a local Ray, real
libavif and libjxl): per-image choice at each image's target, the evidence in every row, fallbacks,
and decompress / audit / report of every form."""
from __future__ import annotations

import json

import imagecodecs
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import SAMPLES
from tng.codec.classic import exact_pixels, pixels_sha256
from tng.jobs.cli import main


def _rows(archive) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(archive / "shards").to_pylist()}


@pytest.fixture
def photos(tmp_path):
    """Three small photos, one with alpha, one wider than AVIF allows, and one broken file."""
    d = tmp_path / "photos"
    d.mkdir()
    coffee = np.asarray(Image.open(SAMPLES / "coffee.png").convert("RGB"))
    Image.open(SAMPLES / "chelsea.png").crop((100, 60, 292, 188)).save(d / "cat.png")
    Image.fromarray(coffee[:128, :160]).save(d / "cup.png")
    Image.fromarray(coffee[200:296, 300:428]).convert("L").save(d / "gray.png")
    Image.fromarray(np.dstack([coffee[:64, :96], np.full((64, 96), 180, np.uint8)])).save(d / "alpha.png")
    noise = np.random.default_rng(0).integers(-4, 5, (2, 70000, 3))  # so that PNG is no match for lossy codecs
    wide = np.clip(np.tile(coffee[:2, :560], (1, 125, 1)).astype(int) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(wide).save(d / "wide.png")  # 2 x 70000: wider than AVIF allows
    (d / "cut.png").write_bytes((SAMPLES / "coffee.png").read_bytes()[:2000])
    return d


def test_auto_keeps_the_smallest_file_that_reaches_each_images_target(ray_local, photos, tmp_path, capsys):
    arch = tmp_path / "auto"
    assert main(["compress", str(photos), str(arch), "--codec", "auto", "--quality", "4", "--workers", "1",
                 "--effort", "0"]) == 0
    rows = _rows(arch)
    assert rows["cut.png"]["status"] == "error" and "truncated" in rows["cut.png"]["error"]
    for key in ("cat.png", "cup.png", "gray.png"):
        r = rows[key]
        assert r["status"] == "ok" and r["codec"] in ("tng", "avif", "jxl"), key
        # At --quality 4 the target is what TNG reached: its own bytes are there, and nothing larger was kept.
        assert r["target_psnr"] > 20 and r["psnr"] >= r["target_psnr"] and r["quality"] == 4
        tried = {c: r[f"bytes_{c}"] for c in ("tng", "avif", "jxl")}
        assert tried["tng"] is not None and all(v is not None for v in tried.values()), key
        assert r["bitstream_bytes"] == min(tried.values()) == len(r["bitstream"])
    assert rows["alpha.png"]["codec"] == "tng" and "alpha" in rows["alpha.png"]["note"]
    assert rows["wide.png"]["codec"] in ("tng", "jxl") and "AVIF cannot code this image" in rows["wide.png"]["note"]
    manifest = json.loads(next((arch / "runs").glob("*.json")).read_text())
    assert manifest["settings"]["codec"] == "auto" and sum(manifest["by_codec"].values()) == manifest["ok"] == 5

    out = tmp_path / "restored"
    assert main(["decompress", str(arch), str(out), "--workers", "1"]) == 0
    for key in ("cat.png", "cup.png", "gray.png", "alpha.png", "wide.png"):
        with Image.open(out / key) as im:  # decompress writes PNG for every lossy form, in the source's mode
            assert pixels_sha256(np.asarray(im)) == rows[key]["decoded_sha256"], key
            assert im.mode == {"gray.png": "L", "alpha.png": "RGBA"}.get(key, "RGB")
    assert main(["audit", str(arch), "--source", str(photos), "--workers", "1", "--report",
                 str(tmp_path / "audit.json")]) == 0
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["rows_checked"] == 5 and not audit["psnr_mismatches"]
    figures = (tmp_path / "audit.figures.jsonl").read_text().splitlines()  # next to the report, one line a key
    recomputed = {f["key"]: f["psnr"] for f in map(json.loads, figures)}
    assert len(recomputed) == len(figures) == 5 and audit["psnr_vs_source"]["images"] == 5
    assert recomputed == pytest.approx({k: rows[k]["psnr"] for k in recomputed})

    assert main(["report", str(arch), str(tmp_path / "report")]) == 0
    choice = json.loads((tmp_path / "report" / "summary.json").read_text())["codec_choice"]
    by = {c["codec"]: c for c in choice["codecs"]}
    assert choice["images"] == 5 and sum(c["chosen"] for c in by.values()) <= 5
    # What the archive holds never exceeds what one codec alone would have needed for the same images.
    assert all(c["bytes_kept_same_images"] <= c["bytes_needed"] for c in by.values())
    assert by["tng"]["images_reached"] == 5 and by["avif"]["images_not_reached"] >= 2  # alpha, too wide
    assert "Codec choice per image" in (tmp_path / "report" / "report.md").read_text()


def test_one_classic_codec_at_a_target_psnr_falls_back_where_it_fails(ray_local, photos, tmp_path):
    arch = tmp_path / "avif"
    assert main(["compress", str(photos), str(arch), "--codec", "avif", "--target-psnr", "33", "--workers", "1",
                 "--effort", "0"]) == 0
    rows = _rows(arch)
    for key in ("cat.png", "cup.png", "gray.png"):
        assert rows[key]["codec"] == "avif" and rows[key]["psnr"] >= 33 and rows[key]["target_psnr"] == 33
        assert rows[key]["bytes_jxl"] is None and 0 <= rows[key]["setting"] <= 100  # AVIF's quality
    wide = rows["wide.png"]
    assert wide["codec"] == "jxl" and wide["psnr"] >= 33
    assert "AVIF cannot code this image" in wide["note"] and "stored as JPEG XL instead" in wide["note"]
    alpha = rows["alpha.png"]  # only TNG keeps alpha: AVIF is not tried, nor a fallback
    assert alpha["codec"] == "tng" and alpha["note"] == "alpha: only TNG keeps it without loss, the classic codecs were not tried"
    assert alpha["bytes_avif"] is None and alpha["bytes_jxl"] is None
    assert main(["audit", str(arch), "--workers", "1"]) == 0
    # A target beyond every codec at the finest settings: TNG's closest file, said so.
    assert main(["compress", str(photos), str(tmp_path / "far"), "--codec", "jxl", "--target-psnr", "90",
                 "--workers", "1", "--effort", "0"]) == 0
    far = _rows(tmp_path / "far")["cup.png"]
    assert far["codec"] in ("tng", "source") and "did not reach 90.00 dB" in far["note"]


def _lossless_corpus(d):
    coffee = np.asarray(Image.open(SAMPLES / "coffee.png").convert("RGB"))[:128, :192]  # big enough that JPEG XL shrinks its JPEG
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(coffee[..., 0]).save(d / "gray.png")
    Image.fromarray(np.dstack([coffee, coffee[..., 2]])).save(d / "rgba.png")
    Image.fromarray(coffee[..., 1].astype(np.uint16) * 257 + 3).save(d / "gray16.png")
    (d / "rgb16.png").write_bytes(bytes(imagecodecs.png_encode(coffee.astype(np.uint16) * 257 + 9)))
    Image.fromarray(coffee).quantize(16).save(d / "palette.png")
    Image.fromarray(coffee).save(d / "rotated.png", exif=exif.tobytes())
    Image.fromarray(coffee).convert("CMYK").save(d / "cmyk.jpg", quality=90)
    Image.fromarray(coffee).save(d / "rotated.jpg", exif=exif.tobytes(), quality=90)


def test_lossless_archives_give_every_source_back_exactly(ray_local, tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    _lossless_corpus(src)
    arch, out = tmp_path / "lossless", tmp_path / "back"
    assert main(["compress", str(src), str(arch), "--lossless", "--workers", "1"]) == 0
    rows = _rows(arch)
    assert {k: r["codec"] for k, r in rows.items()} == {
        **{k: "jxl-lossless" for k in ("gray.png", "rgba.png", "gray16.png", "rgb16.png", "palette.png", "rotated.png")},
        "cmyk.jpg": "source", "rotated.jpg": "jpeg-jxl"}  # libjxl does not transcode CMYK JPEGs: kept
    assert rows["rotated.png"]["exif"]  # metadata kept beside the pixels, pixels as stored
    assert main(["decompress", str(arch), str(out), "--workers", "1"]) == 0
    for path in sorted(src.iterdir()):
        r = rows[path.name]
        if r["codec"] == "jxl-lossless":
            back = (out / path.name).read_bytes()
            assert np.array_equal(exact_pixels(back, 10**8), exact_pixels(path.read_bytes(), 10**8)), path.name
        else:  # the original file, byte for byte
            assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    assert main(["audit", str(arch), "--source", str(src), "--workers", "1"]) == 0
    # A pixel changed behind the archive's back is caught: the source's exact pixels are hashed anew.
    pix = np.asarray(Image.open(src / "gray.png")).copy()
    pix[0, 0] ^= 1
    Image.fromarray(pix).save(src / "gray.png")
    assert main(["audit", str(arch), "--source", str(src), "--workers", "1"]) == 1


def test_lossless_and_a_codec_are_one_or_the_other(tmp_path, capsys):
    assert main(["compress", str(tmp_path), str(tmp_path / "x"), "--lossless", "--codec", "auto"]) == 1
    assert "--lossless keeps every file without loss: it takes no --codec auto" in capsys.readouterr().err


def test_a_codec_this_machine_lacks_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import tng.jobs.compress as compress

    monkeypatch.setattr(compress, "unavailable", lambda name: "libavif with AVIF support" if name == "avif" else None)
    for codec in ("avif", "auto"):
        assert main(["compress", str(tmp_path), str(tmp_path / "x"), "--codec", codec]) == 1
        assert capsys.readouterr().err.strip().endswith(f"--codec {codec} needs libavif with AVIF support")
    assert compress.settings(compress_args(["--codec", "jxl"], tmp_path)).codec == "jxl"


def compress_args(extra: list[str], tmp_path):
    from tng.jobs.cli import parser

    return parser().parse_args(["compress", str(tmp_path), str(tmp_path / "x"), *extra])
