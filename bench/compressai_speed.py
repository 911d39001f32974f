"""CompressAI mbt2018-mean (MeanScaleHyperprior) encode/decode time on one image, for bench/codec_speed.py.

Runs in a side venv (compressai pins numpy<2; TNG needs numpy>=2), so it imports nothing from tng;
bench/codec_speed.py --compressai-python PATH runs it and merges its output. Standalone:

    /work/sidevenv-compressai/bin/python bench/compressai_speed.py IMAGE.png [--threads 2] [--runs 5]

The weights are random (nothing is downloaded): the networks cost the same as trained ones, but the
entropy coding is of random latents, so the file size and the PSNR mean nothing and are not reported;
the coding time may differ from a trained model's too. Encode = `model.compress(x)` (analysis, hyper
analysis/synthesis, entropy coding), decode = `model.decompress(strings, shape)`; image loading and
tensor conversion are outside the timings. One JSON line per configuration on stdout.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image

# compressai.zoo's mbt2018_mean: qualities 1-4 use N=128, M=192; qualities 5-8 use N=192, M=320.
CONFIGS = ((128, 192), (192, 320))


def load(path: str) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1]; H and W must be multiples of 64 (the model's total stride)."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    if a.shape[0] % 64 or a.shape[1] % 64:
        raise SystemExit(f"{path}: {a.shape[1]}x{a.shape[0]} is not a multiple of 64")
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float().div(255)


@torch.no_grad()
def time_config(x: torch.Tensor, n: int, m: int, runs: int) -> dict:
    from compressai.models import MeanScaleHyperprior

    torch.manual_seed(0)
    model = MeanScaleHyperprior(N=n, M=m).eval()
    model.update(force=True)  # builds the entropy coders' CDF tables, which compress() needs
    out = model.compress(x)  # warm-up
    model.decompress(out["strings"], out["shape"])
    te, td = [], []
    for _ in range(runs):
        t = time.perf_counter()
        out = model.compress(x)
        te.append(time.perf_counter() - t)
        t = time.perf_counter()
        model.decompress(out["strings"], out["shape"])
        td.append(time.perf_counter() - t)
    return {"codec": "CompressAI mbt2018-mean", "settings": f"N={n}, M={m}, random init",
            "encode_s": statistics.median(te), "decode_s": statistics.median(td),
            "encode_runs": te, "decode_runs": td}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("image", help="PNG (or any Pillow-readable) image, sides multiples of 64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    import compressai

    torch.set_num_threads(a.threads)
    x = load(a.image)
    versions = {"torch": torch.__version__, "compressai": compressai.__version__, "numpy": np.__version__}
    for n, m in CONFIGS:
        print(json.dumps({**time_config(x, n, m, a.runs), "versions": versions}), flush=True)


if __name__ == "__main__":
    main()
