"""Figures for reports and benchmarks (matplotlib, Agg backend, PNG bytes).

Each function returns the PNG as bytes, so a caller can both embed it in HTML and write it beside.
"""
from __future__ import annotations

import bisect
import io
import math
from itertools import accumulate

from tng.codec.metrics import msssim_db
from tng.evaluation.curves import BD_WINDOW

PLOT_MAX_BPP = 2.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return buf.getvalue()


def rd_plot(curves: dict[str, list[dict]], title: str) -> bytes:
    """Mean RD curves of each codec: PSNR and MS-SSIM (dB) against bpp, the BD-rate window shaded."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    metrics = [("PSNR, RGB (dB)", lambda p: p["psnr"]),
               ("MS-SSIM (dB) = −10·log10(1 − MS-SSIM)", lambda p: msssim_db(p["msssim"]))]
    for ax, (label, value) in zip(axes, metrics):
        visible = []
        for name, pts in curves.items():
            xs, ys = [p["bpp"] for p in pts], [value(p) for p in pts]
            ax.plot(xs, ys, marker="o", ms=4, lw=2 if name == "TNG" else 1.4, label=name, zorder=3 if name == "TNG" else 2)
            visible += [y for x, y in zip(xs, ys) if x <= PLOT_MAX_BPP and math.isfinite(y)]
        ax.axvspan(*BD_WINDOW, color="0.93", zorder=0, label=f"BD-rate window {BD_WINDOW[0]:g}–{BD_WINDOW[1]:g} bpp")
        ax.set_xlim(0, PLOT_MAX_BPP)
        if visible:
            pad = 0.04 * (max(visible) - min(visible) or 1)
            ax.set_ylim(min(visible) - pad, max(visible) + pad)
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.35)
        ax.legend(loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def histogram(values, label: str, title: str, bins: int = 30, weights=None) -> bytes:
    """Distribution of one per-image figure, its mean and median marked. `weights`: how many images
    each value stands for (a binned distribution: `tng report` on large archives), else one each."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.8, 2.9))
    w = [1] * len(values) if weights is None else list(weights)
    pairs = sorted((float(v), int(n)) for v, n in zip(values, w) if v is not None and math.isfinite(v) and n > 0)
    if pairs:
        vals = [v for v, _ in pairs]
        counts = [n for _, n in pairs]
        ends = list(accumulate(counts))
        total = ends[-1]
        ax.hist(vals, bins=min(bins, max(5, total)), weights=None if weights is None else counts,
                color="#4c72b0", edgecolor="white")
        # the median marked is the upper one: the value of the image at index total // 2 in sorted order
        mean, median = sum(v * n for v, n in pairs) / total, vals[bisect.bisect_right(ends, total // 2)]
        ax.axvline(mean, color="#c44e52", lw=1.6, label=f"mean {mean:.3g}")
        ax.axvline(median, color="#55a868", lw=1.6, ls="--", label=f"median {median:.3g}")
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(label)
    ax.set_ylabel("images")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _png(fig)
