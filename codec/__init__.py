"""TNG: a learned image codec (mean–scale hyperprior, integer entropy parameters, range coding).

Usable on its own, without Ray:

    from tng.codec import Codec, open_image
    enc = Codec().encode(open_image("photo.jpg"), quality=4)   # enc.data: the .tng bytes
    img = Codec().decode(enc.data).image                        # a PIL image, original mode

and, once `codec` is imported, Pillow opens and writes .tng files (`codec/pillow_plugin.py`).
"""
from . import pillow_plugin  # noqa: F401  (registers .tng with Pillow: Image.open / Image.save)
from .coder import Codec, Decoded, Encoded
from .errors import TNGError
from .images import DEFAULT_MAX_PIXELS, Colour, Flag, SourceImage, image_bytes, open_image, save_image, to_pil
from .metrics import ms_ssim, psnr
from .registry import available_models, load_model

__all__ = [
    "Codec", "Decoded", "Encoded", "psnr", "ms_ssim", "TNGError", "DEFAULT_MAX_PIXELS", "Colour", "Flag", "SourceImage",
    "image_bytes", "open_image", "save_image", "to_pil", "available_models", "load_model",
]
