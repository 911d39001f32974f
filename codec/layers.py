"""GDN (Ballé et al. 2016), the normalising nonlinearity of the analysis and synthesis transforms.

    y_i = x_i / sqrt(β_i + Σ_j γ_ij x_j²)      (IGDN, inverse=True, multiplies instead)

β and γ are stored as square roots and squared with a floor (`effective_parameters`), which keeps β
positive and γ non-negative whatever a gradient step does. The float layer here and the exact
synthesis (exactsynth.py) both read β and γ through that one method.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _nonneg(p: torch.Tensor, floor: float) -> torch.Tensor:
    """Square reparameterisation with a floor: the value p² is at least floor."""
    return torch.clamp(p, min=floor**0.5) ** 2


class GDN(nn.Module):
    """y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2); `inverse=True` multiplies instead (IGDN)."""

    BETA_MIN = 1e-6  # floors of the effective parameters
    GAMMA_MIN = 2**-18

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(torch.eye(channels) * 0.1**0.5)  # sqrt-parameterised, init 0.1·I

    def effective_parameters(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(β (C,), γ (C, C)) as the normalisation uses them, in dtype; row i of γ weighs the
        squared inputs of output channel i."""
        return _nonneg(self.beta.to(dtype), self.BETA_MIN), _nonneg(self.gamma.to(dtype), self.GAMMA_MIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalisation in fp32 even under bf16 autocast: x^2 sums lose too much in bf16.
        with torch.autocast(x.device.type, enabled=False):
            c = x.shape[1]
            beta, gamma = self.effective_parameters()
            gamma = gamma.view(c, c, 1, 1)
            # Bias added separately: oneDNN's 1x1 conv with a bias sums in a thread-count-dependent
            # order, without one it does not (measured), and decoding must not depend on threads.
            beta = beta.view(1, c, 1, 1)
            if torch.is_grad_enabled():
                x = x.float()
                norm = torch.sqrt(F.conv2d(x * x, gamma) + beta)
                return x * norm if self.inverse else x / norm
            # Inference: in place, so a tile needs half the memory, and a band of rows at a time, so
            # that the band stays in cache through the five passes over it. A bf16 input (autocast)
            # is widened and its output rounded back band by band, in cache: the next convolution
            # would round it to bf16 anyway, and whole-tensor conversions cost as much as the rest.
            out = x if x.dtype == torch.float32 else torch.empty_like(x)
            rows = max(1, BAND_VALUES // max(1, x.shape[0] * c * x.shape[3]))
            for a in range(0, x.shape[2], rows):
                part = x[:, :, a : a + rows].float()  # fp32: a view of x, else a widened copy
                norm = F.conv2d(part * part, gamma).add_(beta).sqrt_()
                part.mul_(norm) if self.inverse else part.div_(norm)
                if out is not x:
                    out[:, :, a : a + rows] = part
            return out


BAND_VALUES = 2**18  # 1 MiB of fp32 values: about a core's L2
