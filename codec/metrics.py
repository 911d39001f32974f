"""Image quality metrics on 8-bit RGB: PSNR and MS-SSIM.

MS-SSIM: Wang et al. 2003, 5 scales, Gaussian 11x11 σ=1.5 window ('valid' filtering), K1=0.01,
K2=0.03, 2x2 average-pool downsampling, the standard weights; computed per RGB channel and averaged
(as pytorch_msssim / CompressAI report it). Scales smaller than the window are skipped and the
remaining weights renormalised, so small images still get a value.
"""
from __future__ import annotations

import math

import numpy as np

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 images; exact integer sums, a band of rows at a time (bounded memory)."""
    rows = max(1, (1 << 22) // max(1, a[0].size))
    sq = 0
    for i in range(0, a.shape[0], rows):
        d = a[i : i + rows].astype(np.int64) - b[i : i + rows]
        sq += int((d * d).sum())
    mse = sq / a.size
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


MSSSIM_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])


def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of an (H, W, C) array over H and W (a loop over taps: low memory)."""
    n = len(g)
    h, w = x.shape[0] - n + 1, x.shape[1] - n + 1
    rows = sum(g[k] * x[k : k + h] for k in range(n))
    return sum(g[k] * rows[:, k : k + w] for k in range(n))


def _ssim_and_cs(x: np.ndarray, y: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast–structure term, for (H, W, C) float arrays in [0, 255]."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _blur(x, g), _blur(y, g)
    vx, vy, cxy = _blur(x * x, g) - mx * mx, _blur(y * y, g) - my * my, _blur(x * y, g) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    ssim = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    return ssim.mean(axis=(0, 1)), cs.mean(axis=(0, 1))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two (H, W, 3) uint8 images: per channel, then the mean over channels (see top)."""
    g = _gaussian()
    x, y = a.astype(np.float64), b.astype(np.float64)
    factors = []  # per scale, per channel
    for scale in range(len(MSSSIM_WEIGHTS)):
        if min(x.shape[:2]) < len(g):
            break
        ssim, cs = _ssim_and_cs(x, y, g)
        last = scale == len(MSSSIM_WEIGHTS) - 1 or min(x.shape[:2]) // 2 < len(g)
        factors.append(np.maximum(ssim if last else cs, 0))  # negative terms clipped, as pytorch_msssim
        if last:
            break
        x, y = _downsample(x), _downsample(y)
    if not factors:
        return float("nan")  # smaller than one window
    w = MSSSIM_WEIGHTS[: len(factors)] / MSSSIM_WEIGHTS[: len(factors)].sum()
    per_channel = np.prod([f**wi for f, wi in zip(factors, w)], axis=0)
    return float(per_channel.mean())


def _downsample(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) / 4


def msssim_db(v: float) -> float:
    return -10 * math.log10(1 - v) if v < 1 else float("inf")
