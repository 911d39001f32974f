"""The synthesis in 8-bit integers: int8 weights, 8-bit activations, int32 sums (weights files with
`synthesis = "int8"`, made by `tng train --stage int8-synthesis`). Exact like `exactsynth.py`, and
built for integer hardware.

Every transposed convolution (5×5, stride 2) is rewritten as its four polyphase 3×3 convolutions,
one output phase each, stacked phase-major into one ordinary convolution to 4·C channels; the phases
are interleaved into the upsampled image afterwards. Per layer, with X the 8-bit activations
(stored as X + 128 in uint8) and K, G int8:

    acc   = conv3x3(X, K)·r + bias               conv3x3(X, K): integers below 2**24 (proven at load)
            conv3x3(X, K) = 128·conv3x3(hi, K) + conv3x3(lo, K)   for 15-bit X = 128·hi + lo
                                                 (WIDE_INPUTS): two exact sums, one rounded fp32 add
    IGDN:  Q   = clamp(round(acc·acc·cq), 0, 255)
           n   = sqrt(conv1x1(Q, G)·gs + β)      conv1x1(Q, G) integer, < 2**24
           X'  = clamp(round(acc·n·k), -127, 127)
    last:  pixels = clamp(round(acc·ws255), 0, 255)

round: to the nearest integer, ties to even (IEEE-754 roundToIntegralTiesToEven). X = round(t·u)
for activations t (in calibrated steps), with u per tile and layer the largest dyadic rational of
SCALE_BITS significant bits that keeps |X| within range, and r = 1/u rounded to fp32 (`_tile_scale`):
each tile is coded at the finest steps its own activations allow, a tile beyond the calibrated range
at coarser ones, never clipped. u and r are computed on the CPU in float64, so they are the same
everywhere, and the decoder only multiplies by them.

The sums are integers below 2**24, so they come out the same from any kernel that sums exactly:
oneDNN's int8 convolution (AVX-512 VNNI, `vpdpbusd`: no int16 saturation), or an fp32
convolution on any CPU or GPU (every partial sum is an integer fp32 holds exactly). The other steps
are single IEEE-754 fp32 operations in a fixed order, correctly rounded everywhere (the square
root through `exactsynth.sqrt_`: torch's CPU sqrt is not correctly rounded on every CPU). So the same
stream gives the same pixels on every machine, thread count and device.

Training sees the same network with straight-through rounding (`QuantSynthesis`), with the
activation steps fixed by calibration; `integer_tensors` turns it into what a weights file stores.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .exactsynth import GAIN_FRAC, inverse_gain, sqrt_
from .int8conv import EXACT, has_vnni, interleave, interleave_nhwc, packed_conv, polyphase
from .intnet import ACT_BITS as MEAN_FRAC, ste_round
from .layers import GDN

ACT_MAX = 127  # activations are integers in [-127, 127], stored + 128 as uint8
# ... or, at the inputs of the cheap layers (WIDE_INPUTS), 15-bit integers in [-16384, 16383], stored
# as two uint8 planes: X = 128·hi + lo, hi in [-128, 127] (+ 128), lo in [0, 127]; the layer runs
# one 8-bit convolution per plane. The 96→96 layer at a quarter of the resolution, which costs most,
# keeps 8 bits. Measured: 8-bit activations cost 0.13 dB at quality 8, mostly at these inputs.
WIDE_MAX = 128 * 128 - 1
# Headroom over the largest activations calibration saw: photos outside its range get clipped, which
# costs dB over whole regions (a saturated val-photo lost 2-6 dB with steps from 16 crops of 256²).
# 15-bit inputs have resolution to spare; 8-bit ones pay for headroom in precision.
WIDE_MARGIN, MARGIN = 4.0, 1.25
WIDE_INPUTS = (0, 1)
W_MAX = 127  # int8 weights
Q_MAX = 255  # squared activations of an IGDN, unsigned 8-bit
LAYERS = 4

class QuantSynthesis(nn.Module):
    """The activation steps of an int8 synthesis (buffers), and its training forward pass.

    step_k (C_in of layer k,): the real value of one activation unit at layer k's input.
    square_k (C,): Q units per squared real value at the input of IGDN k (max² → 255).
    Both are set by `calibrate` and stay fixed in training: the weights learn to live with them.
    """

    def __init__(self, channels: list[int]):
        super().__init__()
        self.limits = [WIDE_MAX if k in WIDE_INPUTS else ACT_MAX for k in range(LAYERS)]
        for k, c in enumerate(channels[:LAYERS]):
            self.register_buffer(f"step_{k}", torch.ones(c))
        for k, c in enumerate(channels[1:LAYERS]):
            self.register_buffer(f"square_{k}", torch.ones(c))

    def step(self, k: int) -> torch.Tensor:
        return getattr(self, f"step_{k}")

    def square(self, k: int) -> torch.Tensor:
        return getattr(self, f"square_{k}")

    @torch.no_grad()
    def calibrate(self, g_s: nn.Sequential, latents: list[torch.Tensor]) -> None:
        """Steps from the largest magnitudes the float synthesis sees on these (inverse-gained) latents."""
        peaks: dict[tuple[str, int], torch.Tensor] = {}
        for y in latents:
            x, deconv, gdn = y.float(), 0, 0
            for layer in g_s:
                if isinstance(layer, nn.ConvTranspose2d):
                    key, deconv = ("in", deconv), deconv + 1
                else:
                    key, gdn = ("gdn", gdn), gdn + 1
                peak = x.abs().amax((0, 2, 3))
                peaks[key] = torch.maximum(peaks.get(key, peak), peak)
                x = layer(x)
        for k in range(LAYERS):
            margin = WIDE_MARGIN if self.limits[k] > ACT_MAX else MARGIN
            self.step(k).copy_(peaks[("in", k)].clamp_min(1e-3) * margin / self.limits[k])
        for k in range(LAYERS - 1):
            self.square(k).copy_(Q_MAX / peaks[("gdn", k)].clamp_min(1e-3) ** 2)

    def forward(self, g_s: nn.Sequential, y: torch.Tensor) -> torch.Tensor:
        """x̂ from inverse-gained latents y, through the int8 network with straight-through rounding."""
        deconvs = [m for m in g_s if isinstance(m, nn.ConvTranspose2d)]
        gdns = [m for m in g_s if isinstance(m, GDN)]
        with torch.autocast(y.device.type, enabled=False):
            x = _fake_quant(y.float() / self.step(0).view(1, -1, 1, 1), self.limits[0])
            for k, layer in enumerate(deconvs):
                c = layer.out_channels
                kern = polyphase(layer.weight * self.step(k).view(-1, 1, 1, 1))
                ws = kern.detach().view(4, c, -1).abs().amax(-1).clamp_min(1e-12) / W_MAX  # (4, C)
                w4 = ws.reshape(-1, 1, 1, 1)
                kern = ste_round(kern / w4) * w4
                bias = (ste_round(layer.bias.view(1, c) / ws) * ws).reshape(-1)
                b, _, h, w = x.shape
                v = F.conv2d(x, kern, bias, 1, 1).view(b, 4, c, h, w)
                if k == LAYERS - 1:
                    return interleave(v.reshape(b, 4 * c, h, w), c)
                u = self.square(k)
                q = torch.clamp(ste_round(v * v * u.view(1, 1, c, 1, 1)), 0, Q_MAX)
                beta, gamma = gdns[k].effective_parameters()
                gp = gamma / u.view(1, c)
                gs = gp.detach().amax(1).clamp_min(1e-30) / W_MAX
                g = ste_round(gp / gs.view(c, 1)) * gs.view(c, 1)
                norm = F.conv2d(q.reshape(b * 4, c, h, w), g.view(c, c, 1, 1)).view(b, 4, c, h, w)
                out = v * torch.sqrt(norm + beta.view(1, 1, c, 1, 1))
                nxt = self.step(k + 1).view(1, 1, c, 1, 1)
                x = _fake_quant(out / nxt, self.limits[k + 1])
                x = interleave(x.reshape(b, 4 * c, h, w), c)
        raise AssertionError("the synthesis ends with a transposed convolution")


def _fake_quant(t: torch.Tensor, limit: int) -> torch.Tensor:
    """Activations t (in steps) as the decoder stores them, with straight-through rounding: per
    sample the scale of `_tile_scale`, then round and clamp to [-127, 127] or [-16384, 16383]."""
    u, r = (v.to(t.device, t.dtype).view(-1, *[1] * (t.dim() - 1))
            for v in _tile_scale(t.detach().abs().amax(dim=tuple(range(1, t.dim()))), limit))
    return torch.clamp(ste_round(t * u), -limit - (limit > ACT_MAX), limit) * r


@torch.no_grad()
def integer_tensors(g_s: nn.Sequential, quant: QuantSynthesis) -> dict[str, torch.Tensor]:
    """What a weights file stores of an int8 synthesis, by name (`Int8Synthesis` reads the same)."""
    deconvs = [m for m in g_s if isinstance(m, nn.ConvTranspose2d)]
    gdns = [m for m in g_s if isinstance(m, GDN)]
    out: dict[str, torch.Tensor] = {"s8.input": (1 / quant.step(0).double()) * 2.0**-(MEAN_FRAC + GAIN_FRAC)}
    for k, layer in enumerate(deconvs):
        c = layer.out_channels
        kern = polyphase(layer.weight.double() * quant.step(k).double().view(-1, 1, 1, 1))
        ws = kern.view(4, c, -1).abs().amax(-1).clamp_min(1e-12) / W_MAX
        out[f"s8.{k}.kernel"] = torch.round(kern / ws.reshape(-1, 1, 1, 1)).to(torch.int8)
        out[f"s8.{k}.bias"] = torch.round(layer.bias.double().view(1, c) / ws).reshape(-1).to(torch.int32)
        out[f"s8.{k}.planes"] = torch.tensor([2 if quant.limits[k] > ACT_MAX else 1], dtype=torch.int32)
        if k == LAYERS - 1:
            out[f"s8.{k}.scale"] = (ws * 255).float()
            continue
        u = quant.square(k).double()
        beta, gamma = gdns[k].effective_parameters(torch.float64)
        gp = gamma / u.view(1, c)
        gs = gp.amax(1).clamp_min(1e-30) / W_MAX
        out[f"s8.{k}.square"] = (ws * ws * u.view(1, c)).float()
        out[f"s8.{k}.gamma"] = torch.round(gp / gs.view(c, 1)).to(torch.int8)
        out[f"s8.{k}.gamma_scale"] = gs.float()
        out[f"s8.{k}.beta"] = beta.float()
        out[f"s8.{k}.scale"] = (ws / quant.step(k + 1).double().view(1, c)).float()
    return out


class Int8Synthesis:
    """The decoder's int8 synthesis and inverse gains, from a weights file's tensors.

    kernel: "onednn" (int8 convolutions; CPUs with VNNI), "float" (fp32 convolutions, exact for these
    integers; any CPU or GPU), or None for the fastest this machine has. Both give the same pixels.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], log_inv_gain: torch.Tensor, kernel: str | None = None):
        self.kernel = kernel or ("onednn" if has_vnni() else "float")
        self.tensors = dict(tensors)  # as stored, for copies with another kernel
        self.input = tensors["s8.input"].double().view(1, -1, 1, 1)
        self.log_inv_gain = log_inv_gain.detach().double().cpu()
        self.layers: list[dict[str, torch.Tensor]] = []
        self.bounds: list[float] = []
        for k in range(LAYERS):
            t = {name.split(".", 2)[2]: v for name, v in tensors.items() if name.startswith(f"s8.{k}.")}
            kern, bias = t["kernel"], t["bias"]
            # one plane: |X| ≤ 127; two: each plane's sum on its own, |hi| ≤ 128, lo ≤ 127
            peak = ACT_MAX + (int(t["planes"]) == 2)
            self.bounds.append(float(kern.double().abs().sum((1, 2, 3)).max()) * peak + float(bias.double().abs().max()))
            if "gamma" in t:
                self.bounds.append(float(t["gamma"].double().abs().sum(1).max()) * Q_MAX)
            self.layers.append(t)
        if max(self.bounds) >= EXACT:
            raise ValueError(f"int8 synthesis sums may reach {max(self.bounds):.3g}, not exact in fp32")
        self._cache: dict[tuple[str, str], tuple] = {}

    @functools.lru_cache(maxsize=64)
    def inverse_gain(self, q_milli: int) -> torch.Tensor:
        return inverse_gain(self.log_inv_gain, q_milli)  # the same gains as exactsynth's

    def _conv(self, k: int, which: str, device: torch.device):
        """A function computing layer k's convolution of uint8 x, exactly, in fp32: "kernel" (of 8-bit
        X + 128), "high" (of the high plane + 128), "low" (of the low plane) or "gamma" (the IGDN's,
        of the squares)."""
        key = (f"{k}.{which}", str(device))
        if key not in self._cache:
            t = self.layers[k]
            w = t["gamma" if which == "gamma" else "kernel"]
            pad, zero = {"kernel": (1, 128), "high": (1, 128), "low": (1, 0), "gamma": (0, 0)}[which]
            if which == "gamma":
                w = w.view(*w.shape, 1, 1)
            if self.kernel == "onednn" and device.type == "cpu":
                fn = packed_conv(w, zero, pad)  # bias added after the tile's scale 1/u (`_run`)
            else:
                fn = functools.partial(_float_conv, w=w.float().to(device), zero=zero, pad=pad)
            self._cache[key] = fn
        return self._cache[key]

    def _param(self, k: int, name: str, device: torch.device) -> torch.Tensor:
        key = (f"{k}.{name}", str(device))
        if key not in self._cache:
            self._cache[key] = self.layers[k][name].float().to(device)
        return self._cache[key]

    @torch.no_grad()
    def __call__(self, residual: torch.Tensor, mean: torch.Tensor, q_milli: int, device: torch.device) -> torch.Tensor:
        """Pixels (B, 3, H, W) uint8 from tiles' integer residuals and means (B, M, h, w)."""
        with exact_fp32_convolutions():
            return self._run(residual, mean, q_milli, device)

    def _run(self, residual: torch.Tensor, mean: torch.Tensor, q_milli: int, device: torch.device) -> torch.Tensor:
        # ŷ/step in float64: (symbols·2**8)·gain is an exact integer; one correctly rounded multiply.
        ig = self.inverse_gain(q_milli).to(device).view(1, -1, 1, 1)
        sym = residual.to(device, torch.float64) * 2**MEAN_FRAC + mean.to(device, torch.float64) * 2**MEAN_FRAC
        t = (sym * ig).mul_(self.input.to(device)).permute(0, 2, 3, 1)
        u, back = _tile_scale(t.abs().amax((1, 2, 3)), self._limit(0))
        x = [p.permute(0, 3, 1, 2) for p in self._planes(t.mul_(u.to(device).view(-1, 1, 1, 1)), 0)]
        for k in range(LAYERS):
            if len(x) == 1:
                acc = self._conv(k, "kernel", device)(x[0])  # (B, 4C, h, w)
            else:  # 128·high + low: one correctly rounded fp32 add of two exact sums
                acc = self._conv(k, "high", device)(x[0]).mul_(128).add_(self._conv(k, "low", device)(x[1]))
            b, c4, h, w = acc.shape
            c = c4 // 4
            a = acc.permute(0, 2, 3, 1).reshape(b, h, w, 4, c)  # a view when the output is channels-last
            a.mul_(back.float().to(device).view(-1, 1, 1, 1, 1)).add_(self._param(k, "bias", device).view(4, c))
            if k == LAYERS - 1:
                px = a.mul_(self._param(k, "scale", device)).round_().clamp_(0, 255).to(torch.uint8)
                return px.view(b, h, w, 2, 2, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, 2 * h, 2 * w)
            # The steps after the convolution, a band of rows at a time: on a CPU the band's values
            # stay in cache through the dozen passes over them. The next layer's input (real/step)
            # replaces the sums in place; its peak sets the tile's scale.
            rows = h if device.type != "cpu" else max(1, BAND_VALUES // (b * w * c4))
            peak = torch.zeros(b, dtype=torch.float32, device=device)
            for r in range(0, h, rows):
                band = a[:, r : r + rows]
                q = (band * band).mul_(self._param(k, "square", device)).round_().clamp_(0, Q_MAX).to(torch.uint8)
                q = q.view(b, band.shape[1], w * 4, c).permute(0, 3, 1, 2)  # the phases as more pixels: one 1×1 convolution
                norm = self._conv(k, "gamma", device)(q).permute(0, 2, 3, 1).reshape(band.shape)
                norm = sqrt_(norm.mul_(self._param(k, "gamma_scale", device)).add_(self._param(k, "beta", device)))
                band.mul_(norm).mul_(self._param(k, "scale", device))
                peak = torch.maximum(peak, band.abs().amax((1, 2, 3, 4)))
            u, back = _tile_scale(peak, self._limit(k + 1))
            u32 = u.float().to(device).view(-1, 1, 1, 1, 1)
            x = [torch.empty((b, 2 * h, 2 * w, c), dtype=torch.uint8, device=device) for _ in range(self._planes_of(k + 1))]
            for r in range(0, h, rows):
                band = a[:, r : r + rows]
                n = band.shape[1]
                out = self._planes(band.mul_(u32), k + 1)
                for plane, o in zip(x, out):  # interleave the phases: (B, n, w, 4, C) -> (B, 2n, 2w, C)
                    plane[:, 2 * r : 2 * (r + n)] = interleave_nhwc(o, c)
            x = [plane.permute(0, 3, 1, 2) for plane in x]  # NCHW views of channels-last memory
        raise AssertionError("unreachable")

    def _planes_of(self, k: int) -> int:
        return int(self.layers[k]["planes"])

    def _limit(self, k: int) -> int:
        return WIDE_MAX if self._planes_of(k) == 2 else ACT_MAX

    def _planes(self, t: torch.Tensor, k: int) -> list[torch.Tensor]:
        """Layer k's input activations t (NHWC, in steps, within its range; overwritten) as stored:
        round(t) in one uint8 plane (X + 128) or two (high + 128, low)."""
        if self._planes_of(k) == 1:
            return [t.round_().clamp_(-ACT_MAX, ACT_MAX).to(torch.int8).view(torch.uint8).bitwise_xor_(128).contiguous()]
        t = t.round_().clamp_(-WIDE_MAX - 1, WIDE_MAX)
        high = torch.floor(t / 128)  # exact: a power of two
        low = t.sub_(high * 128).to(torch.uint8)
        return [high.to(torch.int8).view(torch.uint8).bitwise_xor_(128).contiguous(), low.contiguous()]


SCALE_BITS = 8  # significant bits of a tile's scale u: its steps are at most 2**-7 coarser than its peak allows
SCALE_MAX = 2.0**30  # u of a tile of zeros


def _tile_scale(peak: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile, (u, r) on the CPU in float64: u the largest multiple of 2**(e − SCALE_BITS) at most
    limit/peak, e its binary exponent, so that round(peak·u) ≤ limit: the tile's activations t are
    coded as round(t·u), at the finest steps that fit (a tile beyond the calibrated range: coarser,
    not clipped); r = 1/u (the decoder multiplies by r rounded to fp32). Both exactly representable in
    fp32 and made by correctly rounded float64 operations: the same on every machine and device."""
    ratio = (limit / peak.detach().to("cpu", torch.float64)).clamp_(max=SCALE_MAX)
    mantissa, exponent = torch.frexp(ratio)
    u = torch.ldexp(torch.floor(torch.ldexp(mantissa, torch.tensor(SCALE_BITS))), exponent - SCALE_BITS)
    return u, (1 / u).float().double()


BAND_VALUES = 2**18  # fp32 values per band: 1 MiB, a core's L2


def _float_conv(x: torch.Tensor, *, w: torch.Tensor, zero: int, pad: int) -> torch.Tensor:
    xf = x.float()
    if zero:
        xf = xf.sub_(zero)
    return F.conv2d(xf, w, None, 1, pad)


class exact_fp32_convolutions:
    """fp32 convolutions and matmuls that sum exactly for a while, whatever the caller set: direct
    algorithms only (cuDNN off: its Winograd and FFT algorithms round) and full fp32 (TF32 on CUDA, or
    bf16/TF32 math in oneDNN, would round the sums). Integer sums below 2**24 then come out exact."""

    def __enter__(self):
        self.cudnn = torch.backends.cudnn.flags(enabled=False)
        self.cudnn.__enter__()
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                      torch.backends.mkldnn.conv.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.mkldnn.conv.fp32_precision = torch.backends.mkldnn.matmul.fp32_precision = "ieee"

    def __exit__(self, *exc):
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.mkldnn.conv.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision) = self.saved
        self.cudnn.__exit__(*exc)
