"""Small jobs in the command's own process, without Ray (pipeline/in_process.py, decode_graph.py): the
same rows, figures and restored files as on Ray Data, incremental runs, and the rules that send a
job to Ray."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import ROOT, SAMPLES
from tng.jobs.cli import main
from tng.pipeline.archive import SCHEMA
from tng.pipeline.compress_graph import CompressSettings, needs_ray
from tng.pipeline.in_process import small_todo

TNG = Path(sys.executable).with_name("tng")
VARIES = {"run_id", "encoded_at"}  # what differs between two runs of the same files
FIGURES_VARY = {"run_id", "started", "finished", "shards", "engine", "settings"}


@pytest.fixture(autouse=True)
def no_ray_in_this_process():
    """A Ray this process started sends every run to Ray (needs_ray): none may be left by other tests."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def rows(archive: Path) -> dict[str, dict]:
    return {r["key"]: {k: v for k, v in r.items() if k not in VARIES}
            for r in pq.read_table(archive / "shards").to_pylist()}  # plain pyarrow


def manifests(archive: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (archive / "runs").glob("*.json")), key=lambda m: m["started"])


def test_a_small_run_writes_what_the_ray_graph_writes(src, tmp_path):
    """Every kind of row (TNG, AVIF and JPEG XL under --codec auto, JPEGs kept losslessly, alpha, files
    that are not images, a folder linked in twice), both ways: byte-identical rows and the same
    figures. The in-process run never imports Ray; a run over the limit goes to Ray."""
    (src / "alias").symlink_to(src / "deep", target_is_directory=True)
    args = ["compress", str(src), "--codec", "auto", "--workers", "1", "--batch-size", "3", "--rows-per-shard", "4"]
    here = subprocess.run([sys.executable, "-c", (
        "import sys; from tng.jobs.cli import main; rc = main(sys.argv[1:]); "
        "assert 'ray' not in sys.modules, 'the small run imported Ray'; sys.exit(rc)"),
        *args[:2], str(tmp_path / "here"), *args[2:]], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert here.returncode == 0, here.stderr[-3000:]
    on_ray = subprocess.run([str(TNG), *args[:2], str(tmp_path / "ray"), *args[2:], "--in-process-files", "3"],
                            capture_output=True, text=True, timeout=600)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]

    (a,), (b,) = manifests(tmp_path / "here"), manifests(tmp_path / "ray")
    assert (a["engine"], b["engine"]) == ("in-process", "ray")
    assert {k: v for k, v in a.items() if k not in FIGURES_VARY} == {k: v for k, v in b.items() if k not in FIGURES_VARY}
    assert a["processed"] == 9 and a["errors"] == 3 and {"tng", "avif", "jpeg-jxl"} <= set(a["by_codec"])
    here_rows = rows(tmp_path / "here")
    assert {"alias/alpha.png", "alias/er/cup.jpg", "deep/alpha.png"} <= set(here_rows)
    assert here_rows == rows(tmp_path / "ray")
    assert [pq.read_metadata(p).num_rows for p in a["shards"]] == [4, 4, 1]  # --rows-per-shard, the last one less
    assert all("9 files, 9 processed" in r.stdout for r in (here, on_ray))

    # decompress and audit of the in-process archive: in-process too, Ray never imported; the files
    # are those a decompress on Ray restores (6 ok rows: over a limit of 5, the picks go to Ray).
    restore = subprocess.run([sys.executable, "-c", (
        "import sys; from tng.jobs.cli import main; a = sys.argv[1:]; "
        "rc = main(['decompress', a[0], a[1]]) or main(['audit', a[0], '--source', a[2], '--report', a[3]]); "
        "assert 'ray' not in sys.modules, 'a small decompress or audit imported Ray'; sys.exit(rc)"),
        str(tmp_path / "here"), str(tmp_path / "out-here"), str(src), str(tmp_path / "audit.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert restore.returncode == 0, restore.stdout + restore.stderr[-3000:]
    assert "decompressed 6 of 6 images" in restore.stdout and "6 rows checked, 0 problems" in restore.stdout
    report = json.loads((tmp_path / "audit.json").read_text())
    lossy = sum(r["status"] == "ok" and r["psnr"] is not None for r in here_rows.values())
    assert lossy >= 2 and report["psnr_vs_source"]["images"] == lossy and report["psnr_mismatch_count"] == 0
    r = subprocess.run([sys.executable, "-c", (
        "import sys; from tng.jobs.cli import main; rc = main(sys.argv[1:]); "
        "assert 'ray' in sys.modules, 'more picks than the limit did not go to Ray'; sys.exit(rc)"),
        "decompress", str(tmp_path / "here"), str(tmp_path / "out-ray"), "--in-process-files", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "decompressed 6 of 6 images" in r.stdout, r.stderr[-3000:]
    restored = {p.relative_to(tmp_path / "out-here"): p.read_bytes() for p in (tmp_path / "out-here").rglob("*") if p.is_file()}
    assert len(restored) == 6
    assert restored == {p.relative_to(tmp_path / "out-ray"): p.read_bytes()
                        for p in (tmp_path / "out-ray").rglob("*") if p.is_file()}


def test_small_incremental_runs(tmp_path, capsys, monkeypatch):
    """Unchanged files are skipped without being read; a changed file is coded again; a deleted key stays
    in the archive's count, as the graph's anti-join has it. The run leaves this process's torch
    threads as they were."""
    import torch

    from tng.pipeline import stages

    src, archive = tmp_path / "src", tmp_path / "archive"
    (src / "sub").mkdir(parents=True)
    for name in ("astronaut.png", "chelsea.png", "coffee.png"):
        Image.open(SAMPLES / name).crop((0, 0, 160, 120)).save(src / "sub" / name)
    (src / "top.png").write_bytes((src / "sub" / "coffee.png").read_bytes())
    read: list[str] = []
    load_batch = stages.load_batch
    monkeypatch.setattr(stages, "load_batch", lambda batch, *a, **k: read.extend(batch["key"]) or load_batch(batch, *a, **k))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = ["compress", str(src), str(archive), "--batch-size", "1", "--rows-per-shard", "2"]
    try:
        assert main(run) == 0
        assert torch.get_num_threads() == 1
        assert main([*run, "--incremental"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert len(read) == 4  # the first run's, none by the second
    Image.open(SAMPLES / "coffee.png").crop((0, 0, 120, 160)).save(src / "top.png")
    (src / "sub" / "chelsea.png").unlink()
    assert main([*run, "--incremental"]) == 0
    assert read[4:] == ["top.png"]
    first, again, changed = manifests(archive)
    assert all(m["engine"] == "in-process" for m in (first, again, changed))
    assert (first["processed"], first["ok"], len(first["shards"])) == (4, 4, 2)
    assert (again["processed"], again["skipped_unchanged"], again["shards"]) == (0, 4, [])
    assert (changed["listed"], changed["processed"], changed["archive_keys"]) == (3, 1, 4)
    latest = {r["key"]: r for r in pq.read_table(changed["shards"][0]).to_pylist()}
    assert list(latest) == ["top.png"] and latest["top.png"]["width"] == 120
    assert "3 files, 1 processed, 2 unchanged (skipped), 1 ok" in capsys.readouterr().out


def test_when_a_run_goes_to_ray(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    small = CompressSettings()
    assert not needs_ray(small, None)
    assert needs_ray(small, "ray://head:10001")
    assert needs_ray(CompressSettings(gpus_per_worker=1), None)
    assert needs_ray(CompressSettings(listing="keys.txt"), None)
    assert needs_ray(CompressSettings(in_process_files=0), None)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert needs_ray(small, None)
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: True))
    assert needs_ray(small, None)  # this process's Ray
    monkeypatch.delitem(sys.modules, "ray")

    src, archive = tmp_path / "src", tmp_path / "archive"
    (src / "a").mkdir(parents=True)
    for i in range(3):
        (src / "a" / f"{i}.png").write_bytes(b"")
    todo = small_todo(str(src), str(archive), {}, CompressSettings(in_process_files=3))
    assert sorted(todo.rows["key"].to_pylist()) == ["a/0.png", "a/1.png", "a/2.png"] and todo.listed == 3
    assert small_todo(str(src), str(archive), {}, CompressSettings(in_process_files=2)) is None  # more files
    (archive / "shards").mkdir(parents=True)
    for i in range(4):
        pq.write_table(SCHEMA.empty_table(), archive / "shards" / f"{i}.parquet")
    assert small_todo(str(src), str(archive), {}, CompressSettings(in_process_files=3)) is None  # more shards
    assert small_todo(str(src), str(archive), {}, CompressSettings(in_process_files=4)).listed == 3
    fsspec.filesystem("memory").pipe("/src/a.png", b"")
    assert small_todo("memory://src", str(archive), {}, CompressSettings()) is None  # no cheap count there


def test_run_level_failures_of_a_small_run(tmp_path, capsys):
    assert main(["compress", str(tmp_path / "nope"), str(tmp_path / "a")]) == 1
    assert "cannot list" in capsys.readouterr().err
    (tmp_path / "one.png").write_bytes((SAMPLES / "coffee.png").read_bytes())
    assert main(["compress", str(tmp_path / "one.png"), str(tmp_path / "b")]) == 0  # one file: its name is the key
    assert list(rows(tmp_path / "b")) == ["one.png"]
    (tmp_path / "b" / "shards" / "junk.parquet").write_bytes(b"not parquet")
    assert main(["compress", str(tmp_path / "one.png"), str(tmp_path / "b"), "--incremental"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tng: error: cannot read archive") and len(err.strip().splitlines()) == 1, err
    assert main(["audit", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tng: error: cannot read archive") and len(err.strip().splitlines()) == 1, err


def test_a_small_decode_fails_in_one_line_and_gives_the_threads_back(tmp_path, capsys):
    """A shard that breaks between the picks and the decode: a RunError, this process's torch threads
    as they were; an empty archive has nothing to decode, and no key."""
    import torch

    from tng.jobs.common import RunError
    from tng.pipeline.decode_graph import decode, select

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "one.png").write_bytes((SAMPLES / "coffee.png").read_bytes())
    assert main(["compress", str(tmp_path / "src"), str(tmp_path / "a")]) == 0
    picked = select(str(tmp_path / "a"), {}, None, None, None)
    assert picked.num_rows == 1  # a table: picked here
    (shard,) = (tmp_path / "a" / "shards").glob("*.parquet")
    shard.write_bytes(b"broken since")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(RunError, match="cannot decode archive"):
            list(decode(picked, str(tmp_path / "a"), {}, None, 1, None))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    (tmp_path / "empty").mkdir()
    assert main(["decompress", str(tmp_path / "empty"), str(tmp_path / "out")]) == 0
    assert "decompressed 0 of 0" in capsys.readouterr().out
    assert main(["decompress", str(tmp_path / "empty"), str(tmp_path / "out"), "--keys", "one.png"]) == 1
    assert "not in the archive" in capsys.readouterr().err
