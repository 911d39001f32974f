"""`tng train --workers N [--gpus-per-worker G] [--address ADDR]`: the training loop on Ray Train workers.

Each of the N workers runs `jobs.train.fit`, the loop of the single-process path, with the model in
DistributedDataParallel (gloo on CPU, NCCL on GPU): every worker draws its own crops (its seed
depends on its rank), the gradients are averaged over the workers, so the replicas stay
bit-identical. Rank 0 prints, writes OUT/last.pt in the single-process format (so `--resume` and
`tng export` work across both modes) and validates. At the end every rank reports a digest of its
weights and the driver checks that they agree.

Paths (data, OUT, --resume, --val) are opened by the workers themselves: on a multi-node cluster
give the data as an fsspec URL and OUT and --resume in a folder shared by the nodes.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from tng.jobs.common import RunError
from tng.jobs.train import Replicas, fit


class DDPReplicas(Replicas):
    """This Ray Train worker's place among the ranks; torch.distributed is set up by TorchTrainer."""

    def __init__(self) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self._device = str(ray.train.torch.get_device())  # this worker's GPU, or cpu

    def device(self) -> str:
        return self._device

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model)  # DistributedDataParallel; broadcasts rank 0's weights

    def _tensor(self, x) -> torch.Tensor:
        # NCCL moves only GPU tensors; float64 so that a clock in seconds keeps its precision.
        return torch.as_tensor(x, dtype=torch.float64, device=self._device)

    def from_rank0(self, x: float) -> float:
        t = self._tensor([x])
        torch.distributed.broadcast(t, 0)
        return t.item()

    def mean(self, x: np.ndarray) -> np.ndarray:
        t = self._tensor(x)
        torch.distributed.all_reduce(t)
        return (t / self.world).cpu().numpy()

    def gather(self, x: str) -> list[str]:
        out: list[str] = [""] * self.world
        torch.distributed.all_gather_object(out, x)
        return out


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _worker(config: dict) -> dict:
    args = argparse.Namespace(**config)
    if not args.threads:
        # Ray sets OMP_NUM_THREADS=1 in workers; share this node's cores among its workers instead.
        args.threads = max(1, _cores() // ray.train.get_context().get_local_world_size())
    # Each worker decodes the training images itself, from the same path or fsspec URL: they are
    # small, decoding runs in parallel on every node, and the driver (possibly a laptop outside the
    # cluster) never has to hold them; the cost is one copy per worker in memory.
    return fit(args, DDPReplicas())  # the driver gets rank 0's as Result.return_value


def _local_path(p: str | None) -> str | None:
    """Absolute, so that workers, whose working directory may differ, find it; URLs as they are."""
    return p if p is None or "://" in p else os.path.abspath(p)


def _init_ray(address: str | None, workers: int) -> bool:
    """Join the cluster at address (or RAY_ADDRESS), else start a local Ray. Returns True if it started one."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray Train would send the workers' prints to its logger and to stdout: every line twice.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    # log_to_driver: rank 0's progress lines are the job's output.
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # At least one logical CPU per worker so that N workers always fit; threads are set apart.
        ray.init(num_cpus=max(_cores(), workers), include_dashboard=False, log_to_driver=True,
                 _system_config={"prestart_worker_first_driver": False, "enable_metrics_collection": False})
    return True


def train_ray(args: argparse.Namespace) -> dict:
    """Run `fit` on args.workers Ray Train workers; returns rank 0's result (step, elapsed, digests).

    Raises RunError when the run cannot start, a worker fails, or the replicas end up different.
    """
    if args.gpus_per_worker < 0:
        raise RunError("--gpus-per-worker must be at least 0")
    started = _init_ray(args.address, args.workers)
    try:
        if started and not (args.address or os.environ.get("RAY_ADDRESS")):
            _check_local_gpus(args.workers, args.gpus_per_worker)
        result = _trainer(args).fit().return_value
    except ray.train.TrainingFailedError as e:
        raise RunError(_failure_reason(e)) from None
    finally:
        if started:
            ray.shutdown()
    digests = result["digests"]
    if len(set(digests)) != 1:
        raise RunError(f"the workers' weights diverged (digests {', '.join(d[:12] for d in digests)})")
    print(f"{args.workers} worker{'s' * (args.workers > 1)} finished at step {result['step']} "
          f"with identical weights (sha256 {digests[0][:12]})")
    return result


def _worker_config(args: argparse.Namespace) -> dict:
    """args as the workers' `fit` gets them: paths made absolute, the CLI's handler left out."""
    config = {k: v for k, v in vars(args).items() if k != "func"}
    for k in ("data", "out", "resume", "val"):
        config[k] = _local_path(config[k])
    if str(args.init).endswith(".safetensors"):  # else a model id, or None
        config["init"] = _local_path(args.init)
    return config


def _check_local_gpus(workers: int, gpus_per_worker: float) -> None:
    """A local Ray never grows: Ray Train would wait for missing GPUs forever."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus < workers * gpus_per_worker:
        raise RunError(f"{workers}×{gpus_per_worker:g} GPUs asked for; this machine has {gpus:g}")


def _trainer(args: argparse.Namespace) -> ray.train.torch.TorchTrainer:
    resources = {"CPU": 1, **({"GPU": args.gpus_per_worker} if args.gpus_per_worker else {})}
    return ray.train.torch.TorchTrainer(
        _worker,
        train_loop_config=_worker_config(args),
        # TorchConfig's default backend: NCCL with GPUs, else gloo. Ray Train's controller needs no CPU.
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.workers, use_gpu=args.gpus_per_worker > 0, resources_per_worker=resources),
        # Names Ray Train's own records (in ~/ray_results); rank 0 writes OUT/last.pt itself, not
        # through Ray checkpoints, so that the file stays the single-process one.
        run_config=ray.train.RunConfig(name=f"tng-train-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"),
    )


def _failure_reason(e: ray.train.TrainingFailedError) -> str:
    """One line for a failed run: a worker's own RunError (e.g. no readable images) as it is,
    anything else as the last line of the first failure."""
    failures = list((getattr(e, "worker_failures", None) or {}).values())
    own = next((f for f in failures if isinstance(f, RunError)), None)
    if own is not None:
        return str(own)
    return "training failed: " + str(failures[0] if failures else e).strip().splitlines()[-1]
