"""Shared fixtures: sample photos shipped in the repo and one codec instance per session."""
from __future__ import annotations

import contextlib
import io
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session")
def codec():
    from tng.codec import Codec

    return Codec(device="cpu")


def sample_rgb(name: str = "coffee.png") -> np.ndarray:
    with Image.open(SAMPLES / name) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A 600x400 natural photo."""
    return sample_rgb("coffee.png")


@pytest.fixture(scope="session")
def small_photo() -> np.ndarray:
    """A 150x97 crop of a photo: odd sizes, fast to code."""
    return np.ascontiguousarray(sample_rgb("chelsea.png")[100:197, 150:300])


@pytest.fixture(scope="session")
def small_tng(codec, small_photo) -> bytes:
    return codec.encode(small_photo, quality=4).data


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback, its endpoint and test credentials in the environment (start it
    before Ray, so that Ray's workers inherit them); everything restored afterwards."""
    import logging
    import os

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec caches filesystems: none may keep an old endpoint
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_ENDPOINT_URL"]}
    os.environ.update(env)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = "http://%s:%d" % server.get_host_and_port()
    yield os.environ["AWS_ENDPOINT_URL"]
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def ray_local(s3):
    """A local Ray of 2 CPUs for the module's tests, started after the moto server (see `s3`)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _system_config={"prestart_worker_first_driver": False, "enable_metrics_collection": False})
    ray.data.DataContext.get_current().execution_options.verbose_progress = False
    yield
    ray.shutdown()


def starved_jpeg() -> bytes:
    """Noise at JPEG quality 1: a file TNG cannot beat at quality 8."""
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG", quality=1)
    return buf.getvalue()


@pytest.fixture
def src(tmp_path):
    """A source folder of every kind of row a compress run writes: PNG, JPEGs (one TNG cannot beat), alpha,
    subfolders, and files that are not images (empty, text, truncated)."""
    d = tmp_path / "src"
    (d / "deep" / "er").mkdir(parents=True)
    shutil.copy(SAMPLES / "chelsea.png", d / "cat.png")
    Image.open(SAMPLES / "coffee.png").crop((0, 0, 200, 150)).save(d / "deep" / "er" / "cup.jpg", quality=95)
    rgba = np.dstack([np.asarray(Image.open(SAMPLES / "chelsea.png"))[:64, :96], np.full((64, 96), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "deep" / "alpha.png")
    (d / "small.jpg").write_bytes(starved_jpeg())
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("not an image")
    (d / "cut.png").write_bytes((SAMPLES / "coffee.png").read_bytes()[:3000])
    return d


@contextlib.contextmanager
def allocation_peak():
    """Peak bytes allocated through Python and numpy inside the block (tracemalloc; numpy reports
    its buffers to it). Proof that a refusal came before any pixel buffer was allocated, where a
    timer would only suggest it and flake on a busy machine. Yields a dict; "peak" is set on exit."""
    box: dict = {}
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield box
    finally:
        box["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def bomb_stream(model_id: int, width: int = 60000, height: int = 60000) -> bytes:
    """A .tng file with intact checksums whose header claims width×height pixels."""
    from tng.codec.container import Header, pack

    return pack(Header(model_id, b"abcd", width, height, 2, 0, 4000, 1024), [b"", b"", b""] + [b"\0" * 8] * 3)
