"""The checkerboard context model: half of the latents predict the entropy parameters of the other half.

He et al. 2021 ("Checkerboard Context Model for Efficient Learned Image Compression"): the latents
y are split like a checkerboard. The anchors ((i + j) even) are coded first, with the hyper-prior's
mean and scale alone; the others are coded second, with a mean and scale that an integer network
computes from the decoded anchors around them (a 5×5 convolution over the anchors) together with
the hyper-prior's own. Decoding stays two parallel passes over the tile, never a scan over pixels.

Like the hyper-synthesis (`codec/intnet.py`), this network is an integer network: weights on a
2**-WEIGHT_BITS grid, activations on a 2**-ACT_BITS grid clipped to ±ACT_MAX, run in float64 where
every partial sum is an exact integer, so a stream selects the same tables on every machine, thread
count and device. Training runs the same network in float32 with straight-through rounding.

Its last layer starts at zero, so a model given a new context codes as it did without one, and
joint fine-tuning starts from there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .intnet import ACT_BITS, ACT_MAX, WEIGHT_BITS, ExactConv, ste_round

CONTEXTS = (None, "checkerboard")  # what a weights file's "context" metadata may say (None: hyper-prior only)


def anchor_mask(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(h, w) bool, True on the anchors, the latents coded first: (i + j) even, counted from the tile's corner."""
    i = torch.arange(h, device=device)[:, None]
    j = torch.arange(w, device=device)[None, :]
    return (i + j) % 2 == 0


class CheckerboardContext(nn.Module):
    """(decoded anchors, hyper-prior mean and scale index) -> mean and scale index of every latent:
    the hyper-prior's at the anchors, corrected from the anchors around it everywhere else."""

    def __init__(self, n: int, m: int):
        super().__init__()
        self.m = m
        self.layers = nn.ModuleList([
            ExactConv(m, n, 5, 1),  # the anchors around each latent (the others are zero)
            ExactConv(n + 2 * m, m, 1),  # with the hyper-prior's mean and index
            ExactConv(m, 2 * m, 1),  # corrections of mean and index
        ])
        with torch.no_grad():
            self.layers[-1].weight.zero_()
            self.layers[-1].bias.zero_()

    def forward(self, y_hat: torch.Tensor, mean: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training path (float32, straight-through rounding). y_hat: the rounded latents (mean
        included; only the anchors are read); mean, idx: the hyper-synthesis' outputs."""
        a = 2.0**ACT_BITS
        with torch.autocast(y_hat.device.type, enabled=False):
            anchor = anchor_mask(*y_hat.shape[-2:], y_hat.device)
            mean, idx = mean.float(), ste_round(idx.float() * a) / a  # the index on the exact path's grid
            ctx = self.layers[0](torch.where(anchor, torch.clamp(y_hat.float(), -ACT_MAX, ACT_MAX), 0.0))
            ctx = ste_round(torch.clamp(ctx, -ACT_MAX, ACT_MAX) * a) / a
            feat = torch.cat([ctx, torch.clamp(mean, -ACT_MAX, ACT_MAX), torch.clamp(idx, -ACT_MAX, ACT_MAX)], 1)
            hidden = ste_round(torch.clamp(self.layers[1](feat), 0, ACT_MAX) * a) / a
            d = ste_round(self.layers[2](hidden) * a) / a
            return (torch.where(anchor, mean, mean + d[:, : self.m]),
                    torch.where(anchor, idx, idx + d[:, self.m :]))

    @staticmethod
    def exact(y_hat: torch.Tensor, mean: torch.Tensor, idx_fixed: torch.Tensor,
              params: list[tuple[torch.Tensor, torch.Tensor, dict]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Bit-exact path on CPU float64, in the forms `HyperSynthesis.exact` gives and takes: y_hat
        (only the anchors are read) and mean float64 multiples of 2**-ACT_BITS, the index int64 fixed
        point (ACT_BITS fractional bits). Returns (mean, index) of every latent in the same forms.

        It computes what the training path computes at the non-anchors, and nothing else: on the
        four sub-grids of the latents' 2×2 cells (`_cells`), the context convolution reads the two
        anchor grids and writes the two others, 12 of its 25 taps at a quarter of the positions each
        (4× fewer products than the whole convolution), and the 1×1 layers run on those two grids."""
        a = 2.0**ACT_BITS
        lim = ACT_MAX * a
        h, w = y_hat.shape[-2:]
        y = _cells(torch.clamp(y_hat.to(torch.float64) * a, -lim, lim))
        mean_fixed = mean.to(torch.float64) * a
        mean_c, idx_c = _cells(mean_fixed), _cells(idx_fixed.double())
        ctx = torch.clamp(_from_anchors(y, *params[0]), -lim, lim)
        feat = torch.cat([ctx, torch.clamp(torch.cat([mean_c[c] for c in _OTHERS]), -lim, lim),
                          torch.clamp(torch.cat([idx_c[c] for c in _OTHERS]), -lim, lim)], 1)
        hidden = torch.clamp(_layer(feat, *params[1]), 0, lim)
        d = _layer(hidden, *params[2])
        m, b = mean.shape[1], mean.shape[0]
        out_mean, out_idx = F.pad(mean_fixed, (0, w % 2, 0, h % 2)), F.pad(idx_fixed, (0, w % 2, 0, h % 2))
        for k, (i, j) in enumerate(_OTHERS):
            out_mean[:, :, i::2, j::2] += d[k * b : (k + 1) * b, :m]
            out_idx[:, :, i::2, j::2] += d[k * b : (k + 1) * b, m:].to(torch.int64)
        return out_mean[:, :, :h, :w] / a, out_idx[:, :, :h, :w]

    def export(self) -> list[tuple[torch.Tensor, torch.Tensor, dict]]:
        return [(*l.integer_params(), {"transposed": False, "stride": 1, "pad": l.pad}) for l in self.layers]


# The exact path's arithmetic. Inputs are integers (ACT_BITS fractional bits); a layer's sums have
# ACT_BITS + WEIGHT_BITS, and are brought back to ACT_BITS rounding half up. Every value is an
# integer below 2**53, so any summation order gives the same result.
_ANCHORS, _OTHERS = ((0, 0), (1, 1)), ((0, 1), (1, 0))  # positions in a 2×2 cell


def _cells(x: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
    """The four sub-grids x[..., i::2, j::2] of x (B, C, H, W) padded with zeros to even H, W."""
    x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
    return {(i, j): x[:, :, i::2, j::2] for i in (0, 1) for j in (0, 1)}


def _rescale(acc: torch.Tensor) -> torch.Tensor:
    return torch.floor(acc / 2.0**WEIGHT_BITS + 0.5)


def _layer(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, kw: dict) -> torch.Tensor:
    return _rescale(F.conv2d(x, w.double(), b.double() * 2.0**ACT_BITS))


def _from_anchors(y: dict[tuple[int, int], torch.Tensor], w: torch.Tensor, b: torch.Tensor, kw: dict) -> torch.Tensor:
    """The k×k convolution (zero padding k//2) of the latents with every non-anchor zeroed, at the
    non-anchors: (2B, C_out, H/2, W/2), cell position (0, 1) then (1, 0). A tap at offset (di, dj)
    from a latent at cell position (i, j) reads cell position ((i + di) mod 2, (j + dj) mod 2), at
    a cell offset of floor((i + di) / 2), floor((j + dj) / 2): per pair of cell positions, a small
    convolution of one sub-grid with the taps that land on it."""
    r = w.shape[-1] // 2
    w = w.double()
    out = []
    for i, j in _OTHERS:
        acc = b.double()[None, :, None, None] * 2.0**ACT_BITS
        for ai, aj in _ANCHORS:
            di = [d for d in range(-r, r + 1) if (i + d - ai) % 2 == 0]
            dj = [d for d in range(-r, r + 1) if (j + d - aj) % 2 == 0]
            u0, u1 = (i + di[0] - ai) // 2, (i + di[-1] - ai) // 2  # cell offsets read, first and last
            v0, v1 = (j + dj[0] - aj) // 2, (j + dj[-1] - aj) // 2
            taps = w[:, :, [d + r for d in di]][:, :, :, [d + r for d in dj]]
            acc = acc + F.conv2d(F.pad(y[ai, aj], (-v0, v1, -u0, u1)), taps)
        out.append(_rescale(acc))
    return torch.cat(out)
