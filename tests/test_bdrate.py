"""BD-rate / BD-PSNR (evaluation/bdrate.py): known answers, cleaning, errors, and the classic method."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tng.evaluation.bdrate import bd_psnr, bd_rate, clean_curve, clip_rate, overlap_psnr, pchip_eval, pchip_integral

# A smooth, concave, realistic RD curve: PSNR = 30 + 6·ln(bpp) − 0.4·ln(bpp)², bpp 0.1 … 2.
ANCHOR = [(r, 30 + 6 * math.log(r) - 0.4 * math.log(r) ** 2) for r in (0.1, 0.18, 0.3, 0.5, 0.8, 1.2, 2.0)]


def scaled(points, factor):
    return [(r * factor, p) for r, p in points]


def test_identical_curves_give_zero():
    assert bd_rate(ANCHOR, ANCHOR) == pytest.approx(0, abs=1e-12)
    assert bd_psnr(ANCHOR, ANCHOR) == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("factor, expected", [(0.5, -50.0), (1.2, 20.0), (0.8, -20.0)])
def test_scaled_rates_give_the_scale(factor, expected):
    assert bd_rate(ANCHOR, scaled(ANCHOR, factor)) == pytest.approx(expected, abs=0.1)
    assert bd_rate(ANCHOR, scaled(ANCHOR, factor)) == pytest.approx(expected, abs=1e-9)


def test_psnr_shift_on_log_linear_model():
    # PSNR = a + b·ln(r): a curve Δ dB higher needs exp(−Δ/b) times the rate everywhere, and
    # PCHIP reproduces straight lines exactly, so both deltas are exact.
    a, b, shift = 32.0, 4.5, 1.3
    rates = [0.1, 0.2, 0.35, 0.6, 1.0, 1.6]
    anchor = [(r, a + b * math.log(r)) for r in rates]
    test = [(r, a + shift + b * math.log(r)) for r in rates]
    assert bd_rate(anchor, test) == pytest.approx((math.exp(-shift / b) - 1) * 100, abs=1e-9)
    assert bd_psnr(anchor, test) == pytest.approx(shift, abs=1e-9)
    # and the other way round
    assert bd_rate(test, anchor) == pytest.approx((math.exp(shift / b) - 1) * 100, abs=1e-9)


def test_only_the_overlap_counts():
    # The test curve covers only the upper half of the anchor's PSNR range. Not exact: the test
    # curve's first knot gets an end slope where the anchor has an interior one.
    test = scaled(ANCHOR[3:], 0.5)
    assert bd_rate(ANCHOR, test) == pytest.approx(-50, abs=0.05)
    lo, hi = overlap_psnr(ANCHOR, test)
    assert lo == pytest.approx(ANCHOR[3][1]) and hi == pytest.approx(ANCHOR[-1][1])


def test_order_of_points_is_irrelevant():
    shuffled_a, shuffled_t = ANCHOR[:], scaled(ANCHOR, 0.7)[::-1]
    random.Random(1).shuffle(shuffled_a)
    assert bd_rate(shuffled_a, shuffled_t) == pytest.approx(bd_rate(ANCHOR, scaled(ANCHOR, 0.7)), abs=1e-12)
    assert bd_psnr(shuffled_a, shuffled_t) == pytest.approx(bd_psnr(ANCHOR, scaled(ANCHOR, 0.7)), abs=1e-12)


def test_non_overlapping_curves_raise():
    low = [(0.1, 25.0), (0.2, 27.0), (0.3, 28.0)]
    high = [(1.0, 35.0), (2.0, 38.0)]
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate(low, high)
    with pytest.raises(ValueError, match="do not overlap"):
        bd_psnr(low, high)


def test_too_few_points_raise():
    with pytest.raises(ValueError, match="at least 2"):
        bd_rate([(0.5, 30.0)], ANCHOR)
    with pytest.raises(ValueError, match="at least 2"):  # a second point that is not better is dropped
        bd_rate(ANCHOR, [(0.5, 30.0), (0.6, 29.0)])
    with pytest.raises(ValueError, match="rate > 0"):
        bd_rate(ANCHOR, [(0.0, 20.0), (0.6, 29.0)])
    with pytest.raises(ValueError, match="finite"):
        bd_rate(ANCHOR, [(0.3, 25.0), (8.0, math.inf)])


def test_dominated_and_duplicate_points_are_dropped():
    noisy = ANCHOR + [(0.5, ANCHOR[3][1]), (0.9, ANCHOR[3][1] - 1.0), ANCHOR[2]]
    rates, psnrs = clean_curve(noisy)
    assert list(zip(rates, psnrs)) == ANCHOR
    assert bd_rate(ANCHOR, noisy) == pytest.approx(0, abs=1e-12)


def classic_bd_rate(anchor, test):
    """VCEG-M33 as usually implemented: cubic polyfit of log(rate) over PSNR, integrated exactly."""
    pa, la = np.array([p for _, p in anchor]), np.log([r for r, _ in anchor])
    pt, lt = np.array([p for _, p in test]), np.log([r for r, _ in test])
    lo, hi = max(pa.min(), pt.min()), min(pa.max(), pt.max())
    ia, it = np.polyint(np.polyfit(pa, la, 3)), np.polyint(np.polyfit(pt, lt, 3))
    gap = ((np.polyval(it, hi) - np.polyval(it, lo)) - (np.polyval(ia, hi) - np.polyval(ia, lo))) / (hi - lo)
    return (math.exp(gap) - 1) * 100


def test_agrees_with_classic_polyfit_on_four_points():
    # Four points per curve, as in codec CTCs; the test curve differs in shape, not just by a factor.
    anchor = [(r, 30 + 6 * math.log(r) - 0.4 * math.log(r) ** 2) for r in (0.15, 0.35, 0.7, 1.4)]
    test = [(r, 31 + 6.5 * math.log(r) - 0.3 * math.log(r) ** 2) for r in (0.12, 0.3, 0.6, 1.2)]
    ours, classic = bd_rate(anchor, test), classic_bd_rate(anchor, test)
    assert -30 < ours < -5  # a real difference, so the comparison means something
    assert ours == pytest.approx(classic, abs=0.5)


def test_pchip_is_monotone_exact_on_lines_and_integrates_exactly():
    x = np.array([0.0, 1.0, 1.5, 4.0, 4.2])
    y = np.array([0.0, 0.1, 2.0, 2.1, 5.0])
    fine = np.linspace(0, 4.2, 4001)
    v = pchip_eval(x, y, fine)
    assert np.all(np.diff(v) >= -1e-12)  # monotone data, monotone interpolant
    np.testing.assert_allclose(pchip_eval(x, y, x), y, atol=1e-12)  # passes through the knots
    trapezoid = float(np.sum((v[1:] + v[:-1]) / 2 * np.diff(fine)))
    assert pchip_integral(x, y, 0, 4.2) == pytest.approx(trapezoid, rel=1e-6)
    line = 2 * x + 1
    assert pchip_integral(x, line, 0.5, 3.0) == pytest.approx((3.0**2 + 3.0) - (0.5**2 + 0.5), abs=1e-12)


def test_clip_rate_cuts_at_the_window_edges():
    clipped = clip_rate(ANCHOR, 0.15, 1.0)
    rates = [r for r, _ in clipped]
    assert rates[0] == 0.15 and rates[-1] == 1.0
    assert all(0.15 <= r <= 1.0 for r in rates)
    assert len(clipped) == 2 + sum(0.15 < r < 1.0 for r, _ in ANCHOR)
    # the edge value lies on the curve (PCHIP over log rate), close to the smooth model
    assert clipped[0][1] == pytest.approx(30 + 6 * math.log(0.15) - 0.4 * math.log(0.15) ** 2, abs=0.05)
    # a curve that stops inside the window is not extrapolated
    assert clip_rate(ANCHOR[2:5], 0.1, 1.5) == ANCHOR[2:5]
