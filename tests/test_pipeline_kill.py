"""A killed `tng compress --incremental` leaves a readable archive, and rerunning it finishes the job:
every key ends as one `ok` row, none is archived twice. Real CLI subprocess, on a real local Ray and
in-process (pipeline/in_process.py, which these small runs take by default), kill -9,
into a local folder and into S3 (a moto server on loopback); killed mid-run, and killed after its last
shard but before its run manifest. What a kill leaves is audited and restored by the real commands."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

N_IMAGES = 12
TNG = Path(sys.executable).with_name("tng")


def make_images(folder: Path, n: int = N_IMAGES) -> None:
    """Small gradients with noise, half PNG and half JPEG, all different."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:96]
    for i in range(n):
        rgb = np.stack([x * 2 + i * 10, y * 3, x + y + i * 20], -1) % 256 + rng.normal(0, 8, (64, 96, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"img{i:02d}.{'png' if i % 2 else 'jpg'}")


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`: the driver and every Ray process it started.
    Ray workers put themselves in their own process groups but stay in the session."""
    pids = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and os.getsid(int(d)) == sid and Path(f"/proc/{d}/stat").read_text().split(")")[1].split()[0] != "Z":
                pids.append(int(d))
        except (OSError, IndexError):
            pass  # exited meanwhile
    return pids


def kill_session(proc: subprocess.Popen) -> None:
    """kill -9 the driver's process group (driver, gcs, raylet, agents), then reap the session.
    The group may outlive its driver, so it is killed even when the driver has exited."""
    with contextlib.suppress(ProcessLookupError):  # nothing left in the group
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reap_session(proc)


def reap_session(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """Give the session's Ray workers `grace_s` to notice their raylet is gone, then kill -9 the rest.
    Only processes of this session (started by `proc`) are touched."""
    deadline = time.monotonic() + grace_s
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in session_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)


KILL_ATTEMPTS = 3


ENGINES = {"ray": ["--in-process-files", "0"], "in-process": []}  # these jobs are small: in-process by default


def compress_cmd(src: Path, dst: str, engine: str) -> list[str]:
    # One image per batch and per shard: shards appear one by one, so a kill can land mid-run.
    return [str(TNG), "compress", str(src), dst, "--incremental", "--workers", "1",
            "--batch-size", "1", "--rows-per-shard", "1", *ENGINES[engine]]


class Archive:
    """The archive under test, local or on S3: its URL and the filesystem to look at it with."""

    def __init__(self, url: str):
        from tng.pipeline.archive import open_fs

        self.url = url
        self.fs, self.root = open_fs(url)

    def paths(self, pattern: str) -> list[str]:
        self.fs.invalidate_cache()
        return self.fs.glob(f"{self.root}/{pattern}")

    def rows(self) -> list[dict]:
        """Every row of every shard, read with plain pyarrow."""
        return [r for p in self.paths("shards/*.parquet") for r in pq.read_table(p, filesystem=self.fs).to_pylist()]


def run_to_end(src: Path, dst: Archive, engine: str) -> dict:
    """Run the command to completion; returns its run manifest."""
    before = set(dst.paths("runs/*.json"))
    proc = subprocess.Popen(compress_cmd(src, dst.url, engine), start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = proc.communicate(timeout=600)[0]
    finally:
        kill_session(proc)
    assert proc.returncode == 0, out[-3000:]
    (manifest,) = set(dst.paths("runs/*.json")) - before
    manifest = json.loads(dst.fs.cat_file(manifest))
    assert manifest["engine"] == engine
    return manifest


def kill_mid_run(src: Path, dst: Archive, log: Path, engine: str, shards: int = 1) -> int:
    """Start the run and kill -9 it once `shards` shards are there (default: the first); returns how
    many shards it left. The caller checks that the kill landed where it wanted (else it proves nothing)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(compress_cmd(src, dst.url, engine), start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline and len(dst.paths("shards/*.parquet")) < shards:
                time.sleep(0.02)
        finally:
            kill_session(proc)
    assert not session_pids(proc.pid), "Ray processes left behind"
    return len(dst.paths("shards/*.parquet"))


def audit_and_restore(dst: Archive, rows: int, out: Path) -> None:
    """`tng audit` and `tng decompress` of what a killed run left: every row it wrote checks out and
    comes back."""
    for args, want in ((["audit", dst.url], f"{rows} rows checked, 0 problems"),
                       (["decompress", dst.url, str(out)], f"decompressed {rows} of {rows} images")):
        r = subprocess.run([str(TNG), *args, "--workers", "1"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and want in r.stdout, r.stdout + r.stderr[-3000:]


@pytest.fixture(params=["local", "s3"])
def destination(request, tmp_path):
    """Where archives go: a local folder, or a bucket on a moto server (started before the CLI's Ray)."""
    if request.param == "local":
        return lambda i: Archive(str(tmp_path / f"archive{i}"))
    request.getfixturevalue("s3")
    import s3fs

    if not s3fs.S3FileSystem().exists("killed"):
        s3fs.S3FileSystem().mkdir("killed")
    return lambda i: Archive(f"s3://killed/{tmp_path.name}/archive{i}")  # a folder per test


@pytest.mark.parametrize("engine", ENGINES)
def test_killed_run_then_rerun_archives_each_key_once(tmp_path, destination, engine):
    src = tmp_path / "src"
    make_images(src)
    for attempt in range(KILL_ATTEMPTS):  # a fresh archive for each try
        dst, log = destination(attempt), tmp_path / f"killed-run-{attempt}.log"
        shards_at_kill = kill_mid_run(src, dst, log, engine)
        if 0 < shards_at_kill < N_IMAGES and not dst.paths("runs/*.json"):
            break
    else:
        pytest.fail(f"no kill landed mid-run in {KILL_ATTEMPTS} tries (last: {shards_at_kill} shards); "
                    f"its output:\n{log.read_text()[-3000:]}")
    # What the killed run left is readable as it is: complete shards only, at most one row per key.
    left = dst.rows()
    assert len(left) == shards_at_kill and len({r["key"] for r in left}) == len(left)
    ok_before = {r["key"] for r in left if r["status"] == "ok"}
    audit_and_restore(dst, len(left), tmp_path / "restored")

    rerun = run_to_end(src, dst, engine)
    assert (rerun["listed"], rerun["processed"], rerun["ok"]) == (N_IMAGES, N_IMAGES - len(ok_before), N_IMAGES - len(ok_before))
    rows = dst.rows()  # plain pyarrow: every shard of every run
    ok = [(r["key"], r["source_sha256"]) for r in rows if r["status"] == "ok"]
    assert len(ok) == len(set(ok)) == N_IMAGES  # no key archived twice for the same content
    from tng.pipeline.archive import current_rows, read_rows

    current = current_rows(read_rows(dst.fs, dst.root)).to_pylist()
    assert sorted(r["key"] for r in current) == sorted(p.name for p in src.iterdir())
    assert all(r["status"] == "ok" for r in current)

    again = run_to_end(src, dst, engine)  # after completion: nothing new to do
    assert (again["processed"], again["skipped_unchanged"]) == (0, N_IMAGES)
    assert len(dst.rows()) == len(rows)


@pytest.mark.parametrize("engine", ENGINES)
def test_killed_after_its_last_shard_before_its_manifest(tmp_path, engine):
    """Every row written, no run manifest: the archive is whole (audit, decompress), and a rerun with
    --incremental codes nothing again and writes the manifest."""
    src = tmp_path / "src"
    make_images(src)
    # In-process, the manifest follows the last shard by ~55 ms (12 shards read back for the figures),
    # against a 20 ms poll: more tries, each a few seconds.
    attempts = 3 * KILL_ATTEMPTS if engine == "in-process" else KILL_ATTEMPTS
    for attempt in range(attempts):
        dst, log = Archive(str(tmp_path / f"archive{attempt}")), tmp_path / f"killed-run-{attempt}.log"
        if kill_mid_run(src, dst, log, engine, shards=N_IMAGES) == N_IMAGES and not dst.paths("runs/*.json"):
            break
    else:
        pytest.fail(f"no kill landed between the last shard and the manifest in {attempts} tries; "
                    f"its output:\n{log.read_text()[-3000:]}")
    assert sorted(r["key"] for r in dst.rows()) == sorted(p.name for p in src.iterdir())
    audit_and_restore(dst, N_IMAGES, tmp_path / "restored")
    rerun = run_to_end(src, dst, engine)
    assert (rerun["listed"], rerun["processed"], rerun["skipped_unchanged"]) == (N_IMAGES, 0, N_IMAGES)
    assert len(dst.rows()) == N_IMAGES
