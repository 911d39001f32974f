"""Archives must decode forever: golden files from every shipped model id decode to their recorded pixels."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tng.codec import Codec

GOLDEN = Path(__file__).parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


def test_every_shipped_model_has_golden_files():
    from tng.codec.registry import SHIPPED_DIR, _weight_files

    shipped = {mid for mid, path in _weight_files().items() if path.parent == SHIPPED_DIR}
    covered = {int(name[1:].split("-")[0]) for name in EXPECTED}
    assert shipped <= covered


def test_shipped_weights_are_compressed_and_keep_their_digests(tmp_path):
    """Shipped weights are xz-compressed safetensors (a lent GPU's 64 MiB carries the whole tree); the
    model, its metadata and the digest every stream records are those of the safetensors bytes inside."""
    import lzma

    from tng.codec import TNGError
    from tng.codec.registry import SHIPPED_DIR, _metadata, _weight_files, load_model, load_weights

    shipped = {mid: path for mid, path in _weight_files().items() if path.parent == SHIPPED_DIR}
    assert shipped and all(path.name.endswith(".safetensors.xz") for path in shipped.values())
    packed = shipped[1]
    plain = tmp_path / "tng-1.safetensors"
    plain.write_bytes(lzma.decompress(packed.read_bytes()))
    a, b = load_model(1), load_weights(plain)
    assert a.digest == b.digest == hashlib.sha256(plain.read_bytes()).digest()[:4]
    assert _metadata(packed) == _metadata(plain) == a.metadata
    assert all(torch.equal(x, y) for x, y in zip(a.net.state_dict().values(), b.net.state_dict().values()))
    broken = tmp_path / "broken.safetensors.xz"
    broken.write_bytes(packed.read_bytes()[: 1 << 20])
    with pytest.raises(TNGError, match="broken.safetensors.xz"):
        load_weights(broken)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_file_decodes_unchanged(name):
    data = (GOLDEN / name).read_bytes()
    want = EXPECTED[name]
    assert hashlib.sha256(data).hexdigest() == want["file_sha256"]
    dec = Codec(device="cpu").decode(data)
    image = dec.image
    assert list(image.size) == want["size"] and image.mode == want["mode"]
    assert hashlib.sha256(np.asarray(image).tobytes()).hexdigest() == want["pixels_sha256"]
    if "flags" in want:  # the header cases: flags and metadata sections come back as written
        assert dec.header.flags == want["flags"]
        assert (hashlib.sha256(dec.exif).hexdigest() if dec.exif else None) == want["exif_sha256"]
        assert (hashlib.sha256(dec.icc_profile).hexdigest() if dec.icc_profile else None) == want["icc_sha256"]


def test_golden_files_cover_the_header_cases():
    """EXIF + ICC, 16-bit, palette and CMYK sources, for the default model at least."""
    from tng.codec.images import Flag
    from tng.codec.registry import DEFAULT_MODEL_ID

    mine = {n: w for n, w in EXPECTED.items() if n.startswith(f"m{DEFAULT_MODEL_ID}-") and "flags" in w}
    flags = {w["flags"] for w in mine.values()}
    assert {Flag.REDUCED_16BIT, Flag.FROM_PALETTE, Flag.FROM_CMYK} <= flags
    assert any(w["exif_sha256"] and w["icc_sha256"] for w in mine.values())
