"""Writes the context-model golden files (tests/golden/context/) and records what they decode to.

    .venv/bin/python tests/golden/make_context_golden.py

Test model 1000 is shipped model 7 with a fixed, untrained checkerboard context: the context's integer
tensors are drawn once (seed below) and stored in context/context.safetensors.xz; test_golden.py
rebuilds the weights file from them (`context_model_weights`). Like make_golden.py, this never
regenerates what exists: the stored context and the golden files stand for archives written by
earlier versions; only missing cases are written.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

HERE = Path(__file__).resolve().parent
OUT = HERE / "context"
sys.path.insert(0, str(HERE.parent))

from make_golden import cases  # noqa: E402
from test_golden import CONTEXT_MODEL_ID, context_model_weights  # noqa: E402

from tng.codec import Codec, open_image  # noqa: E402
from tng.codec.context import CheckerboardContext  # noqa: E402
from tng.codec.registry import load_model, load_weights  # noqa: E402

SEED, LAST_STD = 1000, 0.004  # the last layer's weights N(0, LAST_STD): corrections of a few 1/256
CASES = ("rgb-q2", "rgb-q6.5", "odd-tiled-q3")


def write_context() -> None:
    """The context's integer tensors as a weights file stores them (registry.export_weights)."""
    base = load_model(7).net
    torch.manual_seed(SEED)
    ctx = CheckerboardContext(base.n, base.m)  # layers 0 and 1 as torch initialises them
    with torch.no_grad():
        ctx.layers[-1].weight.normal_(0, LAST_STD)
        ctx.layers[-1].bias.normal_(0, LAST_STD)
    tensors = {}
    for i, (w, b, _) in enumerate(ctx.export()):
        tensors[f"context.{i}.weight"], tensors[f"context.{i}.bias"] = w.to(torch.int16), b.to(torch.int32)
    (OUT / "context.safetensors.xz").write_bytes(lzma.compress(save(tensors), preset=9 | lzma.PRESET_EXTREME))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    if not (OUT / "context.safetensors.xz").exists():
        write_context()
    path = OUT / "expected.json"
    expected = json.loads(path.read_text()) if path.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = context_model_weights(Path(tmp))
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if expected.setdefault("weights_sha256", digest) != digest:
            sys.exit(f"the rebuilt weights changed ({digest}, recorded {expected['weights_sha256']}): fix the rebuild")
        model = load_weights(weights)
        assert model.model_id == CONTEXT_MODEL_ID and model.context is not None
        files = expected.setdefault("files", {})
        for name, (src, opts) in cases().items():
            fname = f"m{CONTEXT_MODEL_ID}-{name}.tng"
            if name not in CASES or fname in files:
                continue  # golden files are never regenerated
            codec = Codec(device="cpu", model=model, tile=opts.get("tile", 1024))
            enc = codec.encode(open_image(src), quality=opts["quality"])
            dec = codec.decode(enc.data)
            assert np.array_equal(dec.rgb, enc.reconstruction)
            (OUT / fname).write_bytes(enc.data)
            files[fname] = {"size": list(dec.image.size), "mode": dec.image.mode,
                            "pixels_sha256": hashlib.sha256(np.asarray(dec.image).tobytes()).hexdigest(),
                            "file_sha256": hashlib.sha256(enc.data).hexdigest()}
            print(fname, len(enc.data), "bytes", f"{enc.psnr:.2f} dB")
    path.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
