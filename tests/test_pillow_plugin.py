"""`.tng` in Pillow: plain `PIL.Image.open` reads golden files to their recorded pixels, and
`Image.save(..., format="TNG")` writes files that `tng decode` reads."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import tng.codec  # noqa: F401  (registers the plugin)
from tng.codec import Codec
from tng.codec.registry import DEFAULT_MODEL_ID

GOLDEN = Path(__file__).parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
DEFAULT_GOLDEN = sorted(n for n in EXPECTED if n.startswith(f"m{DEFAULT_MODEL_ID}-"))


@pytest.mark.parametrize("name", DEFAULT_GOLDEN)
def test_golden_files_open_with_plain_pillow(name):
    want = EXPECTED[name]
    with Image.open(GOLDEN / name) as im:
        assert im.format == "TNG" and list(im.size) == want["size"] and im.mode == want["mode"]
        assert im.info["model_id"] == DEFAULT_MODEL_ID
        assert hashlib.sha256(np.asarray(im).tobytes()).hexdigest() == want["pixels_sha256"]


def test_a_fresh_interpreter_needs_only_the_import():
    """What a Pillow-based tool does: import codec once, then nothing but PIL."""
    name = DEFAULT_GOLDEN[0]
    code = ("import sys, hashlib, codec; from PIL import Image; im = Image.open(sys.argv[1]); "
            "print(im.format, im.mode, hashlib.sha256(im.tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code, str(GOLDEN / name)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["TNG", EXPECTED[name]["mode"], EXPECTED[name]["pixels_sha256"]]


def test_save_writes_files_tng_decodes(small_photo, tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "plugin test"
    rgba = Image.fromarray(small_photo).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.full(small_photo.shape[:2], 180, np.uint8)))
    path = tmp_path / "x.tng"
    rgba.save(path, quality=5.5, exif=exif.tobytes())  # the format from the extension
    data = path.read_bytes()
    dec = Codec(device="cpu").decode(data)
    assert dec.header.quality == 5.5 and dec.exif.startswith(b"Exif\x00\x00")
    with Image.open(path) as im:
        assert im.mode == "RGBA" and im.info["quality"] == 5.5 and im.info["exif"] == dec.exif
        assert np.array_equal(np.asarray(im), np.asarray(dec.image))
    from tng.codec import image_bytes  # what `tng decode a.tng b.tng` writes: a .tng again, metadata and alpha kept

    again = Codec(device="cpu").decode(image_bytes(dec.image, "TNG", dec.exif, dec.icc_profile))
    assert again.exif == dec.exif and again.alpha is not None and again.header.quality == 4.0
    buf = io.BytesIO()
    Image.fromarray(small_photo).convert("L").save(buf, format="TNG")  # default quality 4
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert (im.mode, im.info["quality"]) == ("L", 4.0)


def test_bad_files_and_settings_are_pillow_errors(small_tng, small_photo, tmp_path):
    bad = bytearray(small_tng)
    bad[len(bad) // 2] ^= 0xFF  # payload checksum no longer matches
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(bytes(bad)))
    with pytest.raises(OSError, match="cannot write TNG file"):
        Image.fromarray(small_photo).save(tmp_path / "y.tng", quality=9)
    assert not (tmp_path / "y.tng").exists() or (tmp_path / "y.tng").stat().st_size == 0
