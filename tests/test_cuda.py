"""The codec and training on a CUDA device; skipped where there is none (CI has none).

The format's promise is that a bitstream decodes to the same pixels on every machine and device:
a GPU analysis may choose other latents than a CPU one (float kernels differ), but whatever stream
either writes, both decode bit-identically, and the encoder's reconstruction is those pixels.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def gpu():
    from tng.codec import Codec

    return Codec(device="cuda")


@pytest.mark.parametrize("synthesis", ["exact", "int8", "int8-context"])
def test_streams_decode_identically_on_cpu_and_cuda(synthesis, photo, tmp_path):
    from tng.codec import Codec

    from test_context import _with_context
    from test_intsynth import int8_weights

    model = None  # the default
    if synthesis == "int8":  # model 6 with the 8-bit synthesis
        model = int8_weights(tmp_path)
    elif synthesis == "int8-context":  # model 7 with a checkerboard context that moves the tables
        model = _with_context(tmp_path, "ctx-cuda", 0.004)
    gpu, codec = Codec(device="cuda", model=model), Codec(device="cpu", model=model)
    for writer in (gpu, codec):
        for q in (1, 4.5, 8):
            enc = writer.encode(photo, quality=q)
            on_cpu, on_gpu = codec.decode(enc.data).rgb, gpu.decode(enc.data).rgb
            assert np.array_equal(on_cpu, on_gpu), (writer.device, q)
            assert np.array_equal(enc.reconstruction, on_cpu), (writer.device, q)
    # GPU analysis codes the photo about as well as the CPU one.
    a, b = gpu.encode(photo, quality=4), codec.encode(photo, quality=4)
    assert abs(a.bpp - b.bpp) < 0.02 * b.bpp and abs(a.psnr - b.psnr) < 0.1


def test_batched_encode_on_cuda(gpu, codec, photo):
    crops = [np.ascontiguousarray(photo[y : y + 128, x : x + 192]) for y in (0, 128) for x in (0, 192, 384)]
    encs = gpu.encode_batch(crops + [photo[:97, :150]], quality=3)
    for c, e in zip(crops + [photo[:97, :150]], encs):
        assert np.array_equal(codec.decode(e.data).rgb, e.reconstruction)
        assert abs(e.psnr - codec.encode(c, quality=3).psnr) < 0.2


def test_training_steps_on_cuda(tmp_path, capsys):
    from tng.jobs.cli import main

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((96, 96), Image.BICUBIC).save(data / f"{i}.png")
    assert main(["train", str(data), str(tmp_path / "run"), "--steps", "30", "--batch", "4", "--crop", "64",
                 "--n", "16", "--m", "24", "--lr", "1e-3", "--log-every", "5"]) == 0
    out = capsys.readouterr().out
    assert "training on cuda" in out
    losses = [float(x) for x in re.findall(r"loss ([0-9.]+)", out)]
    assert len(losses) == 6 and losses[-1] < losses[0], losses
