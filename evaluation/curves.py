"""From per-image points to what a report shows: mean curves per codec, BD numbers, settings for a target.

Input is the "points" list `evaluation.measure.sweep` gives for each image. Curves are means over
images per (codec, setting); BD-rates (`evaluation.bdrate`) compare mean curves clipped to BD_WINDOW.
"""
from __future__ import annotations

from statistics import mean

import numpy as np

from tng.codec.metrics import msssim_db
from tng.evaluation.bdrate import bd_psnr, bd_rate, clean_curve, clip_rate, overlap_psnr, pchip_eval

BD_WINDOW = (0.1, 1.5)  # bpp


def mean_curves(results: list[dict]) -> dict[str, list[dict]]:
    """Codec -> one point per setting: mean bpp, PSNR (dB) and MS-SSIM over the images.

    `results` holds one dict per image with a "points" list (as `evaluation.measure.sweep` returns).
    """
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in results:
        for p in r["points"]:
            groups.setdefault((p["codec"], p["setting"]), []).append(p)
    curves: dict[str, list[dict]] = {}
    for (name, setting), ps in groups.items():
        curves.setdefault(name, []).append({
            "setting": setting, "bpp": mean(p["bpp"] for p in ps), "psnr": mean(p["psnr"] for p in ps),
            "msssim": mean(p["msssim"] for p in ps), "images": len(ps)})
    for c in curves.values():
        c.sort(key=lambda p: p["bpp"])
    return curves


def bd_pair(anchor: list[dict], test: list[dict]) -> dict:
    """BD numbers of `test` vs `anchor`, curves clipped to BD_WINDOW, with PSNR and with MS-SSIM (dB).

    Each entry: bd_rate (%), bd_quality (dB), range (the quality interval averaged over), the spans
    of both clipped curves, and `error` when there is no shared interval.
    """
    out: dict = {}
    for key, metric in (("psnr", lambda p: p["psnr"]), ("msssim_db", lambda p: msssim_db(p["msssim"]))):
        r = {"bd_rate": None, "bd_quality": None, "range": None, "test_span": None, "anchor_span": None}
        try:
            a = clip_rate([(p["bpp"], metric(p)) for p in anchor], *BD_WINDOW)
            t = clip_rate([(p["bpp"], metric(p)) for p in test], *BD_WINDOW)
            r["test_span"], r["anchor_span"] = _span(t), _span(a)
            r["bd_rate"], r["bd_quality"], r["range"] = bd_rate(a, t), bd_psnr(a, t), overlap_psnr(a, t)
        except ValueError as e:
            r["error"] = str(e)
        out[key] = r
    return out


def bd_results(curves: dict[str, list[dict]], pairs: list[tuple[str, str]]) -> list[dict]:
    """bd_pair for each (test, anchor) whose curves are both present."""
    return [{"test": t, "anchor": a, **bd_pair(curves[a], curves[t])} for t, a in pairs if t in curves and a in curves]


def _span(points: list[tuple[float, float]]) -> list[float] | None:
    return [min(q for _, q in points), max(q for _, q in points)] if points else None


def rate_at_psnr(curve: list[dict], target: float) -> float | None:
    """bpp a mean curve needs for `target` dB (PCHIP of log-rate over PSNR); None outside its range."""
    try:
        rates, psnrs = clean_curve([(p["bpp"], p["psnr"]) for p in curve])
    except ValueError:
        return None
    if len(rates) < 2 or not psnrs[0] <= target <= psnrs[-1]:
        return None
    return float(np.exp(pchip_eval(psnrs, np.log(rates), target)))


def setting_at_psnr(curve: list[dict], target: float) -> float | None:
    """The (interpolated) quality setting whose mean PSNR is `target`; None outside the curve."""
    pts = sorted((p["psnr"], p["setting"]) for p in curve)
    ys = [y for y, _ in pts]
    if len(pts) < 2 or not ys[0] <= target <= ys[-1] or any(b <= a for a, b in zip(ys, ys[1:])):
        return None
    return float(np.interp(target, ys, [s for _, s in pts]))
