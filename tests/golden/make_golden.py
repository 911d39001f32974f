"""Writes golden .tng files for one model id and records what they decode to.

    .venv/bin/python tests/golden/make_golden.py MODEL_ID

Run when a model id is added, or when a case is added (only the missing files are written); the
files of an existing id are never regenerated: they stand for archives written by earlier
versions, which every later version must still decode unchanged.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tng.codec import Codec, open_image  # noqa: E402


def cases() -> dict[str, tuple[bytes, dict]]:
    with Image.open(HERE.parents[1] / "samples/chelsea.png") as im:
        cat = np.asarray(im.convert("RGB"))
    with Image.open(HERE.parents[1] / "samples/coffee.png") as im:
        coffee = np.asarray(im.convert("RGB"))
    crop = cat[60:188, 120:312]  # 192x128
    alpha = np.tile(np.linspace(0, 255, 192).astype(np.uint8), (128, 1))

    def png(arr, mode):
        buf = io.BytesIO()
        Image.fromarray(arr, mode).save(buf, "PNG")
        return buf.getvalue()

    # The header sections and flags of sources that are not plain 8-bit RGB: EXIF + ICC, 16-bit,
    # palette, CMYK (their compatibility is pinned by these files too).
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "TNG golden", 6  # Make, Orientation
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "PNG", exif=exif.tobytes(), icc_profile=srgb)
    exif_icc = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.minimum(crop[:, :, 1].astype(np.uint16) * 257 + 3, 65535)).save(buf, "PNG")  # I;16
    gray16 = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(crop).quantize(64).save(buf, "PNG")
    palette = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(crop).convert("CMYK").save(buf, "JPEG", quality=95)
    cmyk = buf.getvalue()
    return {
        "exif-icc-q4": (exif_icc, {"quality": 4}),
        "gray16-q5": (gray16, {"quality": 5}),
        "palette-q3": (palette, {"quality": 3}),
        "cmyk-q6": (cmyk, {"quality": 6}),
        "rgb-q2": (png(crop, "RGB"), {"quality": 2}),
        "rgb-q6.5": (png(crop, "RGB"), {"quality": 6.5}),
        "rgba-q4": (png(np.dstack([crop, alpha]), "RGBA"), {"quality": 4}),
        "gray-q5": (png(crop[:, :, 1], "L"), {"quality": 5}),
        "odd-tiled-q3": (png(np.ascontiguousarray(cat[:97, :131]), "RGB"), {"quality": 3, "tile": 64}),
        "one-pixel-q8": (png(cat[:1, :1], "RGB"), {"quality": 8}),
        # Format version 2: post-filters in the adaptation section, as the encoder chose them (on some
        # tiles of a tiled image), and a 5×5 and a 3×3 one written by hand (every size the format has).
        "postfilter-q5": (png(np.ascontiguousarray(coffee[:128, :192]), "RGB"), {"quality": 5, "effort": 2}),
        "postfilter-tiled-q5": (png(np.ascontiguousarray(coffee[:200, :260]), "RGB"),
                                {"quality": 5, "tile": 64, "effort": 2}),
        "postfilter-5x5-q4": (png(crop, "RGB"), {"quality": 4, "filters": (5,)}),
        "postfilter-3x3-tiled-q3": (png(np.ascontiguousarray(cat[:97, :131]), "RGB"),
                                    {"quality": 3, "tile": 64, "filters": (3, None, 1, 3, 5, None)}),
    }


def with_filters(data: bytes, sizes: tuple) -> bytes:
    """A version-2 file: `data` (version 1) with post-filters of these sizes (None: none) on its tiles,
    their weights drawn from a fixed seed: what a decoder must apply, whoever chose them."""
    from tng.codec import container
    from tng.codec.postfilter import PostFilter, pack_section

    rng = np.random.default_rng(sum(k or 0 for k in sizes))
    filters = [PostFilter(rng.integers(-40, 41, (3, 3, k, k)), rng.integers(-60, 61, 3), 9) if k else None
               for k in sizes]
    header, sections = container.unpack(data, 10**9)
    sections = [bytes(s) for s in sections]
    header = container.Header(**{**header.__dict__, "version": container.ADAPTED_VERSION})
    return container.pack(header, sections[:3] + [pack_section(filters)] + sections[3:])


def main(model_id: int) -> None:
    expected = json.loads((HERE / "expected.json").read_text()) if (HERE / "expected.json").exists() else {}
    for name, (src, opts) in cases().items():
        fname = f"m{model_id}-{name}.tng"
        if fname in expected:
            continue  # golden files are never regenerated: only cases added since are written
        codec = Codec(model_id=model_id, device="cpu", tile=opts.get("tile", 1024), effort=opts.get("effort", 0))
        enc = codec.encode(open_image(src), quality=opts["quality"])
        data = with_filters(enc.data, opts["filters"]) if "filters" in opts else enc.data
        dec = codec.decode(data)
        if "filters" not in opts:
            assert np.array_equal(dec.rgb, enc.reconstruction)
        want = 2 if "effort" in opts or "filters" in opts else 1
        assert dec.header.version == want, f"{fname}: the case no longer makes a version-{want} file"
        (HERE / fname).write_bytes(data)
        expected[fname] = {
            "size": list(dec.image.size), "mode": dec.image.mode,
            "pixels_sha256": hashlib.sha256(np.asarray(dec.image).tobytes()).hexdigest(),
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "flags": dec.header.flags,
            "exif_sha256": hashlib.sha256(dec.exif).hexdigest() if dec.exif else None,
            "icc_sha256": hashlib.sha256(dec.icc_profile).hexdigest() if dec.icc_profile else None,
        }
        print(fname, len(data), "bytes", f"version {dec.header.version}")
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]))
