"""`tng compact`: many shards become few, readers see the same current rows before, during and after,
and a compress run writing meanwhile loses nothing. Real archives made by `tng compress`, read back
with plain pyarrow."""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from conftest import SAMPLES
from tng.jobs.cli import main
from test_pipeline_kill import make_images


def _current(archive) -> list[dict]:
    """Each key's current row, every column, sorted by key (pipeline.archive's reading rule)."""
    from tng.pipeline.archive import current_rows, open_fs, read_rows

    return sorted(current_rows(read_rows(*open_fs(str(archive)))).to_pylist(), key=lambda r: r["key"])


@pytest.fixture(scope="module")
def aged(ray_local, tmp_path_factory):
    """An archive after three nights: one row per shard, changed files, an error retried."""
    src = tmp_path_factory.mktemp("src")
    make_images(src / "photos", 6)
    (src / "broken.png").write_bytes(b"not an image")
    arch = tmp_path_factory.mktemp("aged") / "archive"
    common = ["--workers", "1", "--batch-size", "1", "--rows-per-shard", "1", "--incremental"]
    assert main(["compress", str(src), str(arch), *common]) == 0
    shutil.copy(SAMPLES / "chelsea.png", src / "photos" / "img00.jpg")  # changed content, same key
    assert main(["compress", str(src), str(arch), *common]) == 0
    shutil.copy(SAMPLES / "coffee.png", src / "photos" / "img01.png")
    assert main(["compress", str(src), str(arch), *common]) == 0
    return src, arch


def test_compact_keeps_the_current_rows_in_few_shards(aged, tmp_path, capsys):
    src, aged_arch = aged
    arch = tmp_path / "archive"
    shutil.copytree(aged_arch, arch)
    before = _current(arch)
    rows_before = pq.read_table(arch / "shards").num_rows
    shards_before = len(list((arch / "shards").glob("*.parquet")))
    assert shards_before == rows_before > len(before) == 7  # superseded rows and retried errors
    capsys.readouterr()
    assert main(["compact", str(arch), "--rows-per-shard", "3"]) == 0
    assert f"{shards_before} shards -> 3, {rows_before} rows -> 7" in capsys.readouterr().out
    shards = sorted((arch / "shards").glob("*.parquet"))
    assert [pq.read_metadata(s).num_rows for s in shards] == [3, 3, 1]
    table = pq.read_table(arch / "shards")  # plain pyarrow: one row per key now
    assert sorted(table["key"].to_pylist()) == [r["key"] for r in before]
    assert _current(arch) == before  # every column, bitstreams and times included
    (record,) = [json.loads(p.read_text()) for p in (arch / "compactions").glob("*.json")]
    assert (record["rows_before"], record["rows_after"], record["shards_removed"]) == (rows_before, 7, shards_before)
    assert main(["audit", str(arch), "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["compress", str(src), str(arch), "--workers", "1", "--incremental"]) == 0  # nightly as before
    assert "1 processed, 6 unchanged" in capsys.readouterr().out  # only broken.png's error is retried
    assert main(["compact", str(arch)]) == 0
    assert len(pq.read_table(arch / "shards")) == 7


def test_keep_history_merges_shards_only(aged, tmp_path):
    _, aged_arch = aged
    arch = tmp_path / "archive"
    shutil.copytree(aged_arch, arch)
    def rows() -> list[str]:
        return sorted(json.dumps(r, default=str) for r in pq.read_table(arch / "shards").to_pylist())

    every = rows()
    before = _current(arch)
    assert main(["compact", str(arch), "--keep-history"]) == 0
    assert len(list((arch / "shards").glob("*.parquet"))) == 1
    assert rows() == every and _current(arch) == before


def test_readers_and_a_concurrent_writer_lose_nothing(aged, tmp_path):
    """Between writing the new shards and deleting the old ones, readers see the same current rows;
    a shard written by a compress run after the compaction listed the archive is never removed."""
    from tng.pipeline.archive import open_fs
    from tng.pipeline.compaction import compact

    _, aged_arch = aged
    arch = tmp_path / "archive"
    shutil.copytree(aged_arch, arch)
    before = _current(arch)
    late = tmp_path / "late.parquet"
    newest = pq.read_table(arch / "shards").slice(0, 1)
    pq.write_table(newest, late)
    seen = {}

    def meanwhile() -> None:
        seen["current"] = _current(arch)
        shutil.copy(late, arch / "shards" / "99999999T000000Z-late-000000-000.parquet")  # a run writing now

    fs, root = open_fs(str(arch))
    record = compact(fs, root, rows_per_shard=100, before_removal=meanwhile)
    assert seen["current"] == before
    assert (arch / "shards" / "99999999T000000Z-late-000000-000.parquet").exists()
    assert record["shards_removed"] == record["shards_before"] and record["shards_written"] == 1
    assert len(_current(arch)) == len(before)


def test_compress_compact_after(aged, tmp_path, capsys):
    src, _ = aged
    arch = tmp_path / "archive"
    assert main(["compress", str(src), str(arch), "--workers", "1", "--rows-per-shard", "1", "--compact-after"]) == 0
    assert "7 shards -> 1, 7 rows -> 7" in capsys.readouterr().out
    assert len(list((arch / "shards").glob("*.parquet"))) == 1 and pq.read_table(arch / "shards").num_rows == 7
