"""`tng report` and `tng info` on a small archive made by `tng compress` (local Ray, real Parquet).

Figures are checked against a recomputation from the Parquet rows with pyarrow; the HTML is loaded
in headless Chromium, which must find every section and display every picture.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tng.codec.images import DEFAULT_MAX_PIXELS
from tng.codec.registry import DEFAULT_MODEL_ID
from tng.jobs.cli import main
from tng.jobs.report import RESOLUTIONS, reason_class

SECTIONS = ["summary", "codecs", "distributions", "formats", "resolutions", "worst", "errors", "rd-study"]
ODD_KEY = "<i>odd</i> & name.png"  # must be escaped in HTML


def _photo(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _save(path: Path, im: Image.Image, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, ray_local):
    """SRC with photos of several formats and sizes, an odd key, a starved JPEG, broken and empty files;
    compressed, then a.png changed and compressed again incrementally (two rows for that key)."""
    src = tmp_path_factory.mktemp("src")
    _save(src / "a.png", Image.fromarray(_photo(96, 64, 0)))
    _save(src / "dir" / "b.jpg", Image.fromarray(_photo(80, 72, 1)), quality=90)
    _save(src / "g.png", Image.fromarray(_photo(64, 64, 2)[..., 0]))
    _save(src / ODD_KEY, Image.fromarray(_photo(70, 50, 3)))
    _save(src / "big.png", Image.fromarray(_photo(640, 448, 4)))
    noise = np.random.default_rng(5).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    _save(src / "starved.jpg", Image.fromarray(noise), quality=1)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "empty.png").write_bytes(b"")
    arch = tmp_path_factory.mktemp("archive")
    assert main(["compress", str(src), str(arch), "--workers", "1"]) == 0
    _save(src / "a.png", Image.fromarray(_photo(96, 64, 10)))
    assert main(["compress", str(src), str(arch), "--workers", "1", "--incremental", "--quality", "6"]) == 0
    return src, arch


def _current(arch: Path) -> pa.Table:
    """Independent of pipeline.archive: latest encoded_at per key, ok winning a tie."""
    t = pa.concat_tables(pq.read_table(p) for p in sorted((arch / "shards").glob("*.parquet")))
    best: dict[str, tuple] = {}
    for i, (k, at, st) in enumerate(zip(t["key"].to_pylist(), t["encoded_at"].to_pylist(), t["status"].to_pylist())):
        rank = (at, st == "ok")
        if k not in best or rank > best[k][0]:
            best[k] = (rank, i)
    return t.take(pa.array(sorted(i for _, i in best.values())))


@pytest.fixture(scope="module")
def report(archive, tmp_path_factory):
    src, arch = archive
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(arch), str(out), "--source", str(src), "--sample", "3", "--workers", "1",
                 "--baselines", "jpeg,webp,jxl", "--worst", "3"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_headline_matches_the_parquet_rows(archive, report):
    _, arch = archive
    _, s = report
    cur = _current(arch)
    assert s["storage"]["rows_in_shards"] == 8 + 3  # the rerun did a.png again and retried both errors
    ok = cur.filter(pc.equal(cur["status"], "ok"))
    tng = ok.filter(pc.equal(ok["codec"], "tng"))
    h = s["headline"]
    assert h["keys"] == cur.num_rows == 8
    assert h["ok"] == ok.num_rows == 6 and h["errors"] == 2
    # both readable JPEGs recompressed losslessly (--jpeg lossless, the default), the rest coded by TNG
    assert h["kept_as_source"] == 0 and h["jpeg_lossless"] == 2 and h["coded_by_tng"] == tng.num_rows == 4
    assert h["bytes_in"] == pc.sum(ok["source_bytes"]).as_py()
    assert h["bytes_out"] == pc.sum(ok["bitstream_bytes"]).as_py()
    assert h["savings"] == pytest.approx(1 - h["bytes_out"] / h["bytes_in"])
    assert h["mean_bpp"] == pytest.approx(pc.mean(tng["bpp"]).as_py())
    assert h["mean_psnr"] == pytest.approx(pc.mean(tng["psnr"]).as_py())
    # the current row of the changed key is the second run's (quality 6)
    assert h["qualities"] == {"4": 3, "6": 1}
    psnrs = sorted(tng["psnr"].to_pylist())
    d = s["distributions"]["psnr"]
    assert (d["min"], d["max"], d["count"]) == (pytest.approx(psnrs[0]), pytest.approx(psnrs[-1]), 4)
    assert d["median"] == pytest.approx(float(np.median(psnrs)))


def test_breakdowns_errors_and_worst(archive, report):
    _, arch = archive
    _, s = report
    cur = _current(arch).to_pandas()
    ok = cur[cur["status"] == "ok"]
    by_format = {g["format"]: g for g in s["by_format"]}
    assert set(by_format) == set(ok["source_format"])
    for fmt, g in by_format.items():
        part = ok[ok["source_format"] == fmt]
        assert (g["images"], g["bytes_in"], g["bytes_out"]) == (len(part), part["source_bytes"].sum(),
                                                                  part["bitstream_bytes"].sum())
    assert sum(g["images"] for g in s["by_resolution"]) == len(ok)
    assert {g["resolution"] for g in s["by_resolution"]} == {"< 0.25 MP", "0.25–1 MP"}
    errors = {k for e in s["errors"] for k in e["keys"]}
    assert errors == {"broken.jpg", "empty.png"} and sum(e["count"] for e in s["errors"]) == 2
    tng = ok[ok["codec"] == "tng"].sort_values("psnr")
    assert [w["key"] for w in s["worst"]] == list(tng["key"][:3])
    for w in s["worst"]:
        assert set(w["pictures"]) == {"original", "decoded", "original-crop", "decoded-crop"}, w


def test_rd_study(report):
    from tng.evaluation.curves import bd_results
    from tng.evaluation.measure import JXL_DISTANCES

    out, s = report
    st = s["rd_study"]
    assert len(st["images"]) == 3 and not st["failed"]
    assert set(st["curves"]) == {"TNG", "JPEG", "WebP", "JPEG XL"}
    assert [p["setting"] for p in st["curves"]["JPEG XL"]] == sorted(JXL_DISTANCES, reverse=True)  # by rate
    assert [p["setting"] for p in sorted(st["curves"]["TNG"], key=lambda p: p["setting"])] == list(range(1, 9))
    assert st["bd"] == json.loads(json.dumps(bd_results(st["curves"], [("TNG", "JPEG"), ("TNG", "WebP"),
                                                                       ("TNG", "JPEG XL")])))
    # And against an independent estimate: log-rates interpolated linearly (not PCHIP) over the PSNR
    # interval the report says it averaged over; they differ by the interpolation only (a few points at
    # most on these sparse curves), while a swapped anchor, a wrong sign or a wrong log would be far off.
    for r in st["bd"]:
        lo, hi = r["psnr"]["range"]
        grid = np.linspace(lo, hi, 2001)

        def log_rate(curve):
            pts = sorted((p["psnr"], np.log(p["bpp"])) for p in curve)
            return np.interp(grid, [q for q, _ in pts], [lr for _, lr in pts])

        gap = np.mean(log_rate(st["curves"]["TNG"]) - log_rate(st["curves"][r["anchor"]]))
        assert r["psnr"]["bd_rate"] == pytest.approx((np.exp(gap) - 1) * 100, abs=3), r["anchor"]
    assert [r["anchor"] for r in st["bd"]] == ["JPEG", "WebP", "JPEG XL"]
    assert st["targets"] and all(t["quality"] is None or 1 <= t["quality"] <= 8 for t in st["targets"])
    assert any(t["tng_bpp"] for t in st["targets"])
    assert (out / "plots" / "rd.png").stat().st_size > 1000


def test_rd_sweep_in_process_gives_ray_s_points(archive):
    """A small RD study runs in the command's process (pipeline/sweep.py); its points are those the Ray
    actors measure (Ray is up in this module, so sweep_sources runs there)."""
    from tng.pipeline.sweep import _sweep_here, sweep_sources

    src, _ = archive
    items = [{"key": k, "uri": str(src / k)} for k in ("a.png", "g.png", "missing.png")]
    kwargs = {"model_id": DEFAULT_MODEL_ID, "baselines": ("JPEG",), "storage_options": {},
              "max_pixels": DEFAULT_MAX_PIXELS, "effort": 0}
    untimed = lambda rows: [dict(r, points=[{k: v for k, v in p.items() if not k.endswith("_s")}  # noqa: E731
                                            for p in r["points"]]) for r in rows]
    on_ray = untimed(sweep_sources(items, workers=1, address=None, **kwargs))
    here = untimed(dict(r, points=json.loads(r["points"])) for r in _sweep_here(items, kwargs))
    assert here == on_ray
    assert len(here[0]["points"]) > 8 and "FileNotFoundError" in here[2]["error"]


def test_rd_sample_is_spread_and_reproducible():
    from tng.jobs.report import stratified

    keys = [f"k{i:03d}" for i in range(100)]
    a, b = stratified(iter(keys), 100, 10, seed=3), stratified(iter(keys), 100, 10, seed=3)
    assert a == b != stratified(iter(keys), 100, 10, seed=4)
    assert [int(k[1:]) // 10 for k in a] == list(range(10))  # one per tenth of the archive
    assert stratified(iter(keys), 100, 100, seed=3) == keys


def test_bd_rates_on_known_curves():
    """The report's BD path (evaluation.curves.bd_results) on curves whose answer is known in closed form."""
    from tng.evaluation.curves import bd_results

    anchor = [{"setting": q, "bpp": r, "psnr": 30 + 4 * np.log(r / 0.3), "msssim": 1 - 0.05 * (0.3 / r)}
              for q, r in enumerate([0.15, 0.3, 0.5, 0.8, 1.2], 1)]
    scaled = [dict(p, bpp=p["bpp"] * 0.8) for p in anchor]  # same quality at 80% of the rate
    shifted = [dict(p, psnr=p["psnr"] + 1.0) for p in anchor]  # +1 dB on PSNR = a + 4 ln(rate)
    res = {r["test"]: r for r in bd_results({"A": anchor, "S": scaled, "P": shifted}, [("S", "A"), ("P", "A")])}
    assert res["S"]["psnr"]["bd_rate"] == pytest.approx(-20.0, abs=1e-6)
    assert res["S"]["msssim_db"]["bd_rate"] == pytest.approx(-20.0, abs=1e-6)
    assert res["P"]["psnr"]["bd_rate"] == pytest.approx((np.exp(-1 / 4) - 1) * 100, abs=1e-6)
    assert res["P"]["psnr"]["bd_quality"] == pytest.approx(1.0, abs=1e-6)


def test_report_files_and_escaping(report):
    out, s = report
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    for title in ("By source format", "By resolution", "Worst images by PSNR", "Errors by reason",
                  "Rate–distortion study"):
        assert f"## {title}" in md and title in html
    assert ODD_KEY not in html and "&lt;i&gt;odd&lt;/i&gt; &amp; name.png" in html
    assert 'src="plots/' not in html and html.count("data:image/png;base64,") >= 3 + 4 * 3 + 1
    for name in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / name).is_file(), name


def test_info(archive, report, capsys):
    _, arch = archive
    _, s = report
    assert main(["info", str(arch)]) == 0
    text = capsys.readouterr().out
    h = s["headline"]
    assert f"{h['keys']} images: {h['ok']} ok" in text and f"{h['errors']} errors" in text
    assert f"savings {100 * h['savings']:.1f}%" in text and f"mean PSNR {h['mean_psnr']:.2f} dB" in text


def test_broken_and_empty_archives_give_one_line(tmp_path, archive, capsys):
    _, arch = archive
    (tmp_path / "empty" / "shards").mkdir(parents=True)
    for path, expected in [(tmp_path / "missing", "has no shards/ folder"), (tmp_path / "empty", "is empty")]:
        for argv in (["info", str(path)], ["report", str(path), str(tmp_path / "out")]):
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert expected in err and "Traceback" not in err and err.count("\n") == 1
    broken = tmp_path / "broken"
    shutil.copytree(arch, broken)
    first = sorted((broken / "shards").glob("*.parquet"))[0]
    first.write_bytes(first.read_bytes()[:100])  # truncated shard: reported, the others still count
    assert main(["info", str(broken)]) == 0
    assert "warning: unreadable shard" in capsys.readouterr().out
    for p in (broken / "shards").glob("*.parquet"):
        p.write_bytes(b"PAR1 garbage")
    assert main(["info", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "no shard of" in err and "is readable" in err and "Traceback" not in err


def test_report_of_an_archive_on_s3(archive, report, tmp_path, capsys):
    """The same archive in a bucket (moto on loopback): the same figures, the RD study reading s3:// sources."""
    import s3fs

    src, arch = archive
    fs = s3fs.S3FileSystem()
    fs.mkdir("reports")
    fs.put(str(arch), "reports/arch", recursive=True)
    fs.put(str(src), "reports/src", recursive=True)
    assert main(["info", "s3://reports/arch"]) == 0
    assert f"{report[1]['headline']['keys']} images" in capsys.readouterr().out
    out = tmp_path / "r"
    assert main(["report", "s3://reports/arch", str(out), "--source", "s3://reports/src", "--sample", "1",
                 "--workers", "1", "--baselines", "jpeg", "--worst", "1", "--effort", "2"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["rd_study"]["effort"] == 2 and "effort 2" in (out / "report.md").read_text()
    for k in ("keys", "ok", "errors", "bytes_in", "bytes_out"):
        assert s["headline"][k] == report[1]["headline"][k], k
    # A mean of floats: its last bits still vary from run to run of the same archive (see the closing
    # note of 2026-12-06), so it is compared to 12 digits.
    assert s["headline"]["mean_psnr"] == pytest.approx(report[1]["headline"]["mean_psnr"], rel=1e-12)
    assert len(s["rd_study"]["images"]) == 1 and s["rd_study"]["bd"][0]["anchor"] == "JPEG"
    assert s["worst"][0]["original"].startswith("s3://reports/src/")
    assert set(s["worst"][0]["pictures"]) == {"original", "decoded", "original-crop", "decoded-crop"}


def test_report_of_an_archive_of_errors_only(tmp_path, ray_local, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"nope")
    assert main(["compress", str(src), str(tmp_path / "arch"), "--workers", "1"]) == 0
    assert main(["report", str(tmp_path / "arch"), str(tmp_path / "out"), "--source", str(src)]) == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["headline"]["errors"] == 1 and s["headline"]["ok"] == 0 and s["worst"] == []
    assert s["rd_study"]["error"] and "Errors by reason" in (tmp_path / "out" / "report.html").read_text()


# ---------------------------------------------------------------------------------------------- aggregates
# The report never holds the rows (jobs/report.py: a Tally over the partitions of the current rows);
# its figures must equal the plain computation over every current row, made here with pandas.

def _pandas_figures(cur: pd.DataFrame, worst: int) -> dict:
    """What the report states, computed from the current rows in one DataFrame."""
    from tng.codec.formats import LOSSY

    ok = cur[cur["status"] == "ok"]
    lossy = ok[ok["codec"].isin(LOSSY)]
    tng = ok[ok["codec"] == "tng"]

    def mean(s):
        return float(s.mean()) if s.notna().any() else None

    def group(part):
        lp = part[part["codec"].isin(LOSSY)]
        b_in, b_out = int(part["source_bytes"].sum()), int(part["bitstream_bytes"].sum())
        return {"images": len(part), "kept_as_source": int((part["codec"] == "source").sum()),
                "jpeg_lossless": int((part["codec"] == "jpeg-jxl").sum()), "bytes_in": b_in, "bytes_out": b_out,
                "savings": 1 - b_out / b_in if b_in else None, "mean_bpp": mean(lp["bpp"]),
                "mean_psnr": mean(lp["psnr"])}

    def reasons(rows, column):
        kinds = rows[column].fillna("unknown").map(reason_class)
        return sorted(((k, len(p), sorted(p["key"])[:5]) for k, p in rows.groupby(kinds)), key=lambda r: (-r[1], r[0]))

    def stats(s):
        v = s[np.isfinite(s)].to_numpy(float)
        if not len(v):
            return None
        q = np.percentile(v, [5, 25, 50, 75, 95])
        return dict(count=len(v), mean=v.mean(), min=v.min(), p5=q[0], p25=q[1], median=q[2], p75=q[3], p95=q[4],
                    max=v.max())

    mp = ok["width"].astype(float) * ok["height"] / 1e6
    targeted = ok[ok["target_psnr"].notna()]
    choice = {c: {"images_reached": int(targeted[f"bytes_{c}"].notna().sum()),
                  "bytes_needed": int(targeted[f"bytes_{c}"].sum()),
                  "bytes_kept_same_images": int(targeted.loc[targeted[f"bytes_{c}"].notna(), "bitstream_bytes"].sum()),
                  "chosen": int((targeted["codec"] == c).sum())}
              for c in LOSSY if targeted[f"bytes_{c}"].notna().any() or (targeted["codec"] == c).any()}
    times = cur["encoded_at"].dropna()
    return {
        "headline": {**group(ok), "keys": len(cur), "ok": len(ok), "errors": int((cur["status"] != "ok").sum()),
                     "coded_by_tng": len(tng), "mean_ms_ssim": mean(lossy["ms_ssim"]),
                     "megapixels": float(mp.sum()) if len(ok) else 0.0,
                     "models": {str(int(k)): int(v) for k, v in tng["model_id"].value_counts().sort_index().items()},
                     "qualities": {f"{k:g}": int(v)
                                   for k, v in tng["quality"].round(2).value_counts().sort_index().items()}},
        "by_codec": {c: group(p) for c, p in ok.groupby("codec")},
        "by_format": {f: group(p) for f, p in ok.groupby(ok["source_format"].fillna("unknown"))},
        "by_resolution": {label: group(ok[(mp >= lo) & (mp < hi)]) for lo, hi, label in RESOLUTIONS
                          if ((mp >= lo) & (mp < hi)).any()},
        "distributions": {f: stats(lossy[f]) for f in ("bpp", "psnr", "ms_ssim")},
        "worst": list(lossy[lossy["psnr"].notna()].sort_values(["psnr", "key"])["key"][:worst]),
        "errors": reasons(cur[cur["status"] != "ok"], "error"),
        "kept": reasons(ok[(ok["codec"] == "source") & ok["note"].notna()], "note"),
        "codec_choice": {"images": len(targeted), "bytes_kept": int(targeted["bitstream_bytes"].sum()),
                         "codecs": choice} if len(targeted) else None,
        "encoded": [times.min().isoformat(), times.max().isoformat()],
    }


def _same(got, want, where: str = "") -> None:
    """got == want, floats to 1e-9 (the same sums, added in another order), nested, saying where not."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (where, got, want)
        for k in want:
            _same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want)):
            _same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and got is not None:
        assert got == pytest.approx(want, rel=1e-9), where
    else:
        assert got == want, (where, got, want)


def _assert_report_equals_pandas(s: dict, cur: pd.DataFrame, worst: int) -> None:
    want = _pandas_figures(cur, worst)
    _same({k: s["headline"][k] for k in want["headline"]}, want["headline"], "headline")
    for name, label in (("by_codec", "codec"), ("by_format", "format"), ("by_resolution", "resolution")):
        _same({g[label]: {k: g[k] for k in GROUP} for g in s[name]}, want[name], name)
    assert [g["resolution"] for g in s["by_resolution"]] == list(want["by_resolution"])  # in RESOLUTIONS' order
    by_images = sorted(want["by_format"], key=lambda f: -want["by_format"][f]["images"])  # ties: by name
    assert [g["format"] for g in s["by_format"]] == by_images
    _same(s["distributions"], want["distributions"], "distributions")
    assert [w["key"] for w in s["worst"]] == want["worst"]
    for name in ("errors", "kept"):
        assert [(e["kind"], e["count"], e["keys"]) for e in s[name]] == want[name], name
        for e in s[name]:  # the example is the first key's reason
            assert reason_class(e["reason"]) == e["kind"] and e["reason"] == _reason_of(cur, e["keys"][0], name)
    got = s["codec_choice"] and {**s["codec_choice"], "codecs": {c["codec"]: {k: c[k] for k in (
        "images_reached", "bytes_needed", "bytes_kept_same_images", "chosen")} for c in s["codec_choice"]["codecs"]}}
    assert got == want["codec_choice"]
    assert [s["storage"]["first_encoded"], s["storage"]["last_encoded"]] == want["encoded"]


GROUP = ("images", "kept_as_source", "jpeg_lossless", "bytes_in", "bytes_out", "savings", "mean_bpp", "mean_psnr")


def _reason_of(cur: pd.DataFrame, key: str, name: str) -> str:
    reason = cur.set_index("key").loc[key, "error" if name == "errors" else "note"]
    return "unknown" if pd.isna(reason) or not reason else reason


def test_aggregates_equal_pandas_on_the_compressed_archive(archive, report):
    _, arch = archive
    _, s = report
    _assert_report_equals_pandas(s, _current(arch).to_pandas(), worst=3)


def _metadata_archive(root: Path, n: int) -> None:
    """Rows of every form and status, written with pyarrow (no codec): two runs, the second rewriting
    every 7th key one hour later (ok rows turned errors and back), a tie at the same time that the ok
    row must win, missing and NaN figures, unknown formats, targets with and without each codec's bytes."""
    from tng.pipeline.archive import SCHEMA, table_bytes

    rng = np.random.default_rng(1)
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    codecs = ["tng", "tng", "tng", "avif", "jxl", "jpeg-jxl", "source", "jxl-lossless", None]
    reasons = ["cannot identify image file 'a{}.png'", "truncated: {} bytes missing", "image of {} pixels is too large"]

    def row(i: int, run: int) -> dict:
        codec = codecs[(i + run) % len(codecs)]
        w, h = int(rng.choice([40, 700, 2500, 9000])), int(rng.choice([30, 600, 2000]))
        r = {"key": f"d{i % 13}/k{i:05d}", "source_uri": f"/src/k{i}", "source_bytes": int(rng.integers(1, 10**7)),
             "source_sha256": f"{i:064x}", "source_format": [None, "PNG", "JPEG", "TIFF"][i % 4], "width": w,
             "height": h, "codec": codec, "bitstream": b"", "bitstream_bytes": int(rng.integers(1, 10**6)),
             "status": "ok", "run_id": f"run{run}", "encoded_at": t0 + dt.timedelta(hours=run, microseconds=i)}
        if codec is None:
            reason = None if i % 10 == 0 else reasons[i % 3].format(rng.integers(10**6))
            return {**r, "status": "error", "error": reason}
        if codec == "source" and i % 2:
            r["note"] = f"no codec made it smaller than {rng.integers(10**6)} bytes"
        if codec in ("tng", "avif", "jxl"):
            r.update(bpp=float(rng.lognormal(-1, 0.5)), psnr=float("nan") if i % 50 == 0 else float(rng.normal(32, 3)),
                     ms_ssim=None if i % 3 == 0 else float(rng.uniform(0.8, 1)))
            if codec == "tng":
                r.update(quality=float(rng.choice([4.0, 6.0, 5.123])), model_id=int(rng.choice([6, 7])))
            if i % 2:
                r["target_psnr"] = 33.0
                r.update({f"bytes_{c}": int(rng.integers(1, 10**6))
                          for c in ("tng", "avif", "jxl") if rng.random() < 0.7})
        return r

    rows = [row(i, 0) for i in range(n)] + [row(i, 1) for i in range(0, n, 7)]
    tie = dict(rows[3], status="error", error="lost a race", codec=None)  # same time as its ok row: ok wins
    rows.append(tie)
    (root / "shards").mkdir(parents=True)
    for part, start in enumerate(range(0, len(rows), 400)):
        table = pa.Table.from_pylist(rows[start:start + 400], schema=SCHEMA)
        (root / "shards" / f"r-{part:03d}.parquet").write_bytes(table_bytes(table))


def test_aggregates_equal_pandas_over_many_partitions(tmp_path, monkeypatch):
    """A metadata archive of every form, read as many small partitions (the spill and the current-row
    rule per partition), with the distributions past their exact size: figures as pandas has them (the
    quantiles within the sketch's bound), and the RD study's sample as sorting every key would draw it."""
    import tng.jobs.report as report_module

    arch = tmp_path / "arch"
    _metadata_archive(arch, 2000)
    cur = _current(arch).to_pandas()
    assert cur["key"].is_unique and len(cur) == 2000 and (cur["run_id"] == "run1").sum() == 286
    assert cur.set_index("key").loc["d3/k00003", "status"] == "ok"  # the tie
    monkeypatch.setattr(report_module, "PARTITION_KEYS", 150)  # 6 shards -> 40 partitions of ~50 keys
    assert main(["report", str(arch), str(tmp_path / "exact"), "--worst", "5"]) == 0
    _assert_report_equals_pandas(json.loads((tmp_path / "exact" / "summary.json").read_text()), cur, worst=5)

    monkeypatch.setattr(report_module, "EXACT_VALUES", 100)  # ~1,100 lossy values: binned
    assert main(["report", str(arch), str(tmp_path / "binned"), "--worst", "5"]) == 0
    binned = json.loads((tmp_path / "binned" / "summary.json").read_text())["distributions"]
    want = _pandas_figures(cur, 5)["distributions"]
    for name, d in want.items():
        assert binned[name] == pytest.approx(d, rel=report_module.RELATIVE_ACCURACY), name
        assert (binned[name]["count"], binned[name]["min"], binned[name]["max"]) == (d["count"], d["min"], d["max"])
    assert (tmp_path / "binned" / "plots" / "psnr.png").stat().st_size > 1000

    a = report_module.load_archive(str(arch), {}, worst=0, sample=(10, 3))
    ok = sorted(cur.loc[cur["status"] == "ok", "key"])
    rng = random.Random(3)
    edges = np.linspace(0, len(ok), 11).astype(int)
    assert [k for k, _, _ in a.sample] == [ok[rng.randrange(lo, hi)] for lo, hi in zip(edges, edges[1:])]


def test_distribution_quantiles_within_the_bound(monkeypatch):
    import tng.jobs.report as report_module
    from tng.jobs.report import RELATIVE_ACCURACY, Distribution

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(0, 2, 5000), -rng.lognormal(0, 1, 500), np.zeros(7), [np.nan, np.inf]])
    exact, binned = Distribution(), Distribution()
    for block in np.array_split(values, 9):
        exact.add(block)
    monkeypatch.setattr(report_module, "EXACT_VALUES", 1000)  # binned from the second block on
    for block in np.array_split(values, 9):
        binned.add(block)
    finite = values[np.isfinite(values)]
    ps = [0, 1, 5, 25, 50, 75, 95, 99, 100]
    assert exact.percentiles(ps) == list(np.percentile(finite, ps))
    assert binned.percentiles(ps) == pytest.approx(list(np.percentile(finite, ps)), rel=RELATIVE_ACCURACY)
    assert (binned.count, binned.min, binned.max) == (len(finite), finite.min(), finite.max())
    assert binned.total == pytest.approx(finite.sum(), rel=1e-12)
    v, w = binned.weighted_values()
    assert w.sum() == len(finite) and len(v) < len(finite)


def test_reasons_are_bounded(monkeypatch):
    """Errors by kind, a block at a time: per kind the count and the first 5 keys; kinds past the cap
    are counted as one entry, so any number of distinct reasons costs the same memory."""
    import tng.jobs.report as report_module

    monkeypatch.setattr(report_module, "MAX_REASON_KINDS", 3)
    r = report_module.Reasons()
    r.add([f"k{i:02d}" for i in range(20, 0, -1)], [f"disk {i % 2} failed: 'f{i}'" for i in range(20, 0, -1)])
    r.add(["a", "b", "c", "d"], ["timeout after 5 s", None, "x: broken", "y: broken"])
    entries = r.entries()
    assert [(e["kind"], e["count"]) for e in entries] == [("disk N failed: '…'", 20), ("timeout after N s", 1),
                                                         ("unknown", 1), ("other", 2)]
    assert entries[0]["keys"] == ["k01", "k02", "k03", "k04", "k05"] and entries[0]["reason"] == "disk 1 failed: 'f1'"
    assert entries[-1]["keys"] == ["c", "d"] and entries[-1]["reason"].endswith("e.g. x: broken")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.dataset.name);
  const sections = [...document.querySelectorAll('section')].map(s => s.id + ':' + s.getBoundingClientRect().height);
  const wide = document.documentElement.scrollWidth > window.innerWidth + 1;
  document.title = 'CHECK ' + JSON.stringify({images: imgs.length, broken, sections, wide});
});
</script></body>"""


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("TNG_REQUIRE_BROWSER"), reason="no chromium here")
def test_html_in_headless_chromium(report, tmp_path):
    """The page as a browser shows it: every picture decodes, every section has height, nothing overflows."""
    assert CHROMIUM, "chromium is required (TNG_REQUIRE_BROWSER is set): apt-get install chromium"
    out, _ = report
    page = tmp_path / "page.html"
    page.write_text((out / "report.html").read_text().replace("</body>", CHECK))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"]
    dom = subprocess.run([CHROMIUM, *flags, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"<title>CHECK (.*?)</title>", dom)
    assert m, dom[:500]
    got = json.loads(m.group(1).replace("&quot;", '"'))
    assert got["images"] >= 16 and got["broken"] == [] and not got["wide"], got
    heights = dict(s.rsplit(":", 1) for s in got["sections"])
    assert set(heights) == set(SECTIONS) and all(float(h) > 50 for h in heights.values()), got
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    px = np.asarray(Image.open(shot).convert("L"))
    assert px.std() > 10  # text and tables drawn, not a blank page
