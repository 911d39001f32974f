"""Neural network layers of the TNG codec: GDN and the factorized density for the hyper-latent.

GDN (Ballé et al. 2016) is the normalising nonlinearity of the analysis and synthesis transforms.
`FactorizedDensity` is the learned per-channel univariate CDF of Ballé et al. 2018 (appendix 6.1),
used as the prior of the hyper-latent z. Its probability tables are evaluated once, at export, into
integers stored with the weights, so decoders never recompute them in floating point.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _nonneg(p: torch.Tensor, floor: float = 2**-18) -> torch.Tensor:
    """Square reparameterisation with a floor (as in Ballé's GDN): keeps the value >= floor."""
    return torch.clamp(p, min=floor**0.5) ** 2


class GDN(nn.Module):
    """y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2); `inverse=True` multiplies instead (IGDN)."""

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(torch.eye(channels) * 0.1**0.5)  # sqrt-parameterised, init 0.1·I

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalisation in fp32 even under bf16 autocast: x^2 sums lose too much in bf16.
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            c = x.shape[1]
            gamma = _nonneg(self.gamma).view(c, c, 1, 1)
            # Bias added separately: oneDNN's 1x1 conv with a bias sums in a thread-count-dependent
            # order, without one it does not (measured), and decoding must not depend on threads.
            beta = _nonneg(self.beta, 1e-6).view(1, c, 1, 1)
            if torch.is_grad_enabled():
                norm = torch.sqrt(F.conv2d(x * x, gamma) + beta)
                return x * norm if self.inverse else x / norm
            # Inference: in place, so a tile needs half the memory (same values, same order).
            norm = F.conv2d(x * x, gamma).add_(beta).sqrt_()
            return x.mul_(norm) if self.inverse else x.div_(norm)


class FactorizedDensity(nn.Module):
    """Per-channel learned CDF c(x) = sigmoid(f(x)), f a small monotone network (filters 3,3,3)."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = torch.log(torch.expm1(torch.tensor(1 / scale / dims[i + 1])))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), float(init))))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, N) -> logits of the CDF at x, same shape."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(m), x) + b
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """Probability mass of the unit interval around each value of z (B, C, H, W)."""
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            b, c, h, w = z.shape
            v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
            lower = self.logits_cdf(v - 0.5)
            upper = self.logits_cdf(v + 0.5)
            sign = -torch.sign(lower + upper).detach()  # evaluate in the tail with better precision
            p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
            return p.reshape(c, b, h, w).permute(1, 0, 2, 3).clamp_min(1e-9)

    @torch.no_grad()
    def pmf_table(self, radius: int) -> torch.Tensor:
        """(C, 2·radius+1) float64 probabilities of the integers -radius..radius, tails folded in."""
        c = self.matrices[0].shape[0]
        k = torch.arange(-radius, radius + 1, dtype=torch.float32).expand(c, 1, -1)
        cdf_hi = torch.sigmoid(self.logits_cdf(k + 0.5)).double()[:, 0]
        cdf_lo = torch.sigmoid(self.logits_cdf(k - 0.5)).double()[:, 0]
        pmf = cdf_hi - cdf_lo
        pmf[:, 0] += cdf_lo[:, 0]  # mass below -radius goes to the clamped end symbol
        pmf[:, -1] += 1 - cdf_hi[:, -1]
        return pmf.clamp_min(0)
