"""`tng audit`'s per-key figures: streamed to a JSON Lines file as the rows are checked, every current
`ok` key exactly once, with what the audit found of it; the driver keeps counts only.

The archive is written here with pyarrow: tiny real JPEG XL rows and rows kept as source, their
sources in SRC, keys rewritten by a second run (the current row is what is checked), errors (not
checked), and rows the audit must flag: a wrong hash, a stored PSNR that is not the source's, a
source that is gone.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tng.codec import classic, open_image, psnr
from tng.jobs.cli import main
from tng.pipeline.archive import SCHEMA, table_bytes

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)


def _image(seed: int) -> tuple[bytes, dict]:
    """A 16×16 PNG source and the fields of a lossy JPEG XL row holding it."""
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "PNG")
    png = buf.getvalue()
    jxl = classic.JPEG_XL.encode(px, 2.0)
    decoded = classic.JPEG_XL.decode(jxl)
    return png, {"codec": "jxl", "bitstream": jxl, "bitstream_bytes": len(jxl),
                 "psnr": psnr(open_image(png).rgb, decoded), "decoded_sha256": classic.pixels_sha256(decoded),
                 "source_sha256": hashlib.sha256(png).hexdigest()}


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """(SRC, archive, {key: status the audit must give}) of 60 keys over 4 shards and two runs."""
    root = tmp_path_factory.mktemp("audit")
    src, arch = root / "src", root / "arch"
    rows, expect = [], {}

    def add(key: str, run: int, **fields) -> None:
        rows.append({"key": key, "source_uri": str(src / key), "status": "ok", "run_id": f"run{run}",
                     "encoded_at": T0 + dt.timedelta(hours=run, microseconds=len(rows)), **fields})

    for i in range(60):
        key = f"d{i % 4}/k{i:02d}.png"
        png, row = _image(i)
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(png)
        if i % 10 == 3:  # kept as source: the restored file is the original
            row = {"codec": "source", "bitstream": png, "bitstream_bytes": len(png), "psnr": None,
                   "decoded_sha256": row["source_sha256"], "source_sha256": row["source_sha256"]}
        add(key, 0, **row)
        expect[key] = "ok"
        if i % 10 == 5:  # an error: not checked
            rows[-1].update(status="error", error="truncated file", codec=None, bitstream=None)
            del expect[key]
        if i % 10 == 7:  # rewritten by a second run: that row is checked (its own stored PSNR)
            png2, row2 = _image(100 + i)
            (src / key).write_bytes(png2)
            add(key, 1, **row2)
        if i % 10 == 8:  # a second run failed on it: its current row is an error, not checked
            add(key, 1, status="error", error="cannot identify image file")
            del expect[key]
    rows[1].update(decoded_sha256="0" * 64)  # k01: the stored hash is wrong
    expect["d1/k01.png"] = "hash mismatch"
    rows[2].update(psnr=rows[2]["psnr"] + 0.5)  # k02: a stored PSNR the source does not give
    expect["d2/k02.png"] = "psnr mismatch"
    (src / "d0/k04.png").unlink()  # k04: its source is gone
    expect["d0/k04.png"] = "error"
    (arch / "shards").mkdir(parents=True)
    for part, start in enumerate(range(0, len(rows), 20)):
        table = pa.Table.from_pylist(rows[start:start + 20], schema=SCHEMA)
        (arch / "shards" / f"r-{part:03d}.parquet").write_bytes(table_bytes(table))
    return src, arch, expect


def _current_ok_keys(arch: Path) -> list[str]:
    """Independently of the code under test: latest encoded_at per key, ok winning a tie, ok ones."""
    t = pa.concat_tables(pq.read_table(p) for p in sorted((arch / "shards").glob("*.parquet")))
    best: dict[str, tuple] = {}
    for k, at, status in zip(t["key"].to_pylist(), t["encoded_at"].to_pylist(), t["status"].to_pylist()):
        best[k] = max(best.get(k, (at, status == "ok")), (at, status == "ok"))
    return sorted(k for k, (_, ok) in best.items() if ok)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audit_streams_every_key_once(ray_local, audited, tmp_path, capsys):
    src, arch, expect = audited
    report = tmp_path / "out" / "audit.json"
    assert main(["audit", str(arch), "--source", str(src), "--report", str(report), "--workers", "1"]) == 1
    figures = _lines(tmp_path / "out" / "audit.figures.jsonl")  # by default next to the report
    keys = [f["key"] for f in figures]
    assert sorted(keys) == _current_ok_keys(arch) == sorted(expect)  # every current ok key, once
    assert len(keys) == len(set(keys)) == 48
    assert {f["key"]: f["status"] for f in figures} == expect
    by_key = {f["key"]: f for f in figures}
    assert by_key["d3/k07.png"]["psnr"] == pytest.approx(_image(107)[1]["psnr"])  # the second run's row and source
    assert by_key["d2/k02.png"]["stored_psnr"] == pytest.approx(by_key["d2/k02.png"]["psnr"] + 0.5)
    assert by_key["d3/k03.png"]["psnr"] is None and by_key["d3/k03.png"]["codec"] == "source"
    assert "FileNotFoundError" in by_key["d0/k04.png"]["error"]
    a = json.loads(report.read_text())
    assert a["rows_checked"] == 48 and a["figures"] == str(tmp_path / "out" / "audit.figures.jsonl")
    assert a["mismatches"] == 2 and {p["key"] for p in a["problems"]} == {"d1/k01.png", "d0/k04.png"}
    assert a["psnr_mismatches"] == ["d2/k02.png"] and a["psnr_mismatch_count"] == 1
    lossy = [f for f in figures if f["psnr"] is not None]
    assert a["psnr_vs_source"]["images"] == len(lossy) == 48 - 6 - 1  # less the kept files and the lost source
    assert a["psnr_vs_source"]["mean_recomputed"] == pytest.approx(np.mean([f["psnr"] for f in lossy]))
    assert a["psnr_vs_source"]["max_abs_difference"] == pytest.approx(0.5)
    assert "48 rows checked, 3 problems" in capsys.readouterr().out
    assert not list((tmp_path / "out").glob("*.part"))


def test_audit_figures_without_source(ray_local, audited, tmp_path):
    """--figures names the file; without --source every row still gets its line, with no PSNR."""
    _, arch, expect = audited
    out = tmp_path / "f.jsonl"
    assert main(["audit", str(arch), "--figures", str(out), "--workers", "1"]) == 1  # k01's hash
    figures = _lines(out)
    assert sorted(f["key"] for f in figures) == sorted(expect) and len(figures) == len(expect)
    assert {f["key"] for f in figures if f["status"] != "ok"} == {"d1/k01.png"}
    assert all(f["psnr"] is None for f in figures)
