"""`tng train`: rate–distortion training of the TNG model on a folder of images.

Each step draws random crops with random flips from images decoded once into memory, samples one
quality per crop (`sample_qualities`: every integer level weighs the same; a bias towards high
qualities had pushed quality 1 above the bpp range the codec is measured over: docs/training-log.md),
and minimises λ(q)·255²·MSE + bpp. The rate is that of noisy latents, or with --rate rounded (for
fine-tuning) that of the rounded latents the coder codes. CUDA when present. The photos are held
on the training device and cropped there (`Crops`), and the loop reads the device's figures only
when it logs; --bf16 (autocast; entropy terms and GDN stay fp32), --channels-last and --compile are
the fast path a GPU window takes (tested equal to the plain path within rounding). The log gives
MP/s of crops and the TFLOP/s they make (`flops_per_pixel`).
A checkpoint is written every few minutes and at the end; `--resume` continues it, including the
learning-rate schedule, which is a function of the fraction of the time (or step) budget spent.
--state-out writes each checkpoint also as a state folder of small files (jobs/train_state.py) that
--resume takes, and --window-minutes ends a process early on the whole budget's schedule: together
they chain short GPU windows into one run (scripts/gpu-train).
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
from collections.abc import Callable
from pathlib import Path

import fsspec
import numpy as np
import torch

from tng.codec.images import IMAGE_EXTENSIONS
from tng.codec.loss import rd_loss
from tng.codec.model import LAMBDAS, LEVELS, STRIDE, TNGModel, lambda_at, remap_levels
from tng.jobs.common import RunError  # a training run that cannot proceed raises it, as every job does


def load_images(root: str, max_side: int = 2048, limit: int = 0) -> list[np.ndarray]:
    """Decode the images under root (a folder or any fsspec URL, recursively) to RGB uint8 arrays.

    Unreadable files are skipped with a note on stderr: one bad file must not stop a training run.
    """
    from PIL import Image

    from tng.codec import TNGError, open_image

    fs, path = fsspec.core.url_to_fs(root)
    try:
        paths = sorted(p for p in fs.find(path) if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS)
    except OSError as e:
        raise RunError(f"cannot list {root}: {e}") from None
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
        raise RunError(f"no readable images under {root}")
    return images


def validate(model: TNGModel, images: list[np.ndarray], workdir: Path, qualities=(1, 4, 8)) -> list[tuple[float, float, float]]:
    """Real bitstreams: export the weights, encode every image at each quality with the codec.

    Returns (quality, mean bpp, mean PSNR) per quality; bpp from the .tng bytes, PSNR of the decoded RGB.
    """
    from tng.codec import Codec
    from tng.codec.registry import export_weights, load_weights

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


class Crops:
    """The training photos as uint8 tensors on the training device, and random crops cut there.

    On a GPU the photos stay resident (the 600 training photos take ~0.3 GB), so a step moves
    nothing from the host: what kept a lent H200 at 1–2 % (docs/training-log.md). The draws
    (photo, offset, flips) come from the caller's random.Random, so a run reseeded at a step
    (on resume) cuts the same crops on any device.
    """

    def __init__(self, images: list[np.ndarray], crop: int, device: str | torch.device) -> None:
        self.crop, self.images = crop, []
        for im in images:
            h, w = im.shape[:2]
            if h < crop or w < crop:  # tiny image: mirrored up to the crop size
                im = np.pad(im, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), mode="reflect")
            self.images.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).to(device))

    def batch(self, batch: int, rng: random.Random) -> torch.Tensor:
        """(batch, 3, crop, crop) uint8 random crops with random flips; scaled to [0, 1] by the caller."""
        c, out = self.crop, []
        for _ in range(batch):
            im = self.images[rng.randrange(len(self.images))]
            h, w = im.shape[1:]
            y, x = rng.randrange(h - c + 1), rng.randrange(w - c + 1)
            t = im[:, y : y + c, x : x + c]
            flips = [d for d in (2, 1) if rng.random() < 0.5]  # left–right, then up–down
            out.append(t.flip(flips) if flips else t)
        return torch.stack(out)


def sample_qualities(n: int, device: str | torch.device) -> torch.Tensor:
    """n continuous qualities in [1, LEVELS], each integer level with the same share of the samples.

    Uniform in [0.5, LEVELS + 0.5], clamped: a level's samples are those within ½ of it, so the end
    levels, which plain uniform [1, LEVELS] gives half as many (and half the gradient to their gain
    vectors), are trained as much as the others.
    """
    return (0.5 + LEVELS * torch.rand(n, device=device)).clamp_(1, LEVELS)


def learning_rate(base: float, progress: float, since_start: int = -1, warmup: int = 0) -> float:
    """Constant, then ÷10 for the last 15% and ÷30 for the last 5% of the budget; over the first
    `warmup` steps of a fresh optimiser (since_start steps ago) it ramps up linearly."""
    lr = base * (1.0 if progress < 0.85 else 0.1 if progress < 0.95 else 1 / 30)
    return lr * min(1.0, (since_start + 1) / warmup) if warmup and since_start >= 0 else lr


def flops_per_pixel(model: TNGModel, rounded_rate: bool = False) -> float:
    """Floating-point operations of one training step (forward and backward) per crop pixel, as
    torch counts them (convolutions and matrix products; the element-wise rest is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    side, dev = 2 * STRIDE, model.log_gain.device
    x = torch.rand(1, 3, side, side, device=dev)
    with FlopCounterMode(display=False) as counter:
        r = model(x, torch.full((1,), 4.0, device=dev), rounded_rate=rounded_rate)
        rd_loss(r["x_hat"], x, r["bits_y"] + r["bits_z"], lambda_at(torch.full((1,), 4.0, device=dev))).loss.sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / side**2


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
               bf16: bool, rounded_rate: bool = False, stage: str = "rd") -> torch.Tensor:
    """One optimiser step on the RD loss (codec/loss.py); returns (loss, bpp, PSNR) of the batch as
    a tensor on the batch's device: the loop reads it only when it logs, so that a GPU is not
    made to wait for the host at every step.

    Stage int8-synthesis: the rate is fixed (only the synthesis learns), and the loss is each crop's
    log MSE, so that every quality's PSNR counts alike; λ·MSE would weigh quality 8 430× quality 1
    and trade the low qualities away (measured: docs/training-log.md, the 8-bit synthesis)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        r = model(x, q, rounded_rate=rounded_rate)
    rd = rd_loss(r["x_hat"], x, r["bits_y"] + r["bits_z"], lambda_at(q))
    bpp, mse = rd.bpp, rd.mse
    loss = torch.log(mse.clamp_min(1e-10)).mean() if stage == "int8-synthesis" else rd.loss.mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()  # under DDP this also averages the gradients over the ranks
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return torch.stack([loss, bpp.mean(), (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()]).detach()


def fit(args: argparse.Namespace, replicas: Replicas | None = None) -> dict:
    """The training loop, run by each rank; rank 0 alone prints, checkpoints and validates.

    Returns the final step, elapsed seconds and every rank's weights digest.
    """
    rep = replicas or Replicas()
    say = print if rep.rank == 0 else _silent
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    device = _prepare_device(rep.device(), args.threads)
    ck = load_checkpoint(args.resume, device) if args.resume else None
    run = Run(args, rep, _initial_model(args, ck, device, say), device, say)
    if ck:
        run.restore(ck)
    if rep.rank:
        torch.manual_seed(crop_seed(args.seed, rep.rank, run.step))  # this rank's own qualities and noise
    # After restore: DDP broadcasts rank 0's weights. It shares model's parameters, so the optimiser,
    # checkpoints and validation keep using run.model.
    if args.channels_last:  # NHWC: the layout tensor cores and oneDNN's fast convolutions read
        run.model.to(memory_format=torch.channels_last)
    net = rep.wrap(run.model)
    t0 = time.time()
    images = load_images(args.data)
    say(f"{len(images)} images decoded in {time.time() - t0:.1f}s; training on {device}"
        f"{' (bf16)' if args.bf16 else ''}{' (channels-last)' if args.channels_last else ''}{' (compiled)' if args.compile else ''}")
    if args.val and rep.rank == 0:
        run.val = [center_crop(im, args.val_crop) for im in load_images(args.val, limit=args.val_images)]
    run.train(net, images)
    run.finish()
    say(f"done: step {run.step}, {run.elapsed / 60:.1f} min; checkpoint {run.out / 'last.pt'}")
    return {"step": run.step, "elapsed": run.elapsed, "digests": rep.gather(weights_digest(run.model.state_dict()))}


def load_checkpoint(path: str, device: str) -> dict:
    """A checkpoint to resume: a last.pt file, or a state folder (jobs/train_state.py)."""
    from tng.jobs.train_state import is_state, load_state

    if is_state(path):
        return load_state(path, device)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError) as e:
        raise RunError(f"cannot resume {path}: {e}") from None


def _silent(*args, **kwargs) -> None:
    """`print` for the ranks other than 0, which train without a word."""


def _prepare_device(device: str, threads: int) -> str:
    if torch.device(device).type == "cpu" and threads:
        torch.set_num_threads(threads)
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: pick the fastest kernels once
        torch.backends.cudnn.allow_tf32 = True  # TF32 where fp32 remains (torch's default for convolutions)
        torch.set_float32_matmul_precision("high")  # and for matrix products
    return device


def _initial_model(args: argparse.Namespace, ck: dict | None, device: str, say: Callable[..., None]) -> TNGModel:
    """A fresh model of a checkpoint's size (its weights are loaded with the optimiser's), or of
    shipped weights (--init), or of --n/--m."""
    if ck:
        model = TNGModel(ck["n"], ck["m"], ck.get("synthesis", "exact"), ck.get("context")).to(device)
        if args.stage == "int8-synthesis":
            model.requires_grad_(False).g_s.requires_grad_(True)
        return model
    if args.init:
        return _fine_tuning_start(args.init, say, args.stage, args.data, args.context).to(device)
    if args.stage != "rd":
        raise RunError(f"--stage {args.stage} fine-tunes existing weights: give --init (or --resume)")
    return TNGModel(args.n, args.m, context=_context_arg(args.context)).to(device)


def _context_arg(context: str | None) -> str | None:
    return None if context in (None, "none") else context


def _fine_tuning_start(init: str, say: Callable[..., None], stage: str = "rd", data: str | None = None,
                       context: str | None = None) -> TNGModel:
    """A trainable copy of shipped weights (a model id or a .safetensors file), gains moved to our λ table.
    Stage int8-synthesis: the copy gets the 8-bit synthesis, calibrated on the training images when
    the weights had none, and only g_s is left trainable (quantisation-aware fine-tuning).
    context ("checkerboard", "none"; default: the weights' own): a context model the weights lack
    starts as one that changes nothing (codec/context.py), to be trained jointly with the rest."""
    from tng.codec.registry import load_model, load_weights

    loaded = load_weights(init) if init.endswith(".safetensors") else load_model(int(init))
    synthesis = "int8" if stage == "int8-synthesis" else loaded.net.synthesis
    ctx = loaded.net.context_kind if context is None else _context_arg(context)
    model = TNGModel(loaded.net.n, loaded.net.m, synthesis, ctx)
    state = {k: v for k, v in loaded.net.state_dict().items() if ctx or not k.startswith("context.")}
    same = loaded.net.synthesis == synthesis and loaded.net.context_kind == ctx
    missing, _ = model.load_state_dict(state, strict=same)
    if not same and any(not k.startswith(("int8.", "context.")) for k in missing):
        raise RunError(f"cannot start from {init}: its weights lack {missing[:3]}")
    if ctx and not loaded.net.context_kind:
        say(f"{ctx} context model added, starting as one that changes nothing")
    if synthesis == "int8" and loaded.net.synthesis != "int8":
        calibrate_int8(model, load_images(data, limit=CALIBRATION_IMAGES))
        say(f"int8 synthesis calibrated on {CALIBRATION_IMAGES} training images")
    if loaded.lambdas != LAMBDAS:  # gains trained for another λ table (models 1–4): move them to ours
        with torch.no_grad():
            for p in (model.log_gain, model.log_inv_gain):
                p.copy_(remap_levels(p, loaded.lambdas, LAMBDAS))
        say(f"gain vectors moved from λ {loaded.lambdas[0]:.4g}–{loaded.lambdas[-1]:.4g} to {LAMBDAS[0]:.4g}–{LAMBDAS[-1]:.4g}")
    say(f"initialised from model {loaded.model_id} ({loaded.name})")
    model.train().requires_grad_(stage != "int8-synthesis")
    if stage == "int8-synthesis":  # the bitstream stays model's own: only the decoder's network learns
        model.g_s.requires_grad_(True)
    return model


CALIBRATION_IMAGES = 200


def calibrate_int8(model: TNGModel, images: list[np.ndarray], crop: int = 512) -> None:
    """Set the int8 synthesis' activation steps from centre crops of images at qualities 1, 4 and 8
    (the largest activations come with the rare saturated or high-contrast image: many images)."""
    latents = []
    for im in images:
        x = torch.from_numpy(np.array(center_crop(im, crop))).permute(2, 0, 1)[None].float().div_(255)
        x = x[:, :, : x.shape[2] // STRIDE * STRIDE, : x.shape[3] // STRIDE * STRIDE]
        if x.shape[2] and x.shape[3]:
            latents += [model.synthesis_input(x, torch.tensor([float(q)])) for q in (1, 4, LEVELS)]
    model.int8.calibrate(model.g_s, latents)


class Run:
    """One rank's training run: its model and optimiser, where it stands in the budget, and the
    loop's steps (`train`, `finish`) with what they do on the way: log, checkpoint, validate."""

    def __init__(self, args: argparse.Namespace, rep: Replicas, model: TNGModel, device: str,
                 say: Callable[..., None]) -> None:
        self.args, self.rep, self.say = args, rep, say
        self.model, self.device = model, device
        self.opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        self.step, self.elapsed = 0, 0.0  # elapsed: seconds of training over every resumed run
        self.opt_start = 0  # the step this optimiser's state began at (the warm-up counts from it)
        self.pixels = 0  # crop pixels trained on, over every resumed run and rank
        self.compiled: torch.nn.Module | None = None  # with --compile: the compiled net, once made
        self.rng = random.Random(crop_seed(args.seed, rep.rank, 0))
        self.val: list[np.ndarray] = []  # validation crops, on rank 0 with --val
        self.out = Path(args.out)
        if rep.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)

    def restore(self, ck: dict) -> None:
        """Continue a checkpoint: weights, optimiser, budget spent, and the crop sampler's seed."""
        self.model.load_state_dict(ck["model"])
        self.step, self.elapsed = int(ck["step"]), float(ck["elapsed"])
        self.pixels = int(ck.get("pixels") or 0)
        if "optimizer" in ck:
            self.opt.load_state_dict(ck["optimizer"])
            self.opt_start = int(ck.get("opt_start") or 0)
        else:  # a state without Adam's moments: a fresh Adam, warmed up from here
            self.opt_start = self.step
        self.rng.seed(crop_seed(self.args.seed, self.rep.rank, self.step))
        fresh = "" if "optimizer" in ck else f"; Adam restarts, warm-up {self.args.warmup_steps} steps"
        self.say(f"resumed {self.args.resume} at step {self.step} ({self.elapsed / 60:.1f} min){fresh}")

    def budget_progress(self) -> float:
        """The fraction of the step or time budget spent, whichever is further along."""
        p = []
        if self.args.minutes:
            p.append(self.elapsed / (self.args.minutes * 60))
        if self.args.steps:
            p.append(self.step / self.args.steps)
        return max(p) if p else 0.0

    def train(self, net: torch.nn.Module, images: list[np.ndarray]) -> None:
        """Steps of net (the model, or its DDP wrapper) until the budget is spent, logging every
        --log-every steps; rank 0 checkpoints every --checkpoint-minutes and validates every --val-minutes."""
        args, rep, device = self.args, self.rep, self.device
        crops = Crops(images, args.crop, device)
        memory = torch.channels_last if args.channels_last else torch.contiguous_format
        self.flops_px = flops_per_pixel(self.model, args.rate == "rounded") if rep.rank == 0 else 0.0
        last_save, last_val, stats = time.time(), time.time(), []
        start_elapsed, start_time = self.elapsed, time.time()
        self.last_log = (time.time(), self.pixels)
        while self.budget_progress() < 1.0 and not self.window_spent(start_elapsed):
            lr = learning_rate(args.lr, self.budget_progress(), self.step - self.opt_start, args.warmup_steps)
            for g in self.opt.param_groups:
                g["lr"] = lr
            x = crops.batch(args.batch, self.rng).float().div_(255).contiguous(memory_format=memory)
            q = sample_qualities(args.batch, device)
            stats.append(self._step(net, x, q))
            self.step += 1
            self.pixels += args.batch * args.crop**2 * rep.world
            self.elapsed = rep.from_rank0(start_elapsed + time.time() - start_time)
            if self.step % args.log_every == 0:
                self._log(stats, lr)
                stats.clear()
            if rep.rank == 0 and time.time() - last_save > args.checkpoint_minutes * 60:
                self.save(self.out / "last.pt")
                last_save = time.time()
            if self.val and time.time() - last_val > args.val_minutes * 60:
                self.validate()
                last_val = time.time()

    def _step(self, net: torch.nn.Module, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """One train_step, with --compile through torch.compile; should compiling fail (it happens at
        the first step), the run goes on uncompiled rather than lose a GPU window."""
        args = self.args
        if args.compile and self.compiled is None:
            try:
                self.compiled = torch.compile(net)
                return train_step(self.compiled, self.opt, x, q, args.bf16, args.rate == "rounded", args.stage)
            except Exception as e:  # noqa: BLE001 - any compiler failure: the eager step still works
                self.say(f"torch.compile failed, training uncompiled: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                self.compiled = net
        return train_step(self.compiled or net, self.opt, x, q, args.bf16, args.rate == "rounded", args.stage)

    def window_spent(self, start_elapsed: float) -> bool:
        """--window-minutes: this process stops after its share, the schedule following the whole budget."""
        return bool(self.args.window_minutes) and self.elapsed - start_elapsed >= self.args.window_minutes * 60

    def finish(self) -> None:
        """The last checkpoint and validation, whatever the clocks say."""
        if self.rep.rank == 0:
            self.save(self.out / "last.pt")
        if self.val:
            self.validate()

    def _log(self, stats: list[torch.Tensor], lr: float) -> None:
        loss, bpp, psnr = self.rep.mean(torch.stack(stats).mean(0).cpu().numpy())  # every rank takes part in the mean
        now = time.time()  # after the host waited for the device (above): the interval is real
        mp_s = (self.pixels - self.last_log[1]) / max(now - self.last_log[0], 1e-9) / 1e6
        self.last_log = (now, self.pixels)
        self.say(f"step {self.step} {self.elapsed / 60:.1f}min lr {lr:.1e} loss {loss:.4f} bpp {bpp:.3f} psnr {psnr:.2f} "
                 f"{mp_s:.2f} MP/s {mp_s * self.flops_px / 1e6:.2f} TFLOP/s", flush=True)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        ck = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step,
              "elapsed": self.elapsed, "n": self.model.n, "m": self.model.m, "synthesis": self.model.synthesis,
              "context": self.model.context_kind, "seed": self.args.seed, "opt_start": self.opt_start,
              "pixels": self.pixels}
        torch.save(ck, tmp)
        os.replace(tmp, path)  # a crash mid-write never leaves a broken checkpoint
        if self.args.state_out:  # the same, as files a device can hand back (jobs/train_state.py)
            from tng.jobs.train_state import save_state

            save_state(ck, self.args.state_out, moments=not self.args.state_without_moments)

    def validate(self) -> None:
        """Code the validation crops to real bitstreams; append the results to OUT/validation.csv."""
        self.model.eval()
        rows = validate(self.model, self.val, self.out)
        self.model.train()
        csv = self.out / "validation.csv"
        new = not csv.exists()
        with open(csv, "a") as f:
            if new:
                f.write("step,minutes,quality,bpp,psnr\n")
            for q, b, p in rows:
                f.write(f"{self.step},{self.elapsed / 60:.1f},{q},{b:.4f},{p:.3f}\n")
        print("validation (real bitstreams): " + "; ".join(f"q{q} {b:.3f} bpp {p:.2f} dB" for q, b, p in rows), flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="training images: a folder or any fsspec URL (s3://, gs://, ...)")
    p.add_argument("out", help="folder for checkpoints (last.pt)")
    p.add_argument("--resume", help="checkpoint to continue from: a last.pt, or a state folder (--state-out)")
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
    p.add_argument("--channels-last", action="store_true", help="NHWC tensors (tensor cores, oneDNN)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step's model (pays on GPUs)")
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="ramp the learning rate up over this many steps of a fresh optimiser (from scratch, or "
                        "resuming a state without Adam's moments)")
    p.add_argument("--window-minutes", type=float, default=0,
                   help="stop after this many minutes of training in this process, the learning-rate schedule "
                        "following the whole --minutes/--steps budget (one GPU window of a chain)")
    p.add_argument("--state-out", help="also write each checkpoint as a state folder of ≤ 15 MiB files "
                                       "(jobs/train_state.py), which --resume takes")
    p.add_argument("--state-without-moments", action="store_true",
                   help="leave Adam's moments out of --state-out (half the bytes; the next run warms Adam up again)")
    p.add_argument("--rate", choices=("noise", "rounded"), default="noise",
                   help="rate estimate: of noisy latents (training from scratch), or of the rounded latents the "
                        "coder codes, with straight-through gradients (fine-tuning: the noisy estimate overstates low rates)")
    p.add_argument("--stage", choices=("rd", "int8-synthesis"), default="rd",
                   help="rd: train every part for rate and distortion; int8-synthesis: quantisation-aware "
                        "fine-tuning of the 8-bit integer synthesis of --init's weights (the encoder and the "
                        "bitstream stay as they are), for export as a new model id")
    p.add_argument("--context", choices=("checkerboard", "none"),
                   help="entropy model of the latents: with a checkerboard context model (codec/context.py), or the "
                        "hyper-prior alone (default: that of --init's weights; hyper-prior alone from scratch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-minutes", type=float, default=5)
    r = p.add_argument_group("several workers (Ray Train, DDP; see jobs/train_ray.py)")
    r.add_argument("--workers", type=int, default=1,
                   help="training processes; each draws --batch crops per step, so a step sees workers×batch")
    r.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per worker (0: CPU workers)")
    r.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS with --workers > 1, else a local Ray)")


if __name__ == "__main__":  # `python -m tng.jobs.train ARGS` is `tng train ARGS`
    from tng.jobs.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
