"""The hyper-synthesis as an integer network: the part of the codec that chooses probability tables.

Learned codecs break when encoder and decoder compute the entropy parameters with floats that differ
by one ulp (other thread count, other BLAS, GPU vs CPU): a different table decodes garbage. Following
Ballé et al. 2019 ("Integer networks for data compression with latent-variable models"), this network
has integer weights (fixed point, WEIGHT_BITS fractional bits) and integer activations (ACT_BITS
fractional bits, ReLU clipped to ACT_MAX), and runs in float64 where every partial sum is an exact
integer below 2**53: any summation order, thread count or library gives bit-identical results.

Training runs the same network in float32 with straight-through rounding of weights and
activations (`forward`); coding runs `exact` on integer weights exported from it, through
`ExactHyper`, which gets the same integers from oneDNN's int8 kernels where the CPU has VNNI.

Output per latent channel: the mean (fixed point, ACT_BITS fractional bits) and the index into the
Gaussian conditional's scale grid (`codec/entropy_models.py`, which rounds it to a table), which the
float network predicts as a continuous value.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .int8conv import EXACT, has_vnni, interleave_nhwc, packed_conv, polyphase

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


_PLANE = 8  # bits per uint8 input plane
_WEIGHT_PLANE = 7  # weights as Σ 128**q · w_q, each w_q in [-64, 63]: int8, and small sums


class ExactHyper:
    """A weights file's integer hyper-synthesis, run exactly: `HyperSynthesis.exact`'s results, fast.

    kernel "onednn" (CPUs with VNNI): every layer as oneDNN int8 convolutions of 8-bit planes. Inputs
    are 16-bit (z + 2**15 for the signed first layer; the ReLU outputs, at most 255·2**8, as they
    are), split into two uint8 planes; weights into 7-bit planes (`_weight_planes`); a transposed
    layer is its polyphase convolution (int8conv.polyphase). Each plane pair's sums are integers below
    2**24 (checked here, from the weights), so exact in fp32; they are combined in float64, exact
    below 2**53, and then rounded as `HyperSynthesis.exact` does. "float64" (elsewhere, or for
    hyper-latents beyond 16 bits, which only damaged streams carry): `HyperSynthesis.exact` itself.
    Both give identical integers for integer ẑ; the tests compare them. kernel None: the fastest
    exact one here; "onednn" where it would not be exact raises ValueError.
    """

    def __init__(self, params: list[tuple[torch.Tensor, torch.Tensor, dict]],
                 kernel: Literal["onednn", "float64"] | None = None):
        self.params = params
        fits = has_vnni() and _fits_int8(params)
        if kernel == "onednn" and not fits:
            raise ValueError("the int8 hyper-synthesis is not exact here (no VNNI, or sums that may reach 2**24)")
        self.kernel = kernel or ("onednn" if fits else "float64")
        self._layers: list[list[list[tuple[int, Callable[[torch.Tensor], torch.Tensor]]]]] | None = None

    def __call__(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, scale index) of ẑ (integers, (B, N, h, w)), as `HyperSynthesis.exact` returns them."""
        z = z_hat.detach().to("cpu", torch.float64)
        if self.kernel == "float64" or z.numel() == 0 or z.abs().max() >= 2**15:
            return HyperSynthesis.exact(z, self.params)
        x, frac = z.permute(0, 2, 3, 1).contiguous(), 0  # channels-last (B, h, w, C) throughout, as oneDNN works
        for i, ((w, b, kw), convs) in enumerate(zip(self.params, self._prepared(), strict=True)):
            acc = None
            for plane, plane_convs, up in zip(_split(x, signed=i == 0), convs, (_PLANE, 0)):
                for shift, conv in plane_convs:
                    part = conv(plane).permute(0, 2, 3, 1).double()
                    if acc is None:
                        acc = part.mul_(2.0 ** (shift + up))
                    else:  # exact: integers times powers of two, all below 2**53
                        acc.add_(part, alpha=2.0 ** (shift + up))
            if kw["transposed"]:  # phase-major channels (py, px, C) -> the upsampled image
                acc = interleave_nhwc(acc, w.shape[1])
            acc.add_(b.double() * 2.0**frac)
            shift = frac + WEIGHT_BITS - ACT_BITS
            x = acc.mul_(2.0**-shift).add_(0.5).floor_()  # ÷ 2**shift, rounding half up
            frac = ACT_BITS
            if i < len(self.params) - 1:
                x.clamp_(0, ACT_MAX * 2**ACT_BITS)
        x = x.permute(0, 3, 1, 2)
        m = x.shape[1] // 2
        return (x[:, :m] / 2.0**ACT_BITS).contiguous(), x[:, m:].to(torch.int64).contiguous()

    def _prepared(self) -> list[list[list[tuple[int, Callable[[torch.Tensor], torch.Tensor]]]]]:
        """Per layer and input plane (high, low): [(shift, int8 convolution)] of its weight planes.
        Made whole before it is published: threads share a loaded model."""
        if self._layers is None:
            layers = []
            for i, (w, _, kw) in enumerate(self.params):
                planes = _weight_planes(_as_convolution(w, kw))
                layers.append([[(shift, packed_conv(plane, zero, 1)) for shift, plane in planes]
                               for zero in _zeros(i == 0)])
            self._layers = layers
        return self._layers


def _as_convolution(w: torch.Tensor, kw: dict) -> torch.Tensor:
    """A layer's integer weight as that of a stride-1, padding-1 3×3 convolution (C_out', C_in, 3, 3)."""
    if kw["transposed"]:
        assert kw["stride"] == 2 and w.shape[-1] == 5 and kw["pad"] == 2, kw
        return polyphase(w.long())
    assert kw["stride"] == 1 and w.shape[-1] == 3 and kw["pad"] == 1, kw
    return w.long()


def _weight_planes(w: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """w (int64) as Σ 2**shift · plane, planes int8 in [-64, 63], least significant first."""
    planes, shift = [], 0
    while True:
        high = torch.div(w + 64, 128, rounding_mode="floor")  # w - 128·high in [-64, 63]
        planes.append((shift, (w - 128 * high).to(torch.int8)))
        if not high.any():
            return planes
        w, shift = high, shift + _WEIGHT_PLANE


def _zeros(signed: bool) -> tuple[int, int]:
    """Zero points of the (high, low) input planes: the signed first layer's inputs are z + 2**15."""
    return (128 if signed else 0), 0


def _split(x: torch.Tensor, signed: bool) -> list[torch.Tensor]:
    """Integers x (float64, (B, h, w, C); signed: |x| < 2**15, else 0 ≤ x < 2**16) as the (high, low)
    uint8 planes the convolutions take: (B, C, h, w) views of channels-last memory."""
    u = (x + 2**15 if signed else x).to(torch.int32)
    return [(u >> _PLANE).to(torch.uint8).permute(0, 3, 1, 2), (u & 255).to(torch.uint8).permute(0, 3, 1, 2)]


def _fits_int8(params: list[tuple[torch.Tensor, torch.Tensor, dict]]) -> bool:
    """Whether every plane pair's sums stay below 2**24 (fp32-exact) for any input, and the
    combined sums below 2**53 (float64-exact)."""
    for w, b, kw in params:
        k = _as_convolution(w, kw)
        for _, plane in _weight_planes(k):  # every input plane's values, less its zero point, within ±255
            if plane.abs().long().flatten(1).sum(1).max().item() * 255 >= EXACT:
                return False
        if k.abs().flatten(1).sum(1).max().item() * 2**16 + b.abs().max().item() * 2**ACT_BITS >= 2**53:
            return False
    return True
