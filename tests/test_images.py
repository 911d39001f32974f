"""codec.images: every source mode becomes the right Colour, Flags and pixels; metadata survives;
bad input is refused with a one-line TNGError; decoded planes are written back faithfully."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageFile

from tng.codec.errors import TNGError
from conftest import allocation_peak
from tng.codec.images import (
    DEFAULT_MAX_PIXELS,
    Colour,
    Flag,
    SourceImage,
    image_bytes,
    open_image,
    save_image,
    to_pil,
)

NO_FLAGS = Flag(0)


def rand(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def encode(im: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_16bit(samples: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG (Pillow cannot write 16-bit RGB(A)/LA): samples is (H, W, C) of 0..65535."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in samples)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def with_png_size(png: bytes, width: int, height: int) -> bytes:
    """The same PNG with its IHDR claiming another size (CRC fixed, so only the size is wrong)."""
    ihdr = png[12:29]  # chunk type + 13 data bytes
    ihdr = ihdr[:4] + struct.pack(">II", width, height) + ihdr[12:]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def premultiplied_tiff(im: Image.Image) -> bytes:
    """im (LA or RGBA) as a TIFF whose ExtraSamples tag says 'associated' (premultiplied) alpha."""
    tiff = encode(im, "TIFF")
    entry = struct.pack("<HHI", 338, 3, 1)  # ExtraSamples, SHORT, one value; the value (2) follows
    at = tiff.index(entry) + len(entry)
    return tiff[:at] + struct.pack("<H", 1) + tiff[at + 2:]


def expected_16_to_8(values: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(values, dtype=np.float64) / 257).astype(np.uint8)


def assert_well_formed(src: SourceImage, width: int, height: int) -> None:
    assert (src.width, src.height) == (width, height)
    assert src.rgb.shape == (height, width, 3) and src.rgb.dtype == np.uint8 and src.rgb.flags.c_contiguous
    if src.colour.has_alpha:
        assert src.alpha.shape == (height, width) and src.alpha.dtype == np.uint8
    else:
        assert src.alpha is None


# ------------------------------------------------------------------------------------------ 8-bit modes

@pytest.mark.parametrize("width, height", [(1, 1), (3, 517), (517, 3)])
@pytest.mark.parametrize("mode, colour", [("L", Colour.GRAY), ("LA", Colour.GRAY_ALPHA),
                                          ("RGB", Colour.RGB), ("RGBA", Colour.RGBA)])
def test_eight_bit_png_modes_are_exact(mode, colour, width, height):
    channels = len(mode)
    pixels = rand((height, width, channels))
    src = open_image(encode(Image.fromarray(pixels.squeeze(2) if channels == 1 else pixels, mode), "PNG"))
    assert_well_formed(src, width, height)
    assert (src.colour, src.flags, src.source_mode, src.source_format) == (colour, NO_FLAGS, mode, "PNG")
    n_colour = 3 if mode.startswith("RGB") else 1
    assert np.array_equal(src.rgb, np.broadcast_to(pixels[..., :n_colour], (height, width, 3)))
    if colour.has_alpha:
        assert np.array_equal(src.alpha, pixels[..., -1])


def test_bilevel_becomes_gray_0_or_255():
    bits = rand((5, 9)) > 127
    src = open_image(encode(Image.fromarray(bits), "PNG"))
    assert (src.colour, src.flags, src.source_mode) == (Colour.GRAY, NO_FLAGS, "1")
    assert np.array_equal(src.rgb[..., 0], np.where(bits, 255, 0))


def test_gray_with_transparent_colour_key_gets_alpha():
    gray = np.array([[0, 10, 20], [10, 30, 40]], dtype=np.uint8)
    src = open_image(encode(Image.fromarray(gray), "PNG", transparency=10))
    assert src.colour is Colour.GRAY_ALPHA
    assert np.array_equal(src.rgb[..., 0], gray)
    assert np.array_equal(src.alpha, np.where(gray == 10, 0, 255))


def palette_image(indices: np.ndarray) -> Image.Image:
    """A P image of the given palette indices (0..3) over a random 4-colour palette."""
    im = Image.new("P", indices.shape[::-1])
    im.putpalette(rand((4 * 3,), seed=7).tolist())
    im.putdata(indices.ravel().tolist())
    return im


def test_palette_without_transparency_becomes_rgb():
    indices = rand((6, 7)) % 4
    im = palette_image(indices)
    src = open_image(encode(im, "PNG"))
    assert (src.colour, src.flags, src.source_mode) == (Colour.RGB, Flag.FROM_PALETTE, "P")
    palette = np.array(im.getpalette()[:12], dtype=np.uint8).reshape(4, 3)
    assert np.array_equal(src.rgb, palette[indices])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_becomes_rgba(fmt):
    indices = rand((6, 7)) % 4
    src = open_image(encode(palette_image(indices), fmt, transparency=2))
    assert (src.colour, src.flags) == (Colour.RGBA, Flag.FROM_PALETTE)
    assert np.array_equal(src.alpha, np.where(indices == 2, 0, 255))


def test_palette_with_alpha_mode_pa_becomes_rgba():
    rgba = rand((4, 5, 4))
    pa = Image.fromarray(rgba).convert("P").convert("PA")
    src = open_image(encode(pa, "TIFF"))
    assert (src.colour, src.flags, src.source_mode) == (Colour.RGBA, Flag.FROM_PALETTE, "PA")
    assert np.array_equal(src.alpha, rgba[..., 3])


@pytest.mark.parametrize("mode, colour", [("LA", Colour.GRAY_ALPHA), ("RGBA", Colour.RGBA)])
def test_premultiplied_alpha_is_unpremultiplied(mode, colour):
    stored = Image.fromarray(rand((3, 4, 4))).convert(mode)
    src = open_image(premultiplied_tiff(stored))
    assert src.colour is colour
    stored_px = np.asarray(stored).reshape(3, 4, -1).astype(np.float64)
    alpha = stored_px[..., -1:]
    expected = np.clip(stored_px[..., :-1] * 255 / np.maximum(alpha, 1), 0, 255)
    got = src.rgb[..., : stored_px.shape[2] - 1]
    assert np.abs(got - expected).max() <= 1 and np.array_equal(src.alpha, alpha[..., 0])


def test_cmyk_jpeg_becomes_roughly_right_rgb():
    colours = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [200, 200, 200]]], dtype=np.uint8)
    rgb = np.repeat(np.repeat(colours, 8, axis=0), 8, axis=1)  # flat 8x8 blocks: no JPEG ringing
    src = open_image(encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95))
    assert (src.colour, src.flags, src.source_mode) == (Colour.RGB, Flag.FROM_CMYK, "CMYK")
    assert np.abs(src.rgb.astype(int) - rgb).max() <= 12


def test_cmyk_with_unusable_icc_profile_falls_back_and_drops_the_profile():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cmyk = Image.new("RGB", (4, 4), (0, 0, 255)).convert("CMYK")
    src = open_image(encode(cmyk, "JPEG", icc_profile=b"\x00" * 16 + b"CMYK" + srgb[20:]))
    assert src.flags == Flag.FROM_CMYK and src.icc_profile is None
    assert np.abs(src.rgb.astype(int) - [0, 0, 255]).max() <= 12


@pytest.mark.parametrize("mode", ["YCbCr", "LAB"])
def test_other_colour_spaces_become_rgb(mode):
    rgb = np.full((4, 6, 3), (180, 90, 40), dtype=np.uint8)
    src = open_image(encode(Image.fromarray(rgb).convert(mode), "TIFF"))
    assert (src.colour, src.flags, src.source_mode) == (Colour.RGB, NO_FLAGS, mode)
    assert np.abs(src.rgb.astype(int) - rgb).max() <= 4


# ----------------------------------------------------------------------------------- 16-bit and float

SAMPLES_16 = np.array([[0, 128, 129, 257, 385, 386], [1000, 32767, 32896, 65279, 65406, 65535]], dtype=np.uint16)


@pytest.mark.parametrize("fmt, mode, dtype", [("PNG", "I;16", "<u2"), ("TIFF", "I;16", "<u2"),
                                              ("TIFF", "I;16B", ">u2")])
def test_16bit_gray_is_rounded_to_8bit(fmt, mode, dtype):
    im = Image.frombytes(mode, SAMPLES_16.shape[::-1], SAMPLES_16.astype(dtype).tobytes())
    src = open_image(encode(im, fmt))
    assert (src.colour, src.flags, src.source_mode) == (Colour.GRAY, Flag.REDUCED_16BIT, mode)
    assert np.array_equal(src.rgb[..., 0], expected_16_to_8(SAMPLES_16))


def test_16bit_gray_with_transparent_colour_key_gets_alpha():
    src = open_image(encode(Image.fromarray(SAMPLES_16), "PNG", transparency=1000))
    assert (src.colour, src.flags) == (Colour.GRAY_ALPHA, Flag.REDUCED_16BIT)
    assert np.array_equal(src.alpha, np.where(SAMPLES_16 == 1000, 0, 255))


def test_32bit_int_gray_is_clipped_to_16bit_then_rounded():
    values = np.array([[-5, 0, 257, 65535, 70000, 2**31 - 1]], dtype=np.int32)
    src = open_image(encode(Image.fromarray(values, "I"), "TIFF"))
    assert (src.colour, src.flags, src.source_mode) == (Colour.GRAY, Flag.REDUCED_16BIT, "I")
    assert src.rgb[..., 0].tolist() == [[0, 0, 1, 255, 255, 255]]


def test_float_gray_is_clipped_and_rounded():
    values = np.array([[-5.0, 0.4, 127.6, 254.5, 300.0, np.nan]], dtype=np.float32)
    src = open_image(encode(Image.fromarray(values, "F"), "TIFF"))
    assert (src.colour, src.flags, src.source_mode) == (Colour.GRAY, Flag.FROM_FLOAT, "F")
    assert src.rgb[..., 0].tolist() == [[0, 0, 128, 254, 255, 0]]  # rint: 254.5 -> 254 (half to even)


@pytest.mark.parametrize("colour_type, channels, colour", [(2, 3, Colour.RGB), (6, 4, Colour.RGBA),
                                                           (4, 2, Colour.GRAY_ALPHA)])
def test_16bit_png_colour_is_flagged_reduced(colour_type, channels, colour):
    samples = np.random.default_rng(3).integers(0, 65536, (3, 5, channels)).astype(np.uint16)
    src = open_image(png_16bit(samples, colour_type))
    assert (src.colour, src.flags) == (colour, Flag.REDUCED_16BIT)
    expected = expected_16_to_8(samples).astype(int)
    n_colour = channels - 1 if colour.has_alpha else channels
    # Pillow keeps the high byte of each sample: within 1 of the rounded value
    assert np.abs(src.rgb[..., :n_colour].astype(int) - expected[..., :n_colour]).max() <= 1
    if colour.has_alpha:
        assert np.abs(src.alpha.astype(int) - expected[..., -1]).max() <= 1


def test_animated_gif_codes_the_first_frame():
    frames = [Image.new("RGB", (8, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    src = open_image(data)
    assert (src.width, src.height) == (8, 6) and (src.rgb == [255, 0, 0]).all()


# ------------------------------------------------------------------------------------------- metadata

def exif_with_orientation(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TNG test camera"
    return exif.tobytes()


def parse_exif(block: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(block)
    return exif


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_travels_and_pixels_stay_as_stored(fmt):
    rgb = rand((4, 6, 3))  # landscape as stored; orientation 6 would display it as portrait
    data = encode(Image.fromarray(rgb), fmt, exif=exif_with_orientation(6))
    src = open_image(data)
    assert (src.width, src.height) == (6, 4)
    with Image.open(io.BytesIO(data)) as stored:
        assert np.array_equal(src.rgb, np.asarray(stored.convert("RGB")))
    assert src.exif.startswith(b"Exif\x00\x00")
    exif = parse_exif(src.exif)
    assert exif[0x0112] == 6 and exif[0x010F] == "TNG test camera"


def test_tiff_orientation_is_applied_by_pillow_and_dropped_from_the_exif():
    # Pillow's TIFF decoder rotates the pixels itself and deletes the tag: the result stays consistent.
    rgb = rand((4, 6, 3))
    src = open_image(encode(Image.fromarray(rgb), "TIFF", exif=exif_with_orientation(6)))
    assert np.array_equal(src.rgb, np.rot90(rgb, -1))
    exif = parse_exif(src.exif)
    assert 0x0112 not in exif and exif[0x010F] == "TNG test camera"
    assert 0x0100 not in exif and 0x0111 not in exif  # a TIFF's own layout tags are not metadata


def test_exif_written_back_with_the_decoded_image(tmp_path):
    src = open_image(encode(Image.fromarray(rand((4, 6, 3))), "JPEG", exif=exif_with_orientation(8)))
    for name in ["out.png", "out.jpg", "out.webp", "out.tiff"]:
        save_image(to_pil(src.rgb, src.alpha, src.colour), tmp_path / name, exif=src.exif)
        with Image.open(tmp_path / name) as written:  # not loaded: Pillow applies a TIFF's orientation on load
            assert written.getexif()[0x0112] == 8, name


def test_no_exif_gives_none():
    assert open_image(encode(Image.new("RGB", (2, 2)), "PNG")).exif is None
    assert open_image(encode(Image.new("RGB", (2, 2)), "TIFF")).exif is None


SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("name", ["out.png", "out.jpg", "out.webp", "out.tiff"])
def test_icc_profile_survives_open_save_open(tmp_path, name):
    src = open_image(encode(Image.fromarray(rand((5, 5, 3))), "PNG", icc_profile=SRGB_ICC))
    assert src.icc_profile == SRGB_ICC
    save_image(to_pil(src.rgb, src.alpha, src.colour), tmp_path / name, icc_profile=src.icc_profile)
    assert open_image(tmp_path / name).icc_profile == SRGB_ICC


def test_icc_profile_of_another_colour_space_is_dropped():
    gray_with_rgb_profile = encode(Image.fromarray(rand((5, 5))), "PNG", icc_profile=SRGB_ICC)
    assert open_image(gray_with_rgb_profile).icc_profile is None


# ---------------------------------------------------------------------------------------- pixel limit

TINY_PNG = encode(Image.new("RGB", (2, 2), (1, 2, 3)), "PNG")


def test_huge_header_is_refused_before_decoding(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    data = with_png_size(TINY_PNG, 60000, 60000)
    with allocation_peak() as mem, pytest.raises(TNGError) as err:
        open_image(data)
    assert str(err.value) == ("image of 60000x60000 = 3600000000 pixels exceeds the pixel limit of 250000000 "
                              "(--max-pixels)")
    assert mem["peak"] < 1_000_000  # bytes: Pillow's header parsing only


def test_pillow_never_refuses_an_image_under_our_limit(monkeypatch):
    # 15000x15000 is above Pillow's own bomb limit, below ours: it must reach decoding (stubbed here).
    def stub_decoding(self):
        raise OSError("decoding reached")

    monkeypatch.setattr(ImageFile.ImageFile, "load", stub_decoding)
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(TNGError, match="decoding reached"):
        open_image(with_png_size(TINY_PNG, 15000, 15000))
    assert 15000 * 15000 < DEFAULT_MAX_PIXELS and Image.MAX_IMAGE_PIXELS == saved  # Pillow's limit restored


def test_max_pixels_is_inclusive():
    data = encode(Image.new("RGB", (10, 10)), "PNG")
    assert open_image(data, max_pixels=100).width == 10
    with pytest.raises(TNGError, match="exceeds the pixel limit of 99"):
        open_image(data, max_pixels=99)


def test_zero_size_image_is_refused():
    with pytest.raises(TNGError):  # Pillow's plugins already refuse to identify it; our own check backs them up
        open_image(b"P5\n0 4\n255\n")


# --------------------------------------------------------------------------------------------- errors

def test_empty_input_is_refused(tmp_path):
    with pytest.raises(TNGError, match="^empty file$"):
        open_image(b"")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(TNGError, match="^empty file$"):
        open_image(tmp_path / "empty.png")


def test_unreadable_path_is_refused(tmp_path):
    with pytest.raises(TNGError, match="cannot open .*missing.png: No such file"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(TNGError, match="cannot open"):
        open_image(tmp_path)


def test_garbage_is_not_an_image():
    with pytest.raises(TNGError, match=r"^not an image file \(cannot identify format\)$"):
        open_image(np.random.default_rng(5).bytes(4096))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused(fmt):
    data = encode(Image.fromarray(rand((64, 64, 3))), fmt)
    with pytest.raises(TNGError, match="^truncated image file: "):
        open_image(data[: len(data) // 2])


def test_corrupt_pixel_data_is_refused():
    data = bytearray(encode(Image.fromarray(rand((64, 64, 3))), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start: start + 50] = b"\xff" * 50  # the zlib stream is broken, the chunk CRC too
    with pytest.raises(TNGError) as err:
        open_image(bytes(data))
    assert "\n" not in str(err.value)


SEEDS = [encode(Image.fromarray(rand((9, 7, 3))), fmt) for fmt in ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]]


@settings(max_examples=50, deadline=None)
@given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                  max_size=8),
       cut=st.integers(0, 10**6), garbage=st.binary(max_size=64), use_garbage=st.booleans())
def test_any_bytes_give_an_image_or_a_tng_error(seed, edits, cut, garbage, use_garbage):
    data = bytearray(garbage if use_garbage else seed)
    for at, value in edits:
        if data:
            data[at % len(data)] = value
    data = bytes(data[: max(1, cut % (len(data) + 1))]) if data else b""
    try:
        src = open_image(data, max_pixels=1_000_000)
    except TNGError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert_well_formed(src, src.width, src.height)


# ------------------------------------------------------------------------------------ decoded -> file

PLANES = rand((5, 7, 3), seed=11)
ALPHA = rand((5, 7), seed=12)
GRAY_PLANES = np.repeat(PLANES[..., :1], 3, axis=2)


@pytest.mark.parametrize("colour, mode, rgb, alpha", [
    (Colour.GRAY, "L", GRAY_PLANES, None), (Colour.GRAY_ALPHA, "LA", GRAY_PLANES, ALPHA),
    (Colour.RGB, "RGB", PLANES, None), (Colour.RGBA, "RGBA", PLANES, ALPHA)])
@pytest.mark.parametrize("name", ["out.png", "out.tiff", "out.webp"])
def test_to_pil_and_lossless_save_round_trip(tmp_path, colour, mode, rgb, alpha, name):
    image = to_pil(rgb, alpha, colour)
    assert image.mode == mode
    save_image(image, tmp_path / name)
    src = open_image(tmp_path / name)
    assert np.array_equal(src.rgb, rgb)
    assert src.alpha is None if alpha is None else np.array_equal(src.alpha, alpha)
    if name != "out.webp":  # WebP holds only RGB(A): gray comes back as RGB
        assert src.colour is colour


def test_gray_from_slightly_different_channels_is_luma():
    rgb = np.array([[[100, 102, 99], [0, 3, 1]]], dtype=np.uint8)
    image = to_pil(rgb, None, Colour.GRAY)
    assert np.array_equal(np.asarray(image), np.asarray(Image.fromarray(rgb).convert("L")))


@pytest.mark.parametrize("colour, name", [(Colour.GRAY, "out.jpg"), (Colour.RGB, "out.jpeg"), (Colour.RGB, "out.bmp"),
                                          (Colour.GRAY, "out.pgm"), (Colour.RGB, "out.ppm")])
def test_save_formats_without_alpha(tmp_path, colour, name):
    save_image(to_pil(PLANES, None, colour), tmp_path / name)
    assert open_image(tmp_path / name).colour is colour


def test_jpeg_is_written_at_quality_95():
    image = Image.fromarray(rand((16, 16, 3)))
    assert image_bytes(image, "JPEG") == encode(image, "JPEG", quality=95)


@pytest.mark.parametrize("colour", [Colour.GRAY_ALPHA, Colour.RGBA])
@pytest.mark.parametrize("name, fmt", [("out.jpg", "JPEG"), ("out.bmp", "BMP"), ("out.gif", "GIF")])
def test_alpha_is_never_silently_dropped(tmp_path, colour, name, fmt):
    with pytest.raises(TNGError, match=f"^{fmt} cannot store an alpha channel; write .png, .webp or .tiff$"):
        save_image(to_pil(PLANES, ALPHA, colour), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.xyz", "out"])
def test_unknown_extension_is_refused(tmp_path, name):
    with pytest.raises(TNGError, match="not a writable image format"):
        save_image(to_pil(PLANES, None, Colour.RGB), tmp_path / name)


def test_failed_save_leaves_existing_file_and_no_temp_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    existing_webp = tmp_path / "out.webp"
    existing_webp.write_bytes(b"old webp")
    too_wide_for_webp = Image.new("RGB", (20000, 1))
    with pytest.raises(TNGError, match="cannot write WEBP image"):
        save_image(too_wide_for_webp, existing_webp)  # fails onto an existing file: it stays as it was
    assert existing_webp.read_bytes() == b"old webp"
    existing_webp.unlink()
    with pytest.raises(TNGError, match="cannot write"):
        save_image(to_pil(PLANES, None, Colour.RGB), target / "under-a-file.png")
    save_image(to_pil(PLANES, None, Colour.RGB), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    save_image(to_pil(PLANES, None, Colour.RGB), tmp_path / "new-dir" / "out.png")  # folders are made
    assert (tmp_path / "new-dir" / "out.png").exists()
    assert open_image(target).width == 7


def test_unknown_image_format_name_is_refused():
    with pytest.raises(TNGError, match="cannot write NOPE images"):
        image_bytes(Image.new("RGB", (1, 1)), "nope")


@pytest.mark.parametrize("rgb, alpha, colour, message", [
    (PLANES.astype(np.uint16), None, Colour.RGB, "uint8"),
    (PLANES[..., :2], None, Colour.RGB, r"\(H, W, 3\)"),
    (PLANES, None, Colour.RGBA, "alpha plane"),
    (PLANES, ALPHA[:, :3], Colour.GRAY_ALPHA, "alpha plane"),
    (PLANES, ALPHA, Colour.RGB, "no alpha channel"),
    (PLANES, None, 9, "unknown colour type 9")])
def test_to_pil_validates_its_input(rgb, alpha, colour, message):
    with pytest.raises(TNGError, match=message):
        to_pil(rgb, alpha, colour)
