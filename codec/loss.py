"""The rate–distortion loss: what training minimises over the weights and refinement over one
image's latents.

    loss = λ·255²·MSE + bpp        per image

MSE is over pixels in [0, 1] (so 255²·MSE is in 8-bit levels squared) and bpp counts the latents'
bits per pixel; λ comes from the quality (`model.lambda_at`).
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class RDLoss(NamedTuple):
    loss: torch.Tensor  # (B,) per image; callers reduce
    mse: torch.Tensor  # (B,)
    bpp: torch.Tensor  # (B,)


def rd_loss(x_hat: torch.Tensor, x: torch.Tensor, bits: torch.Tensor, lam: torch.Tensor | float,
            valid: torch.Tensor | None = None) -> RDLoss:
    """λ·255²·MSE + bpp of reconstructions x_hat of x (B, 3, H, W), whose latents cost bits (B,).

    lam: λ per image (B,) or one λ for all. valid (B, 1, H, W): 1 on an image's own pixels and 0 on
    padding, which then costs rate only (MSE and bpp over the valid pixels); None: every pixel.
    """
    if valid is None:
        mse = ((x_hat - x) ** 2).mean((1, 2, 3))
        pixels = x.shape[2] * x.shape[3]
    else:
        pixels = valid.sum((1, 2, 3))
        mse = (((x_hat - x) ** 2) * valid).sum((1, 2, 3)) / (x.shape[1] * pixels)
    bpp = bits / pixels
    return RDLoss(lam * 255**2 * mse + bpp, mse, bpp)
