"""Bjøntegaard deltas (BD-rate, BD-PSNR) between two rate–distortion curves, numpy only.

The method (Bjøntegaard, VCEG-M33, 2001; piecewise-cubic variant as in VCEG-AL22 / JVET CTC):

1. Each curve is a handful of (rate, PSNR) points, rate in bits per pixel (any unit works, it cancels).
2. For BD-rate, log(rate) is interpolated as a function of PSNR, per curve, by a monotone piecewise
   cubic (PCHIP, Fritsch–Carlson 1980): it passes through every point, never overshoots between
   them, and unlike the original global cubic fit cannot wiggle when points are unevenly spaced.
3. Both interpolants are integrated exactly over the PSNR interval the two curves share; the
   difference of the integrals divided by the interval's length is the mean log-rate difference Δ.
4. BD-rate = (exp(Δ) − 1)·100 %: the average bit-rate change of `test` against `anchor` at equal
   quality. Negative means `test` needs fewer bits. BD-PSNR swaps the axes: PSNR as a function of
   log(rate), averaged over the shared log-rate interval, in dB (positive = `test` is better).

Points are cleaned first: sorted by rate, and a point that does not raise PSNR above every
cheaper point (a dominated or duplicate point, e.g. two encoder settings that give the same file)
is dropped, so each curve is strictly increasing in both rate and PSNR. Rates must be > 0 and all
values finite; fewer than 2 usable points, or curves that do not overlap, raise ValueError.
`clip_rate` restricts a curve to a rate window (see its docstring) before computing deltas.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]  # (rate, psnr)


# ---------------------------------------------------------------------------------------------- PCHIP

def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch–Carlson derivatives at the knots (the same choice as scipy's PchipInterpolator).

    Interior knots: 0 where the secant slopes change sign or one is 0, else their weighted harmonic
    mean. Ends: the one-sided three-point estimate, limited so the end segment stays monotone.
    """
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    if n == 2:
        return np.array([delta[0], delta[0]])
    d = np.zeros(n)
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    same_sign = delta[:-1] * delta[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    d[1:-1] = np.where(same_sign, harmonic, 0.0)
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return d


def _cubic_coefficients(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per segment k, c such that y = c0 + c1·t + c2·t² + c3·t³ with t = x − x[k]. Shape (n−1, 4)."""
    d = pchip_slopes(x, y)
    h = np.diff(x)
    delta = np.diff(y) / h
    c2 = (3 * delta - 2 * d[:-1] - d[1:]) / h
    c3 = (d[:-1] + d[1:] - 2 * delta) / h**2
    return np.stack([y[:-1], d[:-1], c2, c3], axis=1)


def pchip_eval(x: np.ndarray, y: np.ndarray, xq: np.ndarray | float) -> np.ndarray:
    """Value of the PCHIP interpolant through (x, y) (x strictly increasing) at xq within [x0, xn]."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xq = np.asarray(xq, float)
    c = _cubic_coefficients(x, y)
    k = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, len(x) - 2)
    t = xq - x[k]
    return c[k, 0] + t * (c[k, 1] + t * (c[k, 2] + t * c[k, 3]))


def pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Exact integral of the PCHIP interpolant through (x, y) from lo to hi (x0 ≤ lo ≤ hi ≤ xn)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    c = _cubic_coefficients(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b > a:
            total += _antiderivative(c[k], b - x[k]) - _antiderivative(c[k], a - x[k])
    return total


def _antiderivative(c: np.ndarray, t: float) -> float:
    return t * (c[0] + t * (c[1] / 2 + t * (c[2] / 3 + t * c[3] / 4)))


# ---------------------------------------------------------------------------------------------- curves

def clean_curve(points: Sequence[Point], name: str = "curve") -> tuple[np.ndarray, np.ndarray]:
    """(rates, psnrs), both strictly increasing: sorted by rate, dominated/duplicate points dropped."""
    pts = [(float(r), float(p)) for r, p in points]
    for r, p in pts:
        if not (math.isfinite(r) and math.isfinite(p)) or r <= 0:
            raise ValueError(f"{name}: every point needs a finite rate > 0 and a finite PSNR, got ({r}, {p})")
    pts.sort(key=lambda rp: (rp[0], -rp[1]))  # at equal rate the best PSNR comes first and is kept
    kept: list[Point] = []
    for r, p in pts:
        if not kept or (r > kept[-1][0] and p > kept[-1][1]):
            kept.append((r, p))
    if len(kept) < 2:
        raise ValueError(f"{name}: need at least 2 points with increasing rate and PSNR, got {len(kept)} "
                         f"(of {len(pts)} given)")
    rates, psnrs = np.array(kept).T
    return rates, psnrs


def clip_rate(points: Sequence[Point], lo: float, hi: float) -> list[Point]:
    """The curve restricted to rates in [lo, hi].

    Points inside the window are kept. Where the curve crosses a window edge, a point is added at
    that edge, its PSNR read off the PCHIP interpolant of PSNR over log(rate) through all the
    points (the same interpolation BD-PSNR uses). A curve that does not reach an edge simply stops
    where its points stop; none is extrapolated. May return fewer than 2 points.
    """
    rates, psnrs = clean_curve(points)
    logr = np.log(rates)
    out = [(float(r), float(p)) for r, p in zip(rates, psnrs) if lo <= r <= hi]
    for edge in (lo, hi):
        if rates[0] < edge < rates[-1] and edge not in rates:
            out.append((edge, float(pchip_eval(logr, psnrs, math.log(edge)))))
    return sorted(out)


def _mean_gap(x_a, y_a, x_t, y_t, what: str) -> tuple[float, float, float]:
    lo, hi = max(x_a[0], x_t[0]), min(x_a[-1], x_t[-1])
    if not hi > lo:
        raise ValueError(f"the curves do not overlap in {what}: anchor spans [{x_a[0]:.4g}, {x_a[-1]:.4g}], "
                         f"test spans [{x_t[0]:.4g}, {x_t[-1]:.4g}]")
    gap = (pchip_integral(x_t, y_t, lo, hi) - pchip_integral(x_a, y_a, lo, hi)) / (hi - lo)
    return gap, lo, hi


def bd_rate(anchor: Sequence[Point], test: Sequence[Point]) -> float:
    """Average rate change of `test` vs `anchor` at equal PSNR, in percent (negative: test saves bits)."""
    ra, pa = clean_curve(anchor, "anchor")
    rt, pt = clean_curve(test, "test")
    gap, _, _ = _mean_gap(pa, np.log(ra), pt, np.log(rt), "PSNR")
    return (math.exp(gap) - 1) * 100


def bd_psnr(anchor: Sequence[Point], test: Sequence[Point]) -> float:
    """Average PSNR change of `test` vs `anchor` at equal rate, in dB (positive: test is better)."""
    ra, pa = clean_curve(anchor, "anchor")
    rt, pt = clean_curve(test, "test")
    gap, _, _ = _mean_gap(np.log(ra), pa, np.log(rt), pt, "rate")
    return gap


def overlap_psnr(anchor: Sequence[Point], test: Sequence[Point]) -> tuple[float, float]:
    """The PSNR interval over which bd_rate averages (raises ValueError like bd_rate)."""
    ra, pa = clean_curve(anchor, "anchor")
    rt, pt = clean_curve(test, "test")
    _, lo, hi = _mean_gap(pa, np.log(ra), pt, np.log(rt), "PSNR")
    return lo, hi
