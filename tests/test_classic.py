"""The classic codecs beside TNG (codec/classic.py) and the one interface of every form a row holds
(codec/formats.py), with the real libavif and libjxl: searches that find the smallest file reaching a
target, choices that keep the smallest of all with their evidence, and lossless storage that gives
the exact pixels back."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tng.codec import Codec, TNGError, open_image
from tng.codec.classic import (AVIF, JPEG_XL, LOSSLESS, Candidate, choose, exact_pixels, pixels_sha256, search,
                               store_lossless)
from tng.codec.formats import FORMATS, format_of
from tng.codec.images import from_pil


def _png(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def src(small_photo):
    return from_pil(Image.fromarray(small_photo))


@pytest.mark.parametrize("codec", [AVIF, JPEG_XL], ids=["avif", "jxl"])
def test_search_finds_the_smallest_file_that_reaches_the_target(src, codec):
    found, needed = search(codec, src, 31.0)
    assert found is not None and needed == len(found.data) and found.psnr >= 31.0 and found.codec == codec.name
    grid = codec.grid()
    worse = codec.candidate(src, grid[grid.index(found.setting) - 1])  # the next setting down misses
    assert worse.psnr < 31.0 and len(worse.data) <= len(found.data)
    restored = format_of(codec.name).restore(found.data, files=False)  # what decompress and audit will see
    assert np.array_equal(restored.rgb, found.rgb)
    assert search(codec, src, 80.0) == (None, None)  # beyond the codec: no setting reaches it


def test_a_search_stops_once_it_cannot_win_and_says_how_much_it_would_need_at_least(src, monkeypatch):
    calls = []
    real = JPEG_XL.candidate
    monkeypatch.setattr(JPEG_XL, "candidate", lambda s, setting: calls.append(setting) or real(s, setting))
    full, needed = search(JPEG_XL, src, 31.0)
    tries = len(calls)
    calls.clear()
    found, at_least = search(JPEG_XL, src, 31.0, needed // 2)  # a winner of half its size
    assert found is None and needed // 2 <= at_least <= needed and len(calls) < tries


def test_choose_keeps_the_smallest_file_and_the_evidence(src):
    tng = Codec(device="cpu", effort=0).encode(src, quality=4)
    target = tng.psnr
    choice = choose(src, target, [AVIF, JPEG_XL], Candidate("tng", 4.0, tng.data, tng.psnr, tng.reconstruction))
    sizes = {name: n for name, n in choice.tried.items()}
    assert set(sizes) == {"tng", "avif", "jxl"} and all(n is not None for n in sizes.values())
    assert choice.winner.psnr >= target and len(choice.winner.data) == min(sizes.values())
    assert all(n >= len(choice.winner.data) for n in sizes.values())  # exact or a lower bound, never below
    # A target TNG cannot reach is served by a classic codec instead of failing.
    high = choose(src, 44.0, [AVIF, JPEG_XL], Candidate("tng", 8.0, tng.data, tng.psnr, None, target_met=False))
    assert high.winner is not None and high.winner.codec in ("avif", "jxl") and high.winner.psnr >= 44.0
    assert high.tried["tng"] is None


def test_alpha_is_left_to_tng(photo):
    rgba = from_pil(Image.fromarray(np.dstack([photo[:64, :64], np.full((64, 64), 200, np.uint8)])))
    choice = choose(rgba, 30.0, [AVIF, JPEG_XL])
    assert choice.winner is None and not choice.tried and "alpha" in choice.notes[0]


def test_a_codec_that_cannot_code_an_image_says_why():
    wide = open_image(_png(np.zeros((2, 70000, 3), np.uint8)))  # wider than AVIF's 65536
    with pytest.raises(TNGError, match="^AVIF cannot code this image"):
        AVIF.candidate(wide, 50)
    choice = choose(wide, 30.0, [AVIF, JPEG_XL])
    assert choice.notes[0].startswith("AVIF cannot code this image") and choice.winner.codec == "jxl"


def _corpus(photo: np.ndarray) -> dict[str, bytes]:
    """Gray, RGBA, 16-bit gray and colour, palette with and without transparency, EXIF-rotated."""
    import imagecodecs

    rgb = np.ascontiguousarray(photo[:48, :64])
    exif = Image.Exif()
    exif[0x0112] = 6
    pal = Image.fromarray(rgb).quantize(32)
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=3)
    return {
        "gray": _png(rgb[..., 0]),
        "rgba": _png(np.dstack([rgb, rgb[..., 1]])),
        "gray16": _png(rgb[..., 0].astype(np.uint16) * 257 + 3),
        "rgb16": bytes(imagecodecs.png_encode(rgb.astype(np.uint16) * 257 + 5)),
        "palette": _pal(pal),
        "palette-transparent": buf.getvalue(),
        "rotated": _png(rgb, exif=exif.tobytes()),
    }


def _pal(pal: Image.Image) -> bytes:
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    return buf.getvalue()


def test_lossless_gives_every_kind_of_pixels_back_exactly(photo):
    import imagecodecs

    for name, data in _corpus(photo).items():
        pixels = exact_pixels(data, 10**8)
        stored = store_lossless(data, 10**8)
        assert stored.codec == LOSSLESS, name  # PNG of a photo crop: JPEG XL is smaller every time
        assert stored.pixels_sha256 == pixels_sha256(pixels)
        restored = FORMATS[LOSSLESS].restore(stored.data)
        assert restored.sha256 == stored.pixels_sha256, name
        # The PNG decompress writes holds the same pixels (libpng reads 16-bit colour, Pillow cannot).
        back = imagecodecs.png_decode(restored.file)
        assert np.array_equal(back, pixels), name
    gray16 = exact_pixels(_corpus(photo)["gray16"], 10**8)
    assert gray16.dtype == np.uint16 and gray16.max() > 255  # 16 bits kept, not reduced
    assert exact_pixels(_corpus(photo)["palette-transparent"], 10**8).shape[-1] == 4


def test_files_without_exact_pixels_are_kept_as_they_are(photo):
    buf = io.BytesIO()
    Image.fromarray(photo[:32, :32]).convert("CMYK").save(buf, "TIFF")
    stored = store_lossless(buf.getvalue(), 10**8)
    assert stored.codec == "source" and stored.data == buf.getvalue() and "kept as it is" in stored.note
    frames = [Image.fromarray(photo[:32, :32]), Image.fromarray(photo[32:64, :32])]  # an animation: 2 images
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    assert exact_pixels(buf.getvalue(), 10**8) is None and store_lossless(buf.getvalue(), 10**8).codec == "source"
    noise = _png(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))  # PNG beats JPEG XL here
    stored = store_lossless(noise, 10**8)
    assert stored.codec == "source" and stored.data == noise and "would not make it smaller" in stored.note
    with pytest.raises(TNGError):
        store_lossless(b"not an image", 10**8)


def test_every_form_has_one_interface():
    assert set(FORMATS) == {"tng", "avif", "jxl", LOSSLESS, "jpeg-jxl", "source"}
    assert [f.name for f in FORMATS.values() if f.lossless] == [LOSSLESS, "jpeg-jxl", "source"]
    with pytest.raises(TNGError, match="unknown codec 'webp2'"):
        format_of("webp2")
