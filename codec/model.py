"""The TNG network: a mean–scale hyperprior (Minnen et al. 2018) with gain units for variable rate.

    x ─g_a─▶ y ·gain(q) ─h_a─▶ z ─round─▶ ẑ ─(factorized prior)─▶ bits_z
                                        ẑ ─h_s (integer net)─▶ μ, scale index
    y·gain ─round(·−μ)─▶ symbols ─(Gaussian conditional)─▶ bits_y
    ŷ = (symbols + μ) · inverse_gain(q) ─g_s─▶ x̂

With a checkerboard context model (codec/context.py; models from 8), the μ and scale of half the
latents are corrected from the other half, decoded first (a second pass over the tile).

One model serves every quality q in [1, 8]: per-channel gain vectors (Cui et al. 2021) for the eight
integer levels, interpolated geometrically in between, trained each for its own λ.
Training uses straight-through rounding for the reconstruction, and additive noise for the rate (or,
for fine-tuning, the rounded latents' own rate). The entropy models of z and y, which own
quantisation, likelihoods and tables, are in `codec/entropy_models.py`; the loss is `codec/loss.py`.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .context import CONTEXTS, CheckerboardContext, anchor_mask
from .entropy_models import FactorizedPrior, GaussianConditional
from .intnet import HyperSynthesis, ste_round
from .intsynth import QuantSynthesis
from .layers import GDN

LEVELS = 8
# λ of each integer quality level, log-spaced; loss = λ·255²·MSE + bpp. The range reaches down so
# that quality 1 lands near 0.1 bpp on photos, the bottom of the range the codec is measured over.
# A weights file records the table its gains were trained for ("lambdas"); files without one are
# models 1–4, trained with LEGACY_LAMBDAS (their quality 1 sat far above 0.1 bpp).
def _log_spaced(lo: float, hi: float) -> tuple[float, ...]:
    return tuple(lo * (hi / lo) ** (i / (LEVELS - 1)) for i in range(LEVELS))


LAMBDAS = _log_spaced(0.0003, 0.13)
LEGACY_LAMBDAS = _log_spaced(0.0018, 0.13)

STRIDE = 64  # total downsampling of the hyper-latent; images are padded to a multiple of this


def _conv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, s, k // 2)


def _deconv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, s, k // 2, output_padding=s - 1)


def lambda_at(q: torch.Tensor, table: Sequence[float] = LAMBDAS) -> torch.Tensor:
    """λ for (fractional) qualities q in [1, 8], geometric between the levels of `table`."""
    logs = torch.log(torch.tensor(table, device=q.device))
    return torch.exp(_interp(logs, q))


def remap_levels(table: torch.Tensor, old: Sequence[float], new: Sequence[float]) -> torch.Tensor:
    """Per-level rows (LEVELS, ...) trained for the λ table `old`, moved to the λ table `new`:
    linear in log λ between old levels, continued along the end segments beyond them (fine-tuning
    starts from there; gains are log-linear in log λ to a good approximation)."""
    x = [math.log(v) for v in old]
    rows = []
    for lam in new:
        t = math.log(lam)
        k = min(max(bisect.bisect_left(x, t), 1), len(x) - 1)  # segment (k-1, k), the nearest one outside
        f = (t - x[k - 1]) / (x[k] - x[k - 1])
        rows.append(table[k - 1] + (table[k] - table[k - 1]) * f)
    return torch.stack(rows)


def _interp(table: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of table rows (LEVELS, ...) at q in [1, LEVELS]."""
    pos = (q.clamp(1, LEVELS) - 1).to(table.dtype)
    lo = pos.floor().long().clamp(max=LEVELS - 2)
    t = (pos - lo).reshape(-1, *([1] * (table.dim() - 1)))
    return table[lo] * (1 - t) + table[lo + 1] * t


SYNTHESES = ("exact", "int8")  # how a decoder runs g_s: exactsynth.py (models 1-6), or intsynth.py


class TNGModel(nn.Module):
    def __init__(self, n: int = 96, m: int = 160, synthesis: str = "exact", context: str | None = None):
        super().__init__()
        if synthesis not in SYNTHESES:
            raise ValueError(f"unknown synthesis {synthesis!r}")
        if context not in CONTEXTS:
            raise ValueError(f"unknown context model {context!r}")
        self.n, self.m, self.synthesis, self.context_kind = n, m, synthesis, context
        self.g_a = nn.Sequential(_conv(3, n), GDN(n), _conv(n, n), GDN(n), _conv(n, n), GDN(n), _conv(n, m))
        self.g_s = nn.Sequential(
            _deconv(m, n), GDN(n, True), _deconv(n, n), GDN(n, True), _deconv(n, n), GDN(n, True), _deconv(n, 3)
        )
        self.h_a = nn.Sequential(
            _conv(m, n, 3, 1), nn.LeakyReLU(), _conv(n, n), nn.LeakyReLU(), _conv(n, n)
        )
        self.h_s = HyperSynthesis(n, m)
        self.z_prior = FactorizedPrior(n)
        self.y_prior = GaussianConditional()  # no parameters: the state dict is unchanged
        # codec/context.py: the non-anchor latents' parameters from the decoded anchors (None: hyper-prior only)
        self.context = CheckerboardContext(n, m) if context == "checkerboard" else None
        # Log gains: higher quality -> larger latents -> finer effective quantisation.
        init = torch.tensor([0.5 * math.log(l / LAMBDAS[3]) for l in LAMBDAS]).unsqueeze(1).repeat(1, m)
        self.log_gain = nn.Parameter(init.clone())
        self.log_inv_gain = nn.Parameter(-init.clone())
        if synthesis == "int8":  # the activation steps of the 8-bit synthesis (calibrated, then fixed)
            self.int8 = QuantSynthesis([m, n, n, n])

    def gains(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain, inverse gain) of shape (B, M, 1, 1) for qualities q (B,)."""
        g = torch.exp(_interp(self.log_gain, q))
        ig = torch.exp(_interp(self.log_inv_gain, q))
        return g[:, :, None, None], ig[:, :, None, None]

    def forward(self, x: torch.Tensor, q: torch.Tensor, rounded_rate: bool = False) -> dict[str, torch.Tensor]:
        """Training pass. x in [0, 1], (B, 3, H, W) with H, W multiples of STRIDE; q (B,) in [1, 8].

        Returns x_hat and per-image bits (B,) of y and z, estimated from the likelihoods of the noisy
        latents (additive uniform noise, the usual relaxation), or with rounded_rate of the rounded
        ones the coder codes (straight-through gradients). The noisy estimate overstates the rate of
        near-zero latents, most at the low qualities, so fine-tuning on it misjudges the low rates
        (measured in docs/training-log.md, model 6).
        """
        gain, inv_gain = self.gains(q)
        y = self.g_a(x).float() * gain
        z = self.h_a(y).float()
        z_hat = self.z_prior.quantize(z, "round")
        z_rate = z_hat if rounded_rate else self.z_prior.quantize(z, "noise")
        r_hat, mean, scale = self.latent_residuals(y, z_hat)
        r_rate = r_hat if rounded_rate else self.y_prior.quantize(y, "noise", mean)
        bits_y, bits_z = self.bits(r_rate, scale, z_rate)
        x_hat = self.synthesise(self.y_prior.dequantize(r_hat, mean) * inv_gain)
        return {"x_hat": x_hat, "bits_y": bits_y, "bits_z": bits_z}

    @torch.no_grad()
    def synthesis_input(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The inverse-gained quantised latents ŷ that the synthesis receives for images x at qualities q."""
        gain, inv_gain = self.gains(q)
        y = self.g_a(x).float() * gain
        r_hat, mean, _ = self.latent_residuals(y, self.z_prior.quantize(self.h_a(y).float(), "round"))
        return self.y_prior.dequantize(r_hat, mean) * inv_gain

    def synthesise(self, y: torch.Tensor) -> torch.Tensor:
        """x̂ from inverse-gained latents, as the decoder's synthesis computes it (int8: straight-through)."""
        if self.synthesis == "int8":
            return self.int8(self.g_s, y)
        return self.g_s(y).float()

    def latent_residuals(self, y: torch.Tensor, z_hat: torch.Tensor,
                         rounding: Callable[[torch.Tensor], torch.Tensor] = ste_round) -> tuple[torch.Tensor, ...]:
        """(rounded residuals, mean, scale) of gained latents y given the hyper-latents (float path).

        Without a context model every mean and scale comes from the hyper-synthesis. With the
        checkerboard, the anchors are rounded first, and the others' parameters follow from them as
        the decoder will compute them. `rounding` (straight-through by default; refinement anneals)
        rounds each residual once."""
        mean, idx = self.h_s(z_hat)
        r_hat = rounding(y - mean)
        if self.context is not None:
            anchor = anchor_mask(*y.shape[-2:], y.device)
            mean, idx = self.context(r_hat + mean, mean, idx)
            r_hat = torch.where(anchor, r_hat, rounding(y - mean))
        return r_hat, mean, self.y_prior.scale(idx)

    def bits(self, r: torch.Tensor, scale: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image bits (B,) of residuals r = y − mean under N(0, scale²), and of hyper-latents z."""
        return self.y_prior.bits(r, scale), self.z_prior.bits(z)
