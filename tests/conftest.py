"""Shared fixtures: sample photos shipped in the repo and one codec instance per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session")
def codec():
    from codec import Codec

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
