"""Encoder-side refinement: fit each image's latents to the fixed decoder before coding them.

The analysis transform predicts latents in one pass, for all images at once; what it predicts is not
the best the decoder can do for a given image (the "amortisation gap"). Refinement closes part of it
by gradient descent on that image's own rate–distortion loss, λ(q)·255²·MSE + bpp, over the latents
y and the hyper-latents z, with the decoder, the entropy model and the file format unchanged: a
refined file decodes like any other, only smaller at equal quality.

Rounding is relaxed with stochastic Gumbel annealing (Yang, Bamler & Mandt 2020, "Improving
Inference for Neural Image Compression"): each value is drawn towards its floor or its ceiling with
probabilities that sharpen as the temperature falls, so the final rounding costs little. The draws
come from a fixed seed, so an image encodes to the same file every time on one machine.

The step size falls over the steps (constants below); how that schedule was chosen, and what
refinement gains and costs, are in docs/training-log.md and BENCHMARKS.md. The synthesis runs
channels-last, and in bf16 where the hardware computes it natively (AVX-512 BF16 CPUs, GPUs): each
step costs a pass of it and its gradient, and bf16 gradients steer the latents as well as fp32 ones
(measured: docs/training-log.md); the rate terms stay in fp32.
"""
from __future__ import annotations

import torch

from .loss import rd_loss
from .model import TNGModel

# Adam's step size, in quantisation bins of the gained latents, falls exponentially from start to end
# over the steps: large early moves, then settling; the hyper-latents z take Z_LR_FACTOR times as large
# steps (each one steers the entropy parameters of a 4×4 patch of latents in every channel).
LR_START, LR_END = 0.02, 0.002
Z_LR_FACTOR = 3.0
ADAM_BETAS = (0.9, 0.99)
# Annealing temperature, exponential from start to end over the steps. Starting cooler than Yang et
# al.'s 0.5 keeps the relaxed rounding close to the rounding that is coded, so that a few tens of
# steps already pay (choice and measurements: docs/training-log.md).
TAU_START, TAU_END = 0.2, 0.02


def _annealed_round(v: torch.Tensor, tau: float, gen: torch.Generator) -> torch.Tensor:
    """Soft rounding: floor(v) + a relaxed Bernoulli draw of the step up, sharper as tau -> 0."""
    fl = torch.floor(v).detach()
    d = v - fl
    eps = 1e-6
    # Logits as in Yang et al.: -atanh(distance)/tau for each of floor and ceiling.
    up = -torch.atanh(torch.clamp(1 - d, eps, 1 - eps)) / tau
    down = -torch.atanh(torch.clamp(d, eps, 1 - eps)) / tau
    # One draw per position of a tile, shared by the tiles of a batch: the draws a tile gets do not
    # depend on what it was batched with.
    u = torch.rand(v.shape[1:] + (2,), generator=gen, device=v.device).clamp_(eps, 1 - eps)
    g = -torch.log(-torch.log(u))
    w = torch.softmax(torch.stack([down + g[..., 0], up + g[..., 1]], -1), -1)
    return fl + w[..., 1]


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 convolutions run natively on this device: AVX-512 BF16 or AMX CPUs, GPUs with bf16
    units. Elsewhere autocast to bf16 emulates it, many times slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@torch.enable_grad()
def refine_latents(net: TNGModel, x: torch.Tensor, valid: torch.Tensor, y: torch.Tensor, gain: torch.Tensor,
                   inv_gain: torch.Tensor, lam: float, steps: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Refined (gained latents, hyper-latents) for tiles x (n, 3, H, W) in [0, 1].

    valid (n, 1, H, W) is 1 on the image's own pixels and 0 on the padding, which costs rate only.
    y: the analysis' latents (n, M, h, w); lam: λ(q). Returns float tensors to round and code.
    """
    yg = (y * gain).detach().clone().requires_grad_(True)
    z = net.h_a(yg).float().detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [yg], "factor": 1.0}, {"params": [z], "factor": Z_LR_FACTOR}],
                           lr=LR_START, betas=ADAM_BETAS)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    bf16 = fast_bf16(x.device)
    for step in range(steps):
        progress = step / max(steps - 1, 1)
        tau = TAU_START * (TAU_END / TAU_START) ** progress
        for group in opt.param_groups:
            group["lr"] = LR_START * (LR_END / LR_START) ** progress * group["factor"]
        z_hat = net.z_prior.clip(_annealed_round(z, tau, gen))
        r_hat, mean, scale = net.latent_residuals(yg, z_hat, lambda v: _annealed_round(v, tau, gen))
        bits_y, bits_z = net.bits(r_hat, scale, z_hat)
        # The float synthesis the decoder's network was made from: int8 models' straight-through copy
        # fits the latents as well at several times the cost per step (training log).
        # channels-last (the weights are, since load): oneDNN's fastest layout
        y_hat = (net.y_prior.dequantize(r_hat, mean) * inv_gain).contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            x_hat = net.g_s(y_hat).float().clamp(0, 1)
        # Summed, not averaged, over tiles: each tile's gradient is its own loss's, whatever the batch.
        loss = rd_loss(x_hat, x, bits_y + bits_z, lam, valid).loss.sum()
        # Gradients of the latents only: the (shared) network's weights get none and stay untouched.
        yg.grad, z.grad = torch.autograd.grad(loss, [yg, z])
        opt.step()
    return yg.detach(), z.detach()
