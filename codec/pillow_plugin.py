"""`.tng` files in Pillow: every tool built on Pillow can open and write them.

    import tng.codec                                  # registers the plugin (so does importing this module)
    im = Image.open("photo.tng")                  # mode L, LA, RGB or RGBA, as the source was
    im.info["exif"], im.info["icc_profile"]       # when the file carries them; also "quality", "model_id"
    im.save("photo.tng", quality=6)               # format from the extension, or format="TNG"

Saving takes `quality` (1–8, fractions allowed; default 4), `model_id` (default: the shipped
default model), `effort` (0–9, as `--effort`; default that of `tng encode`) and `exif` / `icc_profile` (default: the image's
own). The pixels are decoded by `Codec.decode`, so they are the same bit for bit as `tng decode`
gives; Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS) applies on open.
"""
from __future__ import annotations

from functools import cache

from PIL import Image, ImageFile

from . import container
from .errors import TNGError
from .images import Colour, from_pil

FORMAT = "TNG"
_MODES = {Colour.GRAY: "L", Colour.GRAY_ALPHA: "LA", Colour.RGB: "RGB", Colour.RGBA: "RGBA"}
_NO_LIMIT = 1 << 62  # sizes are Pillow's to police here (Image.MAX_IMAGE_PIXELS), as for its own formats


@cache
def _codec(model_id: int | None = None, effort: int | None = None):
    from .coder import Codec
    from .effort import DEFAULT_EFFORT
    from .registry import DEFAULT_MODEL_ID

    return Codec(model_id=DEFAULT_MODEL_ID if model_id is None else model_id, device="cpu", max_pixels=_NO_LIMIT,
                 effort=DEFAULT_EFFORT if effort is None else effort)


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == container.MAGIC


class TngImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "TNG learned image compression"

    def _open(self) -> None:
        data = self.fp.read()
        try:
            header, sections = container.unpack(data, _NO_LIMIT)
            colour = Colour(header.colour)
        except (TNGError, ValueError) as e:
            raise SyntaxError(f"not a valid TNG file: {e}") from None
        self._mode = _MODES[colour]
        self._size = (header.width, header.height)
        self.info.update(quality=header.quality, model_id=header.model_id)
        exif, icc = bytes(sections[0]), bytes(sections[1])
        if exif:
            self.info["exif"] = exif
        if icc:
            self.info["icc_profile"] = icc
        self.tile = [ImageFile._Tile(FORMAT, (0, 0) + self.size, 0, None)]


class TngDecoder(ImageFile.PyDecoder):
    _pulls_fd = True

    def decode(self, buffer: bytes) -> tuple[int, int]:
        self.fd.seek(0)
        try:
            image = _codec().decode(self.fd.read()).image
        except TNGError as e:
            raise OSError(f"cannot decode TNG file: {e}") from None
        self.set_as_raw(image.tobytes(), image.mode)
        return -1, 0


def _save(im: Image.Image, fp, filename) -> None:
    opts = im.encoderinfo
    try:
        src = from_pil(im, opts.get("exif"), opts.get("icc_profile"))
        effort = opts.get("effort")
        codec = _codec(opts.get("model_id"), None if effort is None else int(effort))
        data = codec.encode(src, quality=float(opts.get("quality", 4.0))).data
    except TNGError as e:
        raise OSError(f"cannot write TNG file: {e}") from None
    fp.write(data)


def register() -> None:
    """Make Pillow open and save .tng files (idempotent)."""
    Image.register_open(FORMAT, TngImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".tng")
    Image.register_mime(FORMAT, "image/x-tng")
    Image.register_decoder(FORMAT, TngDecoder)


register()
