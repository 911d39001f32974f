"""scripts/gpu-check as CI can run it: on CPU (no CUDA: its CUDA tests skip), a handful of small crops
of the bundled samples, compress's codec actor called without Ray, a real `tng compress` and `tng audit`
on a local Ray, and the JSON and log it leaves in $OUT, read back whole. A second run with no photos
shows that a failed step is recorded with its reason, the other steps still run, and the exit status
says so; without Ray the compress step is a skip with its reason, not a failure."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT

SCRIPT = ROOT / "scripts/gpu-check"


def gpu_check(out, *args: str, **env: str) -> subprocess.CompletedProcess:
    """bash scripts/gpu-check with this interpreter, on CPU (CUDA hidden), a local Ray, OUT=out."""
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PHOTOS", "IMAGES")}
    base.update(PYTHON=sys.executable, OUT=str(out), CUDA_VISIBLE_DEVICES="", **env)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=600)


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench/gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_on_cpu(tmp_path):
    out = tmp_path / "out"
    # --batch-size 4: two batches of the 5 images, so the actors step has a batch after the model loads
    r = gpu_check(out, "--photos", "samples", "--images", "5", "--codec-images", "3", "--size", "160x96",
                  "--batch-size", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["ok"] is True and report["failed_steps"] == report["skipped_steps"] == [], report
    assert report["device"] == "cpu"
    assert all(report[s]["ok"] for s in ("env", "photos", "tests", "codec", "actors", "compress")), report

    env = report["env"]
    assert env["cuda_available"] is False and env["torch"] and env["device_name"] and env["python"]
    photos = report["photos"]  # every crop is 160x96: the samples are larger
    assert photos["images"] == 5 and abs(photos["megapixels"] - 5 * 160 * 96 / 1e6) < 1e-6

    tests = report["tests"]  # the CUDA tests were collected and skipped, none ran
    assert tests["exit_code"] == 0 and tests["tests"] >= 3 and tests["skipped"] == tests["tests"]
    assert tests["passed"] == tests["failed"] == tests["errors"] == 0

    codec = report["codec"]
    assert codec["device"] == "cpu" and codec["images"] == 3
    assert abs(codec["megapixels"] - 3 * 160 * 96 / 1e6) < 1e-6
    assert codec["encode_mp_s"] > 0 and codec["decode_mp_s"] > 0
    assert codec["exact"] is True and codec["mismatches"] == 0 and codec["mismatched"] == []
    assert codec["bytes"] > 0 and 0 < codec["bpp"] < 8 and codec["psnr_mean"] > 20
    assert codec["gpu_util_mean"] is None  # no GPU sampled on CPU

    actors = report["actors"]  # compress's load_batch and CompressActor, called without Ray
    assert actors["ray_imported"] is False
    assert actors["device"] == "cpu" and actors["gpus_per_worker"] == 0 and actors["batch_size"] == 4
    assert actors["images"] == 5 and actors["batches"] == 2 and abs(actors["megapixels"] - 5 * 160 * 96 / 1e6) < 1e-6
    assert actors["rows_by_status"] == {"ok": 5} and actors["rows_by_codec"] == {"tng": 5}
    assert actors["mp_s"] > 0 and actors["steady_mp_s"] > 0 and actors["wall_s"] >= actors["actor_s"] > 0
    assert actors["construct_s"] >= 0 and actors["first_batch_s"] > 0 and actors["bytes_out"] > 0
    assert actors["shards"] == 1 and actors["rows_checked"] == 5 and actors["mismatches"] == 0
    assert actors["streams_exact"] is True
    assert actors["gpu_util_mean"] is None and actors["gpu_samples"] == 0 and actors["torch_max_memory_mib"] is None

    compress = report["compress"]
    assert compress["images"] == compress["requested"] == 5 and compress["errors"] == 0
    assert compress["wall_s"] > 0 and compress["mp_s"] > 0 and compress["gpus_per_worker"] == 0
    assert compress["gpu_util_mean"] is None and compress["gpu_samples"] == 0
    assert compress["audit_ok"] is True
    assert compress["audit"]["rows_checked"] == 5 and compress["audit"]["mismatches"] == 0

    log = (out / "gpu-check.log").read_text()
    assert log == r.stdout  # everything printed is in the log
    assert "tests/test_cuda.py" in log and "5 rows checked, 0 problems" in log
    assert "gpu-check: device cpu; codec encode" in log and "all steps ok" in log
    assert "one CompressActor on cpu" in log and "Ray imported: False" in log


def test_a_failed_step_is_recorded_and_the_rest_run(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    r = gpu_check(out, PHOTOS=str(tmp_path / "empty"), IMAGES="2")  # the env variables the script maps to options
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["ok"] is False and report["failed_steps"] == ["photos", "codec", "actors", "compress"]
    assert report["env"]["ok"] and report["tests"]["ok"]  # the steps after a failure still ran
    assert "no photos" in report["photos"]["error"] and str(tmp_path / "empty") in report["photos"]["error"]
    assert all("no photos" in report[s]["error"] for s in ("codec", "actors", "compress"))
    assert "FAILED: photos, codec, actors, compress" in (out / "gpu-check.log").read_text()


def test_compress_without_ray_is_a_skip(tmp_path, monkeypatch):
    """As on the lent GPU machines: no Ray, so the compress step says why it cannot run, as a skip."""
    mod = load_gpu_check()
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    a = SimpleNamespace(gpus_per_worker=0.25, quality=4.0, effort=None, workers=1, batch_size=8, step_timeout=60)
    with pytest.raises(mod.StepSkipped, match="Ray is not installed"):
        mod.step_compress(a, tmp_path, "cpu", {"ok": True, "images": 2, "megapixels": 0.1})
    report = {"failed_steps": [], "skipped_steps": ["compress"], "device": "cuda",
              "compress": {"ok": None, "skip_reason": "no Ray"}}
    assert mod.headline(report) == "gpu-check: device cuda; skipped: compress; the others ok"


def test_gpu_samples_are_summarised():
    """nvidia-smi's "util, memory" lines (one per GPU per sample; "[N/A]" where unsupported)."""
    mod = load_gpu_check()
    s = mod.summarise_gpu_samples("40, 1000\n80, 3000\n[N/A], [N/A]\n\n60, 2000\n")
    assert s == {"gpu_util_mean": 60.0, "gpu_util_max": 80, "gpu_mem_used_max_mib": 3000, "gpu_samples": 3}
    assert mod.summarise_gpu_samples("")["gpu_util_mean"] is None
