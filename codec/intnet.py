"""The hyper-synthesis as an integer network: the part of the codec that chooses probability tables.

Learned codecs break when encoder and decoder compute the entropy parameters with floats that differ
by one ulp (other thread count, other BLAS, GPU vs CPU): a different table decodes garbage. Following
Ballé et al. 2019 ("Integer networks for data compression with latent-variable models"), this network
has integer weights (fixed point, WEIGHT_BITS fractional bits) and integer activations (ACT_BITS
fractional bits, ReLU clipped to ACT_MAX), and runs in float64 where every partial sum is an exact
integer below 2**53: any summation order, thread count or library gives bit-identical results.

Training runs the same network in float32 with straight-through rounding of weights and
activations (`forward`); coding runs `exact` on integer weights exported from it.

Output per latent channel: the mean (fixed point, ACT_BITS fractional bits) and the index into the
Gaussian conditional's scale grid (`codec/entropy_models.py`, which rounds it to a table), which the
float network predicts as a continuous value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_BITS = 10  # weights are multiples of 2**-10
ACT_BITS = 8  # activations and means are multiples of 2**-8
ACT_MAX = 255.0  # ReLU clip; keeps every partial sum far below 2**53 (bound checked in tests)


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class ExactConv(nn.Module):
    """A conv (stride s) or transposed conv (upsampling s) whose weights live on a 2**-WEIGHT_BITS grid."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, transposed: bool = False):
        super().__init__()
        self.stride, self.transposed, self.pad = stride, transposed, kernel // 2
        shape = (cin, cout, kernel, kernel) if transposed else (cout, cin, kernel, kernel)
        proto = (nn.ConvTranspose2d if transposed else nn.Conv2d)(cin, cout, kernel)
        self.weight = nn.Parameter(proto.weight.detach().reshape(shape).clone())
        self.bias = nn.Parameter(proto.bias.detach().clone())

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose2d(x, w, b, self.stride, self.pad, output_padding=self.stride - 1)
        return F.conv2d(x, w, b, self.stride, self.pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = 2.0**WEIGHT_BITS
        return self._conv(x, ste_round(self.weight * q) / q, ste_round(self.bias * q) / q)

    def integer_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        q = 2.0**WEIGHT_BITS
        return torch.round(self.weight.detach() * q).to(torch.int32), torch.round(self.bias.detach() * q).to(torch.int32)


class HyperSynthesis(nn.Module):
    """ẑ (integers) -> (mean, continuous scale index) for every element of y."""

    def __init__(self, n: int, m: int):
        super().__init__()
        self.m = m
        self.layers = nn.ModuleList([
            ExactConv(n, m, 5, 2, transposed=True),
            ExactConv(m, m, 5, 2, transposed=True),
            ExactConv(m, 2 * m, 3, 1),
        ])

    def forward(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training path (float32, straight-through rounding). Returns (mean, scale_index)."""
        a = 2.0**ACT_BITS
        with torch.autocast(z_hat.device.type, enabled=False):
            x = z_hat.float()
            for layer in self.layers[:-1]:
                x = ste_round(torch.clamp(layer(x), 0, ACT_MAX) * a) / a
            out = self.layers[-1](x)
            mean, idx = out[:, : self.m], out[:, self.m :]
            return ste_round(mean * a) / a, idx

    @staticmethod
    def exact(z_hat: torch.Tensor, params: list[tuple[torch.Tensor, torch.Tensor, dict]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Bit-exact path on CPU float64. params: [(int weight, int bias, conv kwargs)] per layer.

        Returns (mean as float64 multiples of 2**-ACT_BITS, scale index as unrounded fixed point
        int64 with ACT_BITS fractional bits); `GaussianConditional.table_index` turns the latter into table indexes.
        """
        x = z_hat.detach().to("cpu", torch.float64)  # activation fixed point: input has 0 fractional bits
        frac = 0
        for i, (w, b, kw) in enumerate(params):
            w64, b64 = w.double(), b.double() * 2.0**frac  # bias to the accumulator's fixed point
            if kw["transposed"]:
                acc = F.conv_transpose2d(x, w64, b64, kw["stride"], kw["pad"], output_padding=kw["stride"] - 1)
            else:
                acc = F.conv2d(x, w64, b64, kw["stride"], kw["pad"])
            # acc has frac + WEIGHT_BITS fractional bits; rescale to ACT_BITS, rounding half up.
            shift = frac + WEIGHT_BITS - ACT_BITS
            x = torch.floor(acc / 2.0**shift + 0.5)
            frac = ACT_BITS
            if i < len(params) - 1:
                x = torch.clamp(x, 0, ACT_MAX * 2**ACT_BITS)
        m = x.shape[1] // 2
        return x[:, :m] / 2.0**ACT_BITS, x[:, m:].to(torch.int64)

    def export(self) -> list[tuple[torch.Tensor, torch.Tensor, dict]]:
        return [(*l.integer_params(), {"transposed": l.transposed, "stride": l.stride, "pad": l.pad}) for l in self.layers]
