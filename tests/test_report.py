"""`tng report` and `tng info` on a small archive made by `tng compress` (local Ray, real Parquet).

Figures are checked against a recomputation from the Parquet rows with pyarrow; the HTML is loaded
in headless Chromium, which must find every section and display every picture.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tng.jobs.cli import main

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


def test_rd_sample_is_spread_and_reproducible():
    import pandas as pd

    from tng.jobs.report import sample_rows

    df = pd.DataFrame({"key": [f"k{i:03d}" for i in range(100)]})
    a, b = sample_rows(df, 10, seed=3), sample_rows(df, 10, seed=3)
    assert list(a["key"]) == list(b["key"]) != list(sample_rows(df, 10, seed=4)["key"])
    idx = [int(k[1:]) for k in a["key"]]
    assert [i // 10 for i in idx] == list(range(10))  # one per tenth of the archive


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
    for k in ("keys", "ok", "errors", "bytes_in", "bytes_out", "mean_psnr"):
        assert s["headline"][k] == report[1]["headline"][k], k
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
