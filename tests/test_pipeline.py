"""The archive jobs with real parts: a local Ray, a moto S3 server on 127.0.0.1, Parquet read back."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import SAMPLES
from tng.codec.effort import DEFAULT_EFFORT
from tng.codec.registry import DEFAULT_MODEL_ID
from tng.jobs.cli import main


def _rows(archive) -> dict[str, dict]:
    table = pq.read_table(archive / "shards")  # plain pyarrow, no TNG code
    return {r["key"]: r for r in table.to_pylist()}


def test_compress_every_file_is_one_row(ray_local, src, tmp_path, capsys):
    out = tmp_path / "archive"
    assert main(["compress", str(src), str(out), "--workers", "1", "--batch-size", "2", "--quality", "8",
                 "--jpeg", "tng"]) == 0  # JPEGs through TNG too (the default recompresses them: test_jpeg.py)
    text = capsys.readouterr().out
    keys = pq.read_table(out / "shards", columns=["key"])["key"].to_pylist()
    assert len(keys) == len(set(keys))  # one row per key: _rows would hide a duplicate
    rows = _rows(out)
    assert sorted(rows) == ["cat.png", "cut.png", "deep/alpha.png", "deep/er/cup.jpg", "empty.png", "notes.txt", "small.jpg"]
    status = {k: (r["status"], r["codec"]) for k, r in rows.items()}
    assert status["cat.png"] == ("ok", "tng") and status["deep/er/cup.jpg"] == ("ok", "tng")
    assert status["deep/alpha.png"] == ("ok", "tng")
    assert status["small.jpg"] == ("ok", "source")  # never grow the archive
    assert rows["small.jpg"]["bitstream"] == (src / "small.jpg").read_bytes()
    assert rows["empty.png"]["error"] == "empty file"
    assert "not an image" in rows["notes.txt"]["error"] and "truncated" in rows["cut.png"]["error"]
    cat = rows["cat.png"]
    assert cat["bpp"] == pytest.approx(len(cat["bitstream"]) * 8 / (451 * 300))
    assert cat["source_sha256"] == hashlib.sha256((src / "cat.png").read_bytes()).hexdigest()
    assert cat["width"] == 451 and cat["model_id"] == DEFAULT_MODEL_ID and cat["psnr"] > 20 and 0 < cat["ms_ssim"] <= 1
    manifest = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert (manifest["listed"], manifest["ok"], manifest["errors"], manifest["codec_source"]) == (7, 4, 3, 1)
    assert manifest["settings"]["quality"] == 8 and manifest["settings"]["effort"] == DEFAULT_EFFORT
    assert manifest["bytes_out"] < manifest["bytes_in"] and "savings" in text


def test_a_small_run_prints_no_concurrency_warnings(ray_local, src, tmp_path):
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        assert main(["compress", str(src), str(tmp_path / "a"), "--workers", "2"]) == 0
    assert not [w for w in seen if "number of concurrent" in str(w.message)]


def test_incremental_skips_unchanged_and_redoes_changed(ray_local, src, tmp_path, capsys, monkeypatch):
    out = tmp_path / "archive"
    assert main(["compress", str(src), str(out), "--workers", "1"]) == 0
    first = {k: r["run_id"] for k, r in _rows(out).items()}
    shutil.copy(SAMPLES / "astronaut.png", src / "cat.png")  # changed content, same key
    shutil.copy(SAMPLES / "chelsea.png", src / "new.png")
    capsys.readouterr()
    assert main(["compress", str(src), str(out), "--workers", "1", "--incremental"]) == 0
    # Changed cat.png, new.png, and the three error rows (errors are retried); the rest is skipped.
    assert "5 processed, 3 unchanged" in capsys.readouterr().out
    table = pq.read_table(out / "shards").to_pylist()
    ok_per_key = {}
    for r in table:
        ok_per_key.setdefault((r["key"], r["source_sha256"]), []).append(r["status"])
    assert all(s.count("ok") <= 1 for s in ok_per_key.values())
    from tng.pipeline.archive import current_rows, open_fs, read_rows

    fs, root = open_fs(str(out))
    current = {r["key"]: r for r in current_rows(read_rows(fs, root)).to_pylist()}
    assert current["cat.png"]["width"] == 512 and current["cat.png"]["run_id"] != first["cat.png"]
    assert current["deep/er/cup.jpg"]["run_id"] == first["deep/er/cup.jpg"]
    assert "new.png" in current
    # Decompress and audit as on an archive of many partitions (rows shuffled by key, then by shard):
    # each key once, from its current row (cat.png's second version).
    from tng.pipeline import pending

    monkeypatch.setattr(pending, "PARTITION_ROWS", 1)  # a partition per shard (two runs: two or more)
    monkeypatch.setattr(pending, "SHARD_ROWS", 1)
    restored = tmp_path / "restored"
    assert main(["decompress", str(out), str(restored), "--workers", "1"]) == 0
    ok = sorted(k for k, r in current.items() if r["status"] == "ok")
    assert sorted(str(p.relative_to(restored)) for p in restored.rglob("*") if p.is_file()) == ok
    with Image.open(restored / "cat.png") as im:
        assert im.size == (512, 512)
    capsys.readouterr()
    assert main(["audit", str(out), "--workers", "1"]) == 0
    assert f"{len(ok)} rows checked, 0 problems" in capsys.readouterr().out


def test_incremental_trusts_the_listing_and_follows_the_current_row(ray_local, src, tmp_path, capsys):
    """Unchanged size + mtime: not read at all (as rsync). Touched only: read, hashed, skipped.
    Changed and changed back: done again, because the current row holds the other content."""
    import os

    out = tmp_path / "archive"
    assert main(["compress", str(src), str(out), "--workers", "1"]) == 0
    cat, cup = src / "cat.png", src / "deep" / "er" / "cup.jpg"
    assert _rows(out)["cat.png"]["source_version"].startswith("mtime=")
    # Same size and mtime, other bytes: the listing says unchanged, so it is not read (documented rule).
    stat = cup.stat()
    data = bytearray(cup.read_bytes())
    data[-3] ^= 1
    cup.write_bytes(bytes(data))
    os.utime(cup, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.utime(src / "deep" / "alpha.png")  # touched: new mtime, same content
    capsys.readouterr()
    assert main(["compress", str(src), str(out), "--workers", "1", "--incremental"]) == 0
    assert "3 processed, 4 unchanged" in capsys.readouterr().out  # only the 3 error rows are redone
    v1 = cat.read_bytes()
    shutil.copy(SAMPLES / "astronaut.png", cat)
    assert main(["compress", str(src), str(out), "--workers", "1", "--incremental"]) == 0
    cat.write_bytes(v1)  # back to the first content, which an older ok row holds
    capsys.readouterr()
    assert main(["compress", str(src), str(out), "--workers", "1", "--incremental"]) == 0
    assert "4 processed, 3 unchanged" in capsys.readouterr().out
    from tng.pipeline.archive import current_rows, open_fs, read_rows

    fs, root = open_fs(str(out))
    current = {r["key"]: r for r in current_rows(read_rows(fs, root)).to_pylist()}
    assert current["cat.png"]["width"] == 451 and current["cat.png"]["status"] == "ok"
    assert current["cat.png"]["source_sha256"] == hashlib.sha256(v1).hexdigest()


def test_more_workers_than_cores_do_not_starve_the_tasks(ray_local, src, tmp_path):
    """4 actors on 2 CPUs: the load and write tasks must still be scheduled (they used to wait forever)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    saved, ctx.execution_no_progress_timeout_s = ctx.execution_no_progress_timeout_s, 240  # a hang fails (worker start-up on a busy machine can take a minute)
    try:
        assert main(["compress", str(src), str(tmp_path / "a"), "--workers", "4", "--batch-size", "1"]) == 0
    finally:
        ctx.execution_no_progress_timeout_s = saved
    assert pq.read_table(tmp_path / "a" / "shards").num_rows == 7


def test_decompress_and_audit(ray_local, src, tmp_path, capsys):
    archive = tmp_path / "archive"
    assert main(["compress", str(src), str(archive), "--workers", "1", "--quality", "8", "--effort", "3"]) == 0
    assert json.loads(next((archive / "runs").glob("*.json")).read_text())["settings"]["effort"] == 3
    out = tmp_path / "restored"
    assert main(["decompress", str(archive), str(out), "--workers", "1"]) == 0
    restored = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert restored == ["cat.png", "deep/alpha.png", "deep/er/cup.jpg", "small.jpg"]
    for jpeg in ("small.jpg", "deep/er/cup.jpg"):  # recompressed losslessly (or kept): the original bytes
        assert (out / jpeg).read_bytes() == (src / jpeg).read_bytes()
    with Image.open(out / "deep" / "alpha.png") as im:
        assert im.mode == "RGBA" and np.asarray(im)[..., 3].min() == 200
    assert main(["audit", str(archive), "--source", str(src), "--report", str(tmp_path / "audit.json")]) == 0
    report = json.loads((tmp_path / "audit.json").read_text())
    assert report["rows_checked"] == 4 and report["mismatches"] == 0 and report["psnr_mismatches"] == []
    # Tamper with one stored hash: the audit must catch it.
    for shard in (archive / "shards").glob("*.parquet"):
        t = pq.read_table(shard)
        if "cat.png" in t["key"].to_pylist():
            hashes = t["decoded_sha256"].to_pylist()
            hashes[t["key"].to_pylist().index("cat.png")] = "0" * 64
            col = t.schema.get_field_index("decoded_sha256")
            pq.write_table(t.set_column(col, "decoded_sha256", pa.array(hashes, pa.string())), shard)
    assert main(["audit", str(archive)]) == 1
    assert "cat.png: decoded pixels do not match" in capsys.readouterr().out


def test_decompress_refuses_keys_outside_out(tmp_path):
    from tng.jobs.common import RunError
    from tng.jobs.decompress import safe_target

    for key in ["../evil.png", "/etc/passwd", "a/../../b.png", "a//b.png", ""]:
        with pytest.raises(RunError):
            safe_target(tmp_path, key, ".png")
    assert safe_target(tmp_path, "a/b.jpg", ".png") == tmp_path / "a" / "b.png"


def test_decompress_skips_unsafe_keys_and_writes_the_rest(ray_local, src, tmp_path, capsys):
    """Hostile keys in a real archive through the real command: each is skipped with its reason (as
    unzip does), every other image is written, nothing lands outside OUT, and the exit status is 1."""
    archive, out, outside = tmp_path / "archive", tmp_path / "restored", tmp_path / "outside"
    assert main(["compress", str(src), str(archive), "--workers", "1"]) == 0
    hostile = {"cat.png": "../evil.png", "deep/alpha.png": str(tmp_path / "abs.png"), "small.jpg": "link/small.jpg",
               "deep/er/cup.jpg": "deep/er/cup.jpg"}
    for shard in (archive / "shards").glob("*.parquet"):
        t = pq.read_table(shard)
        keys = [hostile.get(k, k) for k in t["key"].to_pylist()]
        pq.write_table(t.set_column(t.schema.get_field_index("key"), "key", pa.array(keys, pa.string())), shard)
    outside.mkdir()
    out.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)  # a symlink inside OUT
    capsys.readouterr()
    assert main(["decompress", str(archive), str(out), "--workers", "1"]) == 1
    cap = capsys.readouterr()
    assert (out / "deep" / "er" / "cup.jpg").read_bytes() == (src / "deep" / "er" / "cup.jpg").read_bytes()
    assert list(outside.iterdir()) == [] and not (tmp_path / "evil.png").exists() and not (tmp_path / "abs.png").exists()
    assert "decompressed 1 of 4 images" in cap.out and "3 unsafe keys skipped" in cap.out
    for key in ("../evil.png", str(tmp_path / "abs.png"), "link/small.jpg"):
        assert f"{key!r}: skipped: refusing" in cap.err
    assert "resolves outside" in cap.err  # the symlink case
    assert main(["audit", str(archive), "--workers", "1"]) == 0  # the rows themselves are sound


def test_max_error_share_fails_the_run_and_keeps_the_rows(ray_local, src, tmp_path, capsys):
    """3 of the 7 files are errors: a share of 0.5 passes, 0.1 fails the command; rows are written both times."""
    from tng.pipeline.run import task_remote_args

    assert task_remote_args() == {"num_cpus": 0}  # no `tng_task` on a local Ray: tasks go anywhere
    assert main(["compress", str(src), str(tmp_path / "a"), "--workers", "1", "--max-error-share", "0.5"]) == 0
    capsys.readouterr()
    assert main(["compress", str(src), str(tmp_path / "b"), "--workers", "1", "--max-error-share", "0.1"]) == 1
    err = capsys.readouterr().err
    assert "3 of 7 files processed failed, more than --max-error-share 0.1" in err
    assert pq.read_table(tmp_path / "b" / "shards").num_rows == 7
    manifest = json.loads(next((tmp_path / "b" / "runs").glob("*.json")).read_text())
    assert manifest["settings"]["max_error_share"] == 0.1


def test_decompress_keys_and_sample_and_audit_sample(ray_local, src, tmp_path, capsys):
    archive = tmp_path / "archive"
    assert main(["compress", str(src), str(archive), "--workers", "1"]) == 0
    ok = sorted(r["key"] for r in pq.read_table(archive / "shards").to_pylist() if r["status"] == "ok")
    assert main(["decompress", str(archive), str(tmp_path / "some"), "--keys", "cat.png", "small.jpg"]) == 0
    assert sorted(str(p.relative_to(tmp_path / "some")) for p in (tmp_path / "some").rglob("*") if p.is_file()) == [
        "cat.png", "small.jpg"]
    capsys.readouterr()
    assert main(["decompress", str(archive), str(tmp_path / "none"), "--keys", "cat.png", "nope.png"]) == 1
    assert "not in the archive (or not ok): nope.png" in capsys.readouterr().err and not (tmp_path / "none").exists()
    # --sample picks by a hash of the key: the same keys every time, here worked out independently.
    picked = sorted(k for k in ok if int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) < 0.5 * 2**32)
    assert 0 < len(picked) < len(ok)
    out = tmp_path / "sample"
    assert main(["decompress", str(archive), str(out), "--sample", "0.5"]) == 0
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert [g.rsplit(".", 1)[0] for g in got] == [k.rsplit(".", 1)[0] for k in picked]
    assert main(["audit", str(archive), "--sample", "0.5", "--report", str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["rows_checked"] == len(picked)
    capsys.readouterr()
    assert main(["audit", str(archive), "--sample", "0"]) == 1
    assert "--sample must be in (0, 1]" in capsys.readouterr().err


def test_picks_made_in_the_driver_are_the_picks_on_ray(ray_local, src, tmp_path):
    """decode_graph.select picks a small archive's rows in the driver: the same (key, path, row) as its
    Ray graph, for every key, some keys and a sample, across two runs (a key's current row)."""
    from tng.pipeline.archive import open_fs, shard_paths
    from tng.pipeline.decode_graph import _select_here, _select_on_ray

    archive = tmp_path / "archive"
    assert main(["compress", str(src), str(archive), "--workers", "1"]) == 0
    (src / "cat.png").write_bytes((src / "deep" / "alpha.png").read_bytes())
    assert main(["compress", str(src), str(archive), "--workers", "1", "--incremental"]) == 0
    shards = shard_paths(*open_fs(str(archive)))
    assert len(shards) == 2
    for keys, sample in ((None, None), (["cat.png", "small.jpg"], None), (None, 0.5)):
        here = _select_here(str(archive), {}, shards, keys, sample).to_pylist()
        on_ray = _select_on_ray(str(archive), {}, shards, keys, sample).take_all()
        assert sorted(map(sorted_items, here)) == sorted(map(sorted_items, on_ray)) and here, (keys, sample)
    latest = max((json.loads(p.read_text()) for p in (archive / "runs").glob("*.json")), key=lambda m: m["started"])
    assert [r["path"] for r in _select_here(str(archive), {}, shards, ["cat.png"], None).to_pylist()] == latest["shards"]


def sorted_items(row: dict) -> tuple:
    return tuple(sorted(row.items()))


def test_compress_target_psnr_and_max_pixels(ray_local, src, tmp_path):
    out = tmp_path / "archive"
    assert main(["compress", str(src), str(out), "--workers", "1", "--target-psnr", "31", "--max-pixels", "100000",
                 "--jpeg", "tng"]) == 0
    rows = _rows(out)
    manifest = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert manifest["settings"]["target_psnr"] == 31 and manifest["settings"]["max_pixels"] == 100000
    # cat.png is 451x300 = 135,300 pixels: refused from its header, with the limit named.
    assert rows["cat.png"]["status"] == "error"
    assert rows["cat.png"]["error"] == "image of 451x300 = 135300 pixels exceeds the pixel limit of 100000 (--max-pixels)"
    coded = [r for r in rows.values() if r["codec"] == "tng"]
    assert coded and all(r["psnr"] >= 31 or r["quality"] == 8 for r in coded)
    assert len({r["quality"] for r in coded}) > 1  # chosen per image


def test_load_and_decode_refuse_bombs_before_allocation(src):
    """The pipeline's own stages, without Ray: a source whose header claims 60000x60000 and an archive
    row whose stream does are refused with the reason before any pixel buffer is allocated."""
    from conftest import allocation_peak, bomb_stream
    from tng.pipeline import stages

    png = bytearray((SAMPLES / "chelsea.png").read_bytes())
    png[16:24] = struct.pack(">II", 60000, 60000)  # IHDR width and height
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # and its CRC
    (src / "bomb.png").write_bytes(bytes(png))
    batch = {"key": ["bomb.png"], "source_uri": [str(src / "bomb.png")], "source_version": [""]}
    with allocation_peak() as mem:
        out = stages.load_batch(batch, {}, 250_000_000)
    assert out["error"][0].startswith("image of 60000x60000") and mem["peak"] < 2_000_000
    actor = stages.DecodeActor(threads=1)
    rows = {"key": np.array(["x.png"], object), "codec": np.array(["tng"], object),
            "bitstream": np.array([bomb_stream(DEFAULT_MODEL_ID)], object),
            "decoded_sha256": np.array(["0" * 64], object), "source_sha256": np.array(["0" * 64], object)}
    with allocation_peak() as mem:
        res = actor(rows)
    assert "exceeds the pixel limit" in res["error"][0] and res["file"][0] is None and mem["peak"] < 1_000_000


def test_a_failing_image_in_a_batch_gets_the_only_error_row(src, monkeypatch):
    """The actor alone: one image that makes the network fail takes the batch down to image-by-image
    coding, and only that image's row is an error."""
    from tng.codec import Codec
    from tng.pipeline import stages

    keys = ["cat.png", "deep/alpha.png", "deep/er/cup.jpg"]
    batch = stages.load_batch({"key": keys, "source_uri": [str(src / k) for k in keys], "source_version": [""] * 3},
                              {}, 10_000_000, jpeg="tng")
    analyse = Codec._analyse

    def flaky(self, net, x):
        if x.shape[-1] == 128:  # only alpha.png (96 wide, padded to 128) has this width
            raise RuntimeError("out of memory (simulated)")
        return analyse(self, net, x)

    monkeypatch.setattr(Codec, "_analyse", flaky)
    out = stages.CompressActor(4.0, None, DEFAULT_MODEL_ID, "run", threads=2, device="cpu")(batch)
    status = dict(zip(out["key"], out["status"]))
    assert status == {"cat.png": "ok", "deep/alpha.png": "error", "deep/er/cup.jpg": "ok"}
    assert "out of memory (simulated)" in out["error"][1]


def test_s3_round_trip(ray_local, s3, src, tmp_path, capsys):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3})
    fs.mkdir("photos")
    fs.put(str(src) + "/", "photos/incoming/", recursive=True)
    assert main(["compress", "s3://photos/incoming", "s3://photos/archive", "--workers", "1"]) == 0
    table = pq.read_table("photos/archive/shards", filesystem=fs)
    assert table.num_rows == 7 and set(table["status"].to_pylist()) == {"ok", "error"}
    assert all(u.startswith("s3://photos/incoming/") for u in table["source_uri"].to_pylist())
    assert fs.glob("photos/archive/runs/*.json")
    assert main(["audit", "s3://photos/archive", "--workers", "1"]) == 0
    restored = tmp_path / "from-s3"
    assert main(["decompress", "s3://photos/archive", str(restored), "--workers", "1"]) == 0
    assert sorted(str(p.relative_to(restored)) for p in restored.rglob("*") if p.is_file()) == [
        "cat.png", "deep/alpha.png", "deep/er/cup.jpg", "small.jpg"]
    assert (restored / "deep" / "er" / "cup.jpg").read_bytes() == (src / "deep" / "er" / "cup.jpg").read_bytes()
    ok = table.filter(pc.equal(table["status"], "ok"))
    assert all(v.startswith("ETag=") for v in ok["source_version"].to_pylist())
    capsys.readouterr()  # a nightly rerun reads only the error rows' files again
    assert main(["compress", "s3://photos/incoming", "s3://photos/archive", "--workers", "1", "--incremental"]) == 0
    assert "3 processed, 4 unchanged" in capsys.readouterr().out


def test_run_level_failures_exit_nonzero(ray_local, src, tmp_path, capsys):
    assert main(["compress", str(tmp_path / "nope"), str(tmp_path / "a")]) == 1
    assert "cannot list" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["compress", str(src), str(blocker / "archive")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path):
    """A killed run can leave `.tmp-*` files; the next run removes those older than an hour only
    (a run writing to the same archive right now has younger ones), and never a shard."""
    import os
    import time

    from tng.pipeline.archive import open_fs, remove_stale_temporaries

    shards = tmp_path / "archive" / "shards"
    shards.mkdir(parents=True)
    for name in (".tmp-a.parquet", ".tmp-b.parquet", "a.parquet"):
        (shards / name).write_bytes(b"x")
    old = time.time() - 7200
    os.utime(shards / ".tmp-a.parquet", (old, old))
    os.utime(shards / "a.parquet", (old, old))
    fs, root = open_fs(str(tmp_path / "archive"))
    assert remove_stale_temporaries(fs, root) == 1
    assert sorted(p.name for p in shards.iterdir()) == [".tmp-b.parquet", "a.parquet"]


def test_compress_actor_encodes_a_batch_in_bounded_chunks(src, monkeypatch):
    """The actor alone (no Ray): every row of a batch comes out, in order, whether its images are
    encoded together or, with a small CHUNK_PIXELS, a few at a time."""
    from tng.codec import Codec
    from tng.pipeline import stages

    keys = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    batch = stages.load_batch({"key": keys, "source_uri": [str(src / k) for k in keys], "source_version": [""] * len(keys)},
                              {}, 10_000_000, jpeg="tng")
    calls = []
    encode_batch = Codec.encode_batch
    monkeypatch.setattr(Codec, "encode_batch", lambda self, images, **kw: calls.append(len(images)) or encode_batch(self, images, **kw))
    actor = stages.CompressActor(4.0, None, DEFAULT_MODEL_ID, "run", threads=2, device="cpu")
    whole = actor(batch)
    assert calls == [4]  # the four readable images, at once
    calls.clear()
    monkeypatch.setattr(stages, "CHUNK_PIXELS", 20_000)  # a chunk closes at 20,000 pixels: [cat], [alpha, cup], [small]
    chunked = actor(batch)
    assert calls == [1, 2, 1]
    assert list(whole["key"]) == list(chunked["key"]) == keys
    for name in ("status", "codec", "error", "width", "bitstream_bytes", "decoded_sha256"):
        assert list(whole[name]) == list(chunked[name]), name
    status = dict(zip(whole["key"], whole["status"]))
    assert [k for k in keys if status[k] == "ok"] == ["cat.png", "deep/alpha.png", "deep/er/cup.jpg", "small.jpg"]
