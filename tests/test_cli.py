"""`tng encode` / `tng decode` as users run them: real processes, real files, exit codes, messages; and
the README's first command, which must print nothing that looks like a failure."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, SAMPLES


def tng(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tng.jobs.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_encode_decode_files(tmp_path):
    src = SAMPLES / "chelsea.png"
    r = tng("encode", src, tmp_path / "cat.tng", "--quality", "3.5")
    assert r.returncode == 0, r.stderr
    assert "451x300" in r.stdout and "bpp" in r.stdout and "PSNR" in r.stdout and "quality 3.5" in r.stdout
    for ext in ("png", "webp", "jpg"):
        r = tng("decode", tmp_path / "cat.tng", tmp_path / f"cat.{ext}")
        assert r.returncode == 0, r.stderr
        with Image.open(tmp_path / f"cat.{ext}") as im:
            assert im.size == (451, 300) and im.mode == "RGB"
    r = tng("encode", src, tmp_path / "plain.tng", "--quality", "3.5", "--effort", "0")
    assert r.returncode == 0 and "effort 0" in r.stdout, r.stderr
    r = tng("encode", src, tmp_path / "refined.tng", "--quality", "3.5", "-e", "4")
    assert r.returncode == 0 and "effort 4" in r.stdout, r.stderr
    assert (tmp_path / "refined.tng").stat().st_size < (tmp_path / "plain.tng").stat().st_size
    assert tng("decode", tmp_path / "refined.tng", tmp_path / "refined.png").returncode == 0


def test_effort_levels_are_explained_and_checked(tmp_path):
    from tng.codec.effort import LEVELS

    r = tng("encode", "--help")
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and all(f"{e.level}: {e.describe()}" in text for e in LEVELS)
    r = tng("encode", SAMPLES / "chelsea.png", tmp_path / "x.tng", "--effort", "10")
    assert r.returncode == 2 and "effort must be a whole number from 0 to 9, got 10" in r.stderr


def test_target_psnr_reports_what_it_achieved(tmp_path):
    r = tng("encode", SAMPLES / "chelsea.png", tmp_path / "c.tng", "--target-psnr", "30")
    assert r.returncode == 0, r.stderr
    assert "target PSNR 30 dB met" in r.stdout
    psnr = float(r.stdout.split("PSNR ")[1].split(" dB")[0])
    assert psnr >= 30


@pytest.mark.parametrize("make,reason", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(b"hello, not a picture"), "not an image"),
    (lambda p: p.write_bytes((SAMPLES / "coffee.png").read_bytes()[:5000]), "truncated"),
])
def test_bad_images_fail_cleanly(tmp_path, make, reason):
    p = tmp_path / "in.png"
    make(p)
    r = tng("encode", p, tmp_path / "out.tng")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert reason in r.stderr.lower()
    assert not (tmp_path / "out.tng").exists()


def test_bad_streams_fail_cleanly(tmp_path, small_tng):
    cases = {"garbage.tng": b"\x89TNG\x01" + bytes(50), "truncated.tng": small_tng[: len(small_tng) // 2],
             "empty.tng": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        r = tng("decode", tmp_path / name, tmp_path / "out.png", timeout=30)
        assert r.returncode == 1 and "Traceback" not in r.stderr, (name, r.stderr)
        assert r.stderr.startswith("tng: error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


def test_missing_file_and_bad_arguments(tmp_path):
    r = tng("decode", tmp_path / "nope.tng", tmp_path / "o.png")
    assert r.returncode == 1 and "cannot read" in r.stderr
    r = tng("encode", SAMPLES / "chelsea.png", tmp_path / "o.tng", "--quality", "9")
    assert r.returncode == 2 and "between 1 and 8" in r.stderr
    assert tng("encode", SAMPLES / "chelsea.png", tmp_path / "x.tng", "--quality", "1").returncode == 0
    r = tng("decode", tmp_path / "x.tng", tmp_path / "o.unknownext")  # a good stream: the extension is the fault
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "'.unknownext' is not a writable image format" in r.stderr and not (tmp_path / "o.unknownext").exists()


def test_alpha_to_jpeg_is_refused_not_dropped(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert tng("encode", tmp_path / "a.png", tmp_path / "a.tng").returncode == 0
    r = tng("decode", tmp_path / "a.tng", tmp_path / "a.jpg")
    assert r.returncode == 1 and "alpha" in r.stderr
    assert tng("decode", tmp_path / "a.tng", tmp_path / "a.png").returncode == 0
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "RGBA" and np.asarray(im)[..., 3].max() == 128


def test_models_lists_the_shipped_model():
    from tng.codec.registry import DEFAULT_MODEL_ID

    r = tng("models")
    assert r.returncode == 0 and r.stdout.startswith("1\t")
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert [row[0] for row in rows if row[0].endswith(" (default)")] == [f"{DEFAULT_MODEL_ID} (default)"]
    assert next(row for row in rows if row[0].split()[0] == "6")[2:4] == ["exact synthesis", "hyper-prior"]


# error- or warning-level lines of any kind: Python's warnings and logging, Ray core's "[... E ...]"
LOOKS_BROKEN = re.compile(r"\berror\b|warn|traceback|exception|^\[[^\]]* [EWF] \d+ \d+\]", re.IGNORECASE | re.MULTILINE)


def test_the_readme_first_run_prints_progress_and_summary_only(tmp_path):
    """`tng compress samples ...` then `tng decompress ...` as the README has them: the installed
    command, a real local Ray, stdout and stderr read whole."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = Path(sys.executable).with_name("tng")
    runs = [[command, "compress", "samples", tmp_path / "archive"],
            [command, "decompress", tmp_path / "archive", tmp_path / "restored"]]
    out = []
    for argv in runs:
        r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert not LOOKS_BROKEN.findall(r.stdout + r.stderr), r.stdout + r.stderr
        out.append(r.stdout)
    assert "3 files, 3 processed" in out[0] and "3 ok" in out[0] and ", 0 errors" in out[0]
    assert "decompressed 3 of 3 images" in out[1]
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == sorted(p.name for p in SAMPLES.iterdir())
