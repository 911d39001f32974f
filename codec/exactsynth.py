"""The decoder's synthesis in exact integer arithmetic: the same pixels on every machine (models
1–6; weights made by `--stage int8-synthesis` use the 8-bit synthesis of `intsynth.py` instead).

A float synthesis gives pixels that differ by one level here and there between thread counts and
CPU kinds (measured: oneDNN's AVX-512 kernels sum in a thread-dependent order, and AVX2 machines
differ from AVX-512 ones), so `decoded_sha256` and golden files would only hold on the machine that
wrote them. Here every value is a fixed-point integer held in float64, and every convolution's
partial sums are integers below 2**53, so any summation order (threads, BLAS, CPU or GPU) gives the
same result; the few non-linear steps are single IEEE-754 operations (sqrt, multiply, add), which
are correctly rounded everywhere (sqrt through `sqrt_`: torch's own is not, on every CPU).

    ŷ      = round((symbol + μ) · inverse_gain)        on a 2**-ACT_FRAC grid, |ŷ| ≤ ACT_LIMIT
    deconv:  integer weights per output channel (|w| < 2**W_BITS, a power-of-two scale each)
    IGDN:    x·sqrt(β + Σ γ·x²) with x² on the activation grid and integer γ per output channel
    pixels = round(255 · last layer), clamped to 0..255

The inverse gain of a (fractional) quality is computed with `decimal` (correctly rounded exp), not
libm, whose last bit may differ between machines. The weights are quantised once, when a model is
loaded, from the float weights file; `bounds` proves the 2**53 limit for each model at load time.
"""
from __future__ import annotations

import functools
import math
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .intnet import ACT_BITS as MEAN_FRAC  # the hyper-synthesis gives means on this grid
from .layers import GDN

ACT_FRAC = 12  # activations are multiples of 2**-12
ACT_LIMIT = 2.0**7  # |activation| clamp, in real units
W_BITS = 11  # integer weights below 2**11 in magnitude
GAIN_FRAC = 16  # inverse gains are multiples of 2**-16
EXACT = 2.0**53

LIM = ACT_LIMIT * 2**ACT_FRAC  # the clamp in integer units


def _shifts(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Per channel along `dim`: s with max|w|·2**s in [2**(W_BITS-1), 2**W_BITS) (frexp: exact)."""
    peak = w.abs().amax(dim=[d for d in range(w.dim()) if d != dim])
    return torch.tensor([W_BITS - math.frexp(float(v))[1] if v > 0 else 0 for v in peak], dtype=torch.float64)


class ExactSynthesis:
    """Integer version of a TNGModel's g_s and inverse gains; call it on one tile's residuals."""

    def __init__(self, g_s: nn.Sequential, log_inv_gain: torch.Tensor):
        self.layers: list[tuple] = []
        self.bounds: list[float] = []  # largest possible |partial sum| of each convolution
        for layer in g_s:
            if isinstance(layer, nn.ConvTranspose2d):
                w = layer.weight.detach().double()  # (cin, cout, k, k)
                scale = 2.0 ** _shifts(w, 1)
                w_int = torch.round(w * scale.view(1, -1, 1, 1))
                per_out = w_int.abs().sum((0, 2, 3))  # a transposed conv's output sums at most these
                self.bounds.append(float(per_out.max()) * LIM)
                offset = layer.bias.detach().double() * 2**ACT_FRAC
                self.layers.append(("deconv", w_int, scale.view(1, -1, 1, 1), offset.view(1, -1, 1, 1),
                                    layer.stride[0], layer.padding[0], layer.output_padding[0]))
            elif isinstance(layer, GDN) and layer.inverse:
                beta, gamma = (p.detach() for p in layer.effective_parameters(torch.float64))
                c = gamma.shape[0]
                s = _shifts(gamma, 0)  # per output channel (row)
                g_int = torch.round(gamma * (2.0**s).view(-1, 1))
                unit = 2.0 ** (s + ACT_FRAC)  # acc / unit = Σ γ·x² in real units
                beta_int = torch.round(beta * unit)
                self.bounds.append(float(g_int.sum(1).max()) * (LIM * LIM / 2**ACT_FRAC) + float(beta_int.max()))
                self.layers.append(("igdn", g_int.view(c, c, 1, 1), unit.view(1, -1, 1, 1), beta_int.view(1, -1, 1, 1)))
            else:
                raise ValueError(f"no exact form of {type(layer).__name__} in a synthesis")
        if max(self.bounds) >= EXACT:
            raise ValueError(f"synthesis weights too large for exact arithmetic (bound {max(self.bounds):.3g})")
        self.log_inv_gain = log_inv_gain.detach().double().cpu()

    @functools.lru_cache(maxsize=64)
    def inverse_gain(self, q_milli: int) -> torch.Tensor:
        return inverse_gain(self.log_inv_gain, q_milli)

    @torch.no_grad()
    def __call__(self, residual: torch.Tensor, mean: torch.Tensor, q_milli: int, device: torch.device) -> torch.Tensor:
        """Pixels (B, 3, H, W) uint8 from tiles' integer residuals and means (B, M, h, w)."""
        # cuDNN may pick FFT or Winograd algorithms, which are not exact; the native GEMM path is.
        with torch.backends.cudnn.flags(enabled=False):
            return self._run(residual, mean, q_milli, device)

    def _run(self, residual: torch.Tensor, mean: torch.Tensor, q_milli: int, device: torch.device) -> torch.Tensor:
        ig = self.inverse_gain(q_milli).to(device).view(1, -1, 1, 1)
        symbols = residual.to(device, torch.float64) * 2**MEAN_FRAC + mean.to(device, torch.float64) * 2**MEAN_FRAC
        x = torch.floor(symbols * ig / 2.0 ** (MEAN_FRAC + GAIN_FRAC - ACT_FRAC) + 0.5).clamp_(-LIM, LIM)
        del symbols
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if layer[0] == "deconv":
                _, w, scale, offset, stride, pad, out_pad = layer
                acc = deconv_striped(x, w.to(device), stride, pad, out_pad)
                del x
                x = acc.div_(scale.to(device)).add_(offset.to(device))  # real value · 2**ACT_FRAC
                if i == last:
                    return x.mul_(255 / 2**ACT_FRAC).add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)
                x = x.add_(0.5).floor_().clamp_(-LIM, LIM)
            else:
                _, g, unit, beta = layer
                g, unit, beta = g.to(device), unit.to(device), beta.to(device)
                for a, b in _stripes(x.shape[2], _rows(x.shape[0] * x.shape[1] * x.shape[3])):
                    part = x[:, :, a:b]  # in place, a band of rows at a time: bounded temporaries
                    sq = (part * part).div_(2**ACT_FRAC).add_(0.5).floor_()
                    norm = sqrt_(F.conv2d(sq, g).add_(beta).div_(unit))
                    part.mul_(norm).add_(0.5).floor_().clamp_(-LIM, LIM)
        raise AssertionError("the synthesis ends with a transposed convolution")


def sqrt_(t: torch.Tensor) -> torch.Tensor:
    """t's square root in place, correctly rounded (IEEE-754) on every machine. torch's CPU sqrt is
    not: its AVX2 kernels (AMD EPYC, torch 2.13) are 1 ulp off for 5-70 % of values (measured against
    exact rationals), where AVX-512 ones are right, so a decoder's pixels would depend on the CPU.
    numpy's (the hardware instruction) and CUDA's are correctly rounded."""
    if t.device.type == "cpu":
        view = t.numpy()
        np.sqrt(view, out=view)
        return t
    return t.sqrt_()


# Working memory of one step, in float64 values: a transposed convolution's column buffer is
# (C_out·k²) × (input pixels), 1.3 GB for the third layer of a 1024² tile in one piece.
STRIPE_VALUES = 2**24  # 128 MiB


def inverse_gain(log_inv_gain: torch.Tensor, q_milli: int) -> torch.Tensor:
    """(M,) integer inverse gains (units 2**-GAIN_FRAC) of quality q_milli/1000, geometric between the
    levels' rows of log_inv_gain (float64, CPU), computed with `decimal` (correctly rounded exp) so that
    every machine agrees."""
    levels = log_inv_gain.shape[0]
    pos = q_milli - 1000
    lo = min(pos // 1000, levels - 2)
    out = []
    with localcontext() as ctx:
        ctx.prec = 40
        t = Decimal(pos - 1000 * lo) / Decimal(1000)  # exact: a multiple of 0.001
        for a, b in zip(log_inv_gain[lo].tolist(), log_inv_gain[lo + 1].tolist()):
            g = (Decimal(a) * (1 - t) + Decimal(b) * t).exp() * 2**GAIN_FRAC
            out.append(float(g.to_integral_value(ROUND_HALF_EVEN)))
    return torch.tensor(out, dtype=torch.float64)


def _rows(values_per_row: int) -> int:
    return max(1, STRIPE_VALUES // max(1, values_per_row))


def _stripes(n: int, rows: int):
    for a in range(0, n, rows):
        yield a, min(n, a + rows)


def deconv_striped(x: torch.Tensor, w: torch.Tensor, stride: int, pad: int, out_pad: int) -> torch.Tensor:
    """conv_transpose2d(x, w, None, stride, pad, out_pad), computed in bands of output rows.

    Output row o takes input rows i with stride·i − pad + t = o, t in [0, k). Each band's input rows
    (with that halo) go through a transposed convolution without vertical padding, and the band's
    rows are cut from its result. The values are the same as in one piece: the arithmetic is exact.
    """
    b, _, h, wd = x.shape
    cout, k = w.shape[1], w.shape[2]
    out_h = (h - 1) * stride - 2 * pad + k + out_pad
    out_w = (wd - 1) * stride - 2 * pad + k + out_pad
    rows = _rows(b * cout * k * k * wd) * stride  # output rows per band: column buffer ≤ STRIPE_VALUES
    if rows >= out_h:
        return F.conv_transpose2d(x, w, None, stride, pad, out_pad)
    out = torch.empty((b, cout, out_h, out_w), dtype=x.dtype, device=x.device)
    for oa, ob in _stripes(out_h, rows):
        ia = max(0, -(-(oa + pad - (k - 1)) // stride))
        ib = min(h, (ob - 1 + pad) // stride + 1)
        full = F.conv_transpose2d(x[:, :, ia:ib], w, None, stride, (0, pad), (0, out_pad))
        r = oa - stride * ia + pad  # full row r is output row stride·ia + r − pad
        out[:, :, oa:ob] = full[:, :, r : r + ob - oa]
    return out


def as_image(pixels: torch.Tensor, h: int, w: int) -> np.ndarray:
    """(3, H, W) pixels of a padded tile -> (h, w, 3) numpy, cropped."""
    return pixels[:, :h, :w].permute(1, 2, 0).cpu().numpy()
