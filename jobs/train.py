"""`tng train`: rate–distortion training of the TNG model on a folder of images.

Each step draws random crops with random flips from images decoded once into memory, samples one
quality per crop (`sample_qualities`: every integer level weighs the same; a bias towards high
qualities had left quality 1 at 0.5 bpp on photos, above the 0.1–1.5 bpp range the codec is
measured over), and minimises λ(q)·255²·MSE + bpp. The rate is that of noisy latents, or with
--rate rounded (for fine-tuning) that of the rounded latents the coder codes. CUDA when present;
bf16 autocast on request (it is slower than fp32 on CPUs without AVX-512 BF16, such as this
project's AVX2 machines).
A checkpoint is written every few minutes and at the end; `--resume` continues it, including the
learning-rate schedule, which is a function of the fraction of the time (or step) budget spent.
With --val, the weights are exported every few minutes and validation images are coded to real
bitstreams; the results go to OUT/validation.csv (quality against steps and wall-clock). --init
fine-tunes shipped weights.
With --workers N the same loop runs on N Ray Train workers under DDP (jobs/train_ray.py), and the
checkpoints are the same, so a run can be resumed in either mode.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from pathlib import Path

import fsspec
import numpy as np
import torch

from codec.images import IMAGE_EXTENSIONS
from codec.loss import rd_loss
from codec.model import LAMBDAS, LEVELS, STRIDE, TNGModel, lambda_at, remap_levels


class TrainError(Exception):
    """The training run cannot proceed (no readable images, bad worker settings, diverged replicas).

    str(error) is the one-line reason; jobs/cli.py turns it into a message and exit status 1.
    """


def load_images(root: str, max_side: int = 2048, limit: int = 0) -> list[np.ndarray]:
    """Decode the images under root (a folder or any fsspec URL, recursively) to RGB uint8 arrays.

    Unreadable files are skipped with a note on stderr: one bad file must not stop a training run.
    """
    from PIL import Image

    from codec import TNGError, open_image

    fs, path = fsspec.core.url_to_fs(root)
    try:
        paths = sorted(p for p in fs.find(path) if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS)
    except OSError as e:
        raise TrainError(f"cannot list {root}: {e}") from None
    images = []
    for p in paths[: limit or None]:
        try:
            rgb = open_image(fs.cat_file(p)).rgb
        except (TNGError, OSError) as e:
            print(f"skipping {p}: {e}", file=sys.stderr)
            continue
        if max(rgb.shape[:2]) > max_side:
            im = Image.fromarray(rgb)
            im.thumbnail((max_side, max_side), Image.LANCZOS)
            rgb = np.asarray(im)
        images.append(rgb)
    if not images:
        raise TrainError(f"no readable images under {root}")
    return images


def validate(model: TNGModel, images: list[np.ndarray], workdir: Path, qualities=(1, 4, 8)) -> list[tuple[float, float, float]]:
    """Real bitstreams: export the weights, encode every image at each quality with the codec.

    Returns (quality, mean bpp, mean PSNR) per quality; bpp from the .tng bytes, PSNR of the decoded RGB.
    """
    from codec import Codec
    from codec.registry import export_weights, load_weights

    path = workdir / "validation.safetensors"
    export_weights(model.state_dict(), model.n, model.m, 0, path, "validation")
    codec = Codec(device="cpu", model=load_weights(path))
    rows = []
    for q in qualities:
        encs = [codec.encode(im, quality=q) for im in images]
        rows.append((q, float(np.mean([e.bpp for e in encs])), float(np.mean([e.psnr for e in encs]))))
    return rows


def center_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(rgb[y : y + side, x : x + side])


def random_batch(images: list[np.ndarray], batch: int, crop: int, rng: random.Random) -> torch.Tensor:
    """(batch, 3, crop, crop) uint8 random crops with random flips; the caller scales to [0, 1] on its
    device, so a GPU is sent a quarter of the bytes of float pixels."""
    out = np.empty((batch, crop, crop, 3), np.uint8)
    for i in range(batch):
        im = images[rng.randrange(len(images))]
        h, w = im.shape[:2]
        if h < crop or w < crop:  # tiny image: tile it up to the crop size
            im = np.pad(im, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), mode="reflect")
            h, w = im.shape[:2]
        y, x = rng.randrange(h - crop + 1), rng.randrange(w - crop + 1)
        c = im[y : y + crop, x : x + crop]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        if rng.random() < 0.5:
            c = c[::-1]
        out[i] = c
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def sample_qualities(n: int, device: str | torch.device) -> torch.Tensor:
    """n continuous qualities in [1, LEVELS], each integer level with the same share of the samples.

    Uniform in [0.5, LEVELS + 0.5], clamped: a level's samples are those within ½ of it, so the end
    levels, which plain uniform [1, LEVELS] gives half as many (and half the gradient to their gain
    vectors), are trained as much as the others.
    """
    return (0.5 + LEVELS * torch.rand(n, device=device)).clamp_(1, LEVELS)


def learning_rate(base: float, progress: float) -> float:
    """Constant, then ÷10 for the last 15% and ÷30 for the last 5% of the budget."""
    return base * (1.0 if progress < 0.85 else 0.1 if progress < 0.95 else 1 / 30)


class Replicas:
    """The processes that train one model together; this base is a single process.

    jobs/train_ray.py subclasses it for DDP workers. The loop asks it the few things that must agree
    across ranks, so that one loop serves both: a value every rank takes from rank 0 (the clock,
    which decides the LR and the end, so that no rank stops or changes LR a step before another),
    means of logged statistics, and a gather of results.
    """

    rank, world = 0, 1

    def device(self) -> str:
        return "cuda" if torch.cuda.is_available() else "cpu"

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def from_rank0(self, x: float) -> float:
        return x

    def mean(self, x: np.ndarray) -> np.ndarray:
        return x

    def gather(self, x: str) -> list[str]:
        return [x]


def crop_seed(seed: int, rank: int, step: int) -> int:
    """Seed of a rank's crop sampler at a step (reseeded on resume); rank 0 keeps the single-process seeds."""
    return seed + step + (rank << 32)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names and bytes: equal digests mean bit-identical replicas."""
    h = hashlib.sha256()
    for name, t in state.items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, q: torch.Tensor,
               bf16: bool, rounded_rate: bool = False) -> tuple[float, float, float]:
    """One optimiser step on the RD loss (codec/loss.py); returns (loss, bpp, PSNR) of the batch."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        r = model(x, q, rounded_rate=rounded_rate)
    rd = rd_loss(r["x_hat"], x, r["bits_y"] + r["bits_z"], lambda_at(q))
    loss, bpp, mse = rd.loss.mean(), rd.bpp, rd.mse
    opt.zero_grad(set_to_none=True)
    loss.backward()  # under DDP this also averages the gradients over the ranks
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item(), bpp.mean().item(), (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()


def fit(args: argparse.Namespace, replicas: Replicas | None = None) -> dict:
    """The training loop, run by each rank; rank 0 alone prints, checkpoints and validates.

    Returns the final step, elapsed seconds and every rank's weights digest.
    """
    rep = replicas or Replicas()
    main = rep.rank == 0
    say = print if main else lambda *a, **k: None
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    rng = random.Random(crop_seed(args.seed, rep.rank, 0))
    device = rep.device()
    if torch.device(device).type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: pick the fastest kernels once
    ck = torch.load(args.resume, map_location=device, weights_only=True) if args.resume else None
    if ck:
        model = TNGModel(ck["n"], ck["m"]).to(device)
    elif args.init:
        from codec.registry import load_model, load_weights

        init = load_weights(args.init) if args.init.endswith(".safetensors") else load_model(int(args.init))
        model = TNGModel(init.net.n, init.net.m)
        model.load_state_dict(init.net.state_dict())
        if init.lambdas != LAMBDAS:  # gains trained for another λ table (models 1–4): move them to ours
            with torch.no_grad():
                for p in (model.log_gain, model.log_inv_gain):
                    p.copy_(remap_levels(p, init.lambdas, LAMBDAS))
            say(f"gain vectors moved from λ {init.lambdas[0]:.4g}–{init.lambdas[-1]:.4g} to {LAMBDAS[0]:.4g}–{LAMBDAS[-1]:.4g}")
        model = model.train().requires_grad_(True).to(device)
        say(f"initialised from model {init.model_id} ({init.name})")
    else:
        model = TNGModel(args.n, args.m).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, elapsed = 0, 0.0
    out = Path(args.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if ck:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, elapsed = int(ck["step"]), float(ck["elapsed"])
        rng.seed(crop_seed(args.seed, rep.rank, step))
        say(f"resumed {args.resume} at step {step} ({elapsed / 60:.1f} min)")
    if rep.rank:
        torch.manual_seed(crop_seed(args.seed, rep.rank, step))  # this rank's own qualities and noise
    net = rep.wrap(model)  # DDP shares model's parameters, so opt, save and validate use model
    t0 = time.time()
    images = load_images(args.data)
    say(f"{len(images)} images decoded in {time.time() - t0:.1f}s; training on {device}")
    val = [center_crop(im, args.val_crop) for im in load_images(args.val, limit=args.val_images)] if args.val and main else []

    def save(path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "elapsed": elapsed, "n": model.n, "m": model.m}, tmp)
        os.replace(tmp, path)  # a crash mid-write never leaves a broken checkpoint

    def budget_progress() -> float:
        p = []
        if args.minutes:
            p.append(elapsed / (args.minutes * 60))
        if args.steps:
            p.append(step / args.steps)
        return max(p) if p else 0.0

    def run_validation() -> None:
        model.eval()
        rows = validate(model, val, out)
        model.train()
        new = not (out / "validation.csv").exists()
        with open(out / "validation.csv", "a") as f:
            if new:
                f.write("step,minutes,quality,bpp,psnr\n")
            for q, b, p in rows:
                f.write(f"{step},{elapsed / 60:.1f},{q},{b:.4f},{p:.3f}\n")
        print("validation (real bitstreams): " + "; ".join(f"q{q} {b:.3f} bpp {p:.2f} dB" for q, b, p in rows), flush=True)

    last_save, last_val, stats = time.time(), time.time(), []
    start_elapsed, start_time = elapsed, time.time()
    while budget_progress() < 1.0:
        lr = learning_rate(args.lr, budget_progress())
        for g in opt.param_groups:
            g["lr"] = lr
        x = random_batch(images, args.batch, args.crop, rng).to(device).float().div_(255)
        q = sample_qualities(args.batch, device)
        stats.append(train_step(net, opt, x, q, args.bf16, args.rate == "rounded"))
        step += 1
        elapsed = rep.from_rank0(start_elapsed + time.time() - start_time)
        if step % args.log_every == 0:
            l, b, p = rep.mean(np.mean(stats, 0))
            stats.clear()
            say(f"step {step} {elapsed / 60:.1f}min lr {lr:.1e} loss {l:.4f} bpp {b:.3f} psnr {p:.2f}", flush=True)
        if main and time.time() - last_save > args.checkpoint_minutes * 60:
            save(out / "last.pt")
            last_save = time.time()
        if val and time.time() - last_val > args.val_minutes * 60:
            run_validation()
            last_val = time.time()
    if main:
        save(out / "last.pt")
    if val:
        run_validation()
    say(f"done: step {step}, {elapsed / 60:.1f} min; checkpoint {out / 'last.pt'}")
    return {"step": step, "elapsed": elapsed, "digests": rep.gather(weights_digest(model.state_dict()))}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="training images: a folder or any fsspec URL (s3://, gs://, ...)")
    p.add_argument("out", help="folder for checkpoints (last.pt)")
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("--init", help="start from these weights: a model id or a .safetensors file (fine-tuning)")
    p.add_argument("--val", help="folder or URL of validation images, coded to real bitstreams periodically")
    p.add_argument("--val-minutes", type=float, default=10, help="minutes between validations")
    p.add_argument("--val-images", type=int, default=6, help="validation images used (first by name)")
    p.add_argument("--val-crop", type=int, default=512, help="centre crop of each validation image")
    p.add_argument("--steps", type=int, default=0, help="step budget (0: none)")
    p.add_argument("--minutes", type=float, default=0, help="wall-clock budget in minutes (0: none)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128, help=f"crop side, a multiple of {STRIDE}")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--m", type=int, default=160)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fast only on CPUs with AVX-512 BF16, and on GPUs)")
    p.add_argument("--rate", choices=("noise", "rounded"), default="noise",
                   help="rate estimate: of noisy latents (training from scratch), or of the rounded latents the "
                        "coder codes, with straight-through gradients (fine-tuning: the noisy estimate overstates low rates)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-minutes", type=float, default=5)
    r = p.add_argument_group("several workers (Ray Train, DDP; see jobs/train_ray.py)")
    r.add_argument("--workers", type=int, default=1,
                   help="training processes; each draws --batch crops per step, so a step sees workers×batch")
    r.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per worker (0: CPU workers)")
    r.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS with --workers > 1, else a local Ray)")


if __name__ == "__main__":  # `python -m jobs.train ARGS` is `tng train ARGS`
    from jobs.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
