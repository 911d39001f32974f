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


# A model with a checkerboard context (codec/context.py) must decode forever too, but none ships.
# Test model 1000 is shipped model 7 plus a fixed, untrained context (nonzero, so that it moves the
# non-anchors' means and tables). Only the context's integer tensors are stored (context.safetensors.xz,
# 0.4 MB); the weights file is rebuilt here from them and model 7's shipped tensors, written without
# the safetensors library so that its bytes, and the digest every golden stream records, depend on
# nothing else. tests/golden/make_context_golden.py wrote both, once.
CONTEXT_GOLDEN = GOLDEN / "context"
CONTEXT_EXPECTED = json.loads((CONTEXT_GOLDEN / "expected.json").read_text())
CONTEXT_MODEL_ID = 1000  # test-only: shipped ids count up from 1
_SAFETENSORS_DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.float64: "F64", torch.int8: "I8",
                       torch.int16: "I16", torch.int32: "I32", torch.int64: "I64"}


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file: 8-byte little-endian header length, JSON header (padded to 8 bytes), the
    tensors' little-endian bytes, in name order."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        arr = t.numpy()
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def context_model_weights(folder: Path) -> Path:
    """Writes test model 1000's weights file into folder (see above) and returns its path."""
    import lzma

    import safetensors.torch

    from tng.codec.registry import SHIPPED_DIR, _header_metadata

    base = lzma.decompress((SHIPPED_DIR / "tng-7.safetensors.xz").read_bytes())
    tensors = safetensors.torch.load(base)
    context = safetensors.torch.load(lzma.decompress((CONTEXT_GOLDEN / "context.safetensors.xz").read_bytes()))
    assert context and all(k.startswith("context.") for k in context)
    metadata = _header_metadata(base) | {"model_id": str(CONTEXT_MODEL_ID), "name": "test-7-checkerboard",
                                         "context": "checkerboard"}
    path = folder / f"tng-{CONTEXT_MODEL_ID}.safetensors"
    path.write_bytes(_safetensors_bytes(tensors | context, metadata))
    return path


@pytest.fixture(scope="module")
def context_model_path(tmp_path_factory):
    """A TNG_MODEL_PATH folder holding test model 1000's rebuilt weights."""
    folder = tmp_path_factory.mktemp("context-model")
    path = context_model_weights(folder)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CONTEXT_EXPECTED["weights_sha256"], \
        "the rebuilt weights of test model 1000 changed: the golden streams' digests no longer match them"
    return folder


@pytest.mark.parametrize("name", sorted(CONTEXT_EXPECTED["files"]))
def test_context_model_golden_file_decodes_unchanged(name, context_model_path, monkeypatch):
    """Found through TNG_MODEL_PATH as archives' own models are, and decoded through the context."""
    from tng.codec.registry import load_model

    monkeypatch.setenv("TNG_MODEL_PATH", str(context_model_path))
    data = (CONTEXT_GOLDEN / name).read_bytes()
    want = CONTEXT_EXPECTED["files"][name]
    assert hashlib.sha256(data).hexdigest() == want["file_sha256"]
    dec = Codec(device="cpu").decode(data)
    assert dec.header.model_id == CONTEXT_MODEL_ID and load_model(CONTEXT_MODEL_ID).context is not None
    image = dec.image
    assert list(image.size) == want["size"] and image.mode == want["mode"]
    assert hashlib.sha256(np.asarray(image).tobytes()).hexdigest() == want["pixels_sha256"]


def test_golden_files_cover_the_adaptation_section():
    """Version-2 files (post-filters) of the default model, with every filter size the format has and
    tiles without one beside tiles with one."""
    from tng.codec import container
    from tng.codec.postfilter import KERNELS, unpack_section
    from tng.codec.registry import DEFAULT_MODEL_ID

    sizes = set()
    for name in EXPECTED:
        if not name.startswith(f"m{DEFAULT_MODEL_ID}-"):
            continue
        header, sections = container.unpack((GOLDEN / name).read_bytes(), 10**9)
        if header.version == container.ADAPTED_VERSION:
            sizes |= {f.size if f else None for f in unpack_section(sections[3], len(sections) - 4)}
    assert sizes >= set(KERNELS) | {None}


GOLDEN_ARCHIVE = GOLDEN / "archive-2026-12"


def test_golden_archive_restores_every_form(ray_local, tmp_path):
    """An archive written on 2026-12-05 (tests/golden/make_golden_archive.py) with a row of every form
    restores unchanged: the exact forms (TNG, lossless JPEG XL, JPEG recompressed, source) to the same
    pixels or bytes; lossy AVIF and JPEG XL, whose decoders promise no bit-exactness across CPUs, to
    the same PSNR against their source (rebuilt from samples/) as the row recorded."""
    import importlib.util

    import imagecodecs

    from tng.codec.metrics import psnr
    from tng.jobs.cli import main

    spec = importlib.util.spec_from_file_location("make_golden_archive", GOLDEN / "make_golden_archive.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)  # its corpus and hashing, without putting tests/golden on sys.path
    corpus, restored_sha256 = maker.corpus, maker.restored_sha256

    expected = json.loads((GOLDEN_ARCHIVE / "expected.json").read_text())
    assert {e["codec"] for e in expected.values()} == {"tng", "avif", "jxl", "jxl-lossless", "jpeg-jxl", "source"}
    assert main(["decompress", str(GOLDEN_ARCHIVE), str(tmp_path / "out"), "--workers", "1"]) == 0
    corpus(tmp_path / "src")
    for key, want in expected.items():
        data = (tmp_path / "out" / want["restored_as"]).read_bytes()
        if want["codec"] in ("avif", "jxl"):
            source = next((tmp_path / "src").glob(f"*/{key}"))
            got = psnr(imagecodecs.png_decode(source.read_bytes()), imagecodecs.png_decode(data))
            assert abs(got - want["psnr"]) < 0.05, key
        else:
            assert restored_sha256(data) == want["restored_sha256"], key
