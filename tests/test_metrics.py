"""PSNR and MS-SSIM: the quality columns of every report."""
import numpy as np

from tng.codec import ms_ssim, psnr


def test_psnr_known_values():
    a = np.zeros((8, 8, 3), np.uint8)
    assert psnr(a, a) == float("inf")
    assert abs(psnr(a, a + 1) - 48.1308) < 1e-3  # 10·log10(255²/1)


def test_ms_ssim_orders_distortions():
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 255, (24, 24, 3)), 8, 0), 8, 1).astype(np.uint8)
    assert ms_ssim(img, img) == 1.0
    light = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(img + rng.normal(0, 25, img.shape), 0, 255).astype(np.uint8)
    assert 1.0 > ms_ssim(img, light) > ms_ssim(img, heavy) > 0
