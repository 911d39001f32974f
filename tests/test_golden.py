"""Archives must decode forever: golden files from every shipped model id decode to their recorded pixels."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from codec import Codec

GOLDEN = Path(__file__).parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


def test_every_shipped_model_has_golden_files():
    from codec.registry import SHIPPED_DIR, _weight_files

    shipped = {mid for mid, path in _weight_files().items() if path.parent == SHIPPED_DIR}
    covered = {int(name[1:].split("-")[0]) for name in EXPECTED}
    assert shipped <= covered


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_file_decodes_unchanged(name):
    data = (GOLDEN / name).read_bytes()
    want = EXPECTED[name]
    assert hashlib.sha256(data).hexdigest() == want["file_sha256"]
    image = Codec(device="cpu").decode(data).image
    assert list(image.size) == want["size"] and image.mode == want["mode"]
    assert hashlib.sha256(np.asarray(image).tobytes()).hexdigest() == want["pixels_sha256"]
