"""Exact integer convolutions on oneDNN's int8 kernels, and the polyphase form that turns a stride-2
transposed convolution into an ordinary one they can run.

oneDNN's int8 convolution (u8 activations with a zero point, s8 weights) sums its products in int32
with AVX-512 VNNI, AVX-VNNI or AMX (`vpdpbusd`, tile multiplies): exactly, in any order. It returns
the sums as fp32, exact while they stay below 2**24, which callers prove from their weights at load.
Without VNNI it multiplies in int16 with saturation, so callers use it only where `has_vnni()`.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import torch

EXACT = 2**24  # fp32 holds every integer below this: the bound on every sum these kernels return

# (tap of the 5×5 kernel) for each output phase and input offset d in {-1, 0, 1}: output row
# 2i + p takes input row i + d through kernel row 2 − 2d + p (stride 2, padding 2, output padding 1).
_TAPS = {0: {-1: 4, 0: 2, 1: 0}, 1: {0: 3, 1: 1}}


def polyphase(w: torch.Tensor) -> torch.Tensor:
    """A ConvTranspose2d(k=5, s=2, p=2, output_padding=1) weight (C_in, C_out, 5, 5) as the weight
    (4·C_out, C_in, 3, 3) of a padding-1 convolution giving the four output phases, phase-major."""
    cin, cout = w.shape[:2]
    rows = []
    for py in range(2):
        for px in range(2):
            k = w.new_zeros(cout, cin, 3, 3)
            for dy, a in _TAPS[py].items():
                for dx, b in _TAPS[px].items():
                    k[:, :, dy + 1, dx + 1] = w[:, :, a, b].t()
            rows.append(k)
    return torch.cat(rows)


def interleave(x: torch.Tensor, c: int) -> torch.Tensor:
    """Phase-major (B, 4·C, H, W) -> (B, C, 2H, 2W)."""
    b, _, h, w = x.shape
    return x.view(b, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, c, 2 * h, 2 * w)


def interleave_nhwc(x: torch.Tensor, c: int) -> torch.Tensor:
    """The same in channels-last form: (B, H, W, 4·C) or (B, H, W, 4, C), phase-major -> (B, 2H, 2W, C)."""
    b, h, w = x.shape[:3]
    return x.reshape(b, h, w, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c)


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) that leave out VNNI, or keep only AVX-VNNI:
# under them oneDNN's int8 kernels fall back to int16 products that saturate, whatever the CPU has.
_CAPS_WITHOUT_VNNI = {"SSE41", "AVX", "AVX2", "AVX512_CORE"}
_CAPS_AVX2_VNNI = {"AVX2_VNNI", "AVX2_VNNI_2"}


def has_vnni() -> bool:
    """Whether oneDNN sums int8 products here without int16 saturation (AVX-512 VNNI or AVX-VNNI, not
    capped away by ONEDNN_MAX_CPU_ISA), and torch has oneDNN's int8 convolution: then the int8
    synthesis and the hyper-synthesis use it. Otherwise their float kernels, exact everywhere."""
    if not hasattr(torch.ops.onednn, "qconv_pointwise"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if cap in _CAPS_WITHOUT_VNNI:
        return False
    if cap in _CAPS_AVX2_VNNI:
        return "avx_vnni" in flags
    return "avx512_vnni" in flags or "avx_vnni" in flags


def packed_conv(w: torch.Tensor, zero: int, pad: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function x -> the exact integer sums (fp32) of the convolution of uint8 x (N, C, H, W; any
    memory format) with int8 weights w (C_out, C, k, k), stride 1, where x's values mean x − zero
    (the padding too)."""
    ones = torch.ones(w.shape[0])
    packed = torch.ops.onednn.qconv_prepack(w, ones, 1.0, zero, [1, 1], [pad, pad], [1, 1], 1, None)
    zps = torch.zeros(w.shape[0], dtype=torch.int64)

    def conv(x: torch.Tensor) -> torch.Tensor:
        # Scales of 1 and no bias: the fp32 output is the int32 sum itself.
        return torch.ops.onednn.qconv_pointwise(x, 1.0, zero, packed, ones, zps, None, [1, 1], [pad, pad], [1, 1],
                                                1, 1.0, 0, torch.float32, "none", [], "")
    return conv
