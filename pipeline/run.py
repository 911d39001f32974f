"""Ray setup shared by the jobs: one local Ray by default, an existing cluster with --address; the
one rule that sizes every actor pool (`actor_pool`); and RunError, what a run raises when it cannot
proceed at all (as opposed to one image failing, which is an `error` row).

Actors hold their CPUs for the whole run, so tasks that need a CPU can starve behind them: a silent
hang, measured on 2 cores with num_cpus=1 actors, and on a cluster whenever the actors' whole CPUs
fill the nodes (or a restarted actor fills what a lost node leaves). So the load and write tasks
reserve no CPU and are capped in number instead; locally, actors ask for a fraction of a CPU and
size their torch threads themselves. On clusters whose workers offer TASK_RESOURCE (the files in
infra/ do), the tasks take one each, which keeps them off a head that runs the driver only.
"""
from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass

IN_PROCESS_FILES = 64  # jobs of at most this many files run in the command's process, without Ray (jobs/common.py)
LOCAL_ACTOR_CPUS = 0.5
TASK_CPUS = 0  # load and write tasks: see the module docstring
# On a cluster whose workers offer this custom resource (infra/: one per CPU, none on the head), load
# and write tasks take one each: they then run on the workers only, never on a head kept to the driver.
TASK_RESOURCE = "tng_task"


class RunError(Exception):
    """The run itself cannot proceed (as opposed to one image failing): SRC unreadable, DST unwritable,
    bad settings, a Ray failure. str(error) is the one-line reason; jobs/cli.py alone turns it into a
    message and exit status 1."""


def ray_cause(e: BaseException) -> str:
    """'Type: first line' of what went wrong in a Ray task, out of the wrappers Ray puts around it."""
    while (inner := getattr(e, "cause", None) or e.__cause__) is not None:
        e = inner
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


class _DropMessages(logging.Filter):
    """Drops the log records whose message contains one of `fragments`."""

    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


# Ray Data checks for a free CPU each time a Dataset executes, and one step of a run often starts
# while the last one's tasks still hold theirs. Nothing hangs (see the module docstring: what could,
# takes no CPU), so the "does not have any available CPUs ... will hang" line is a false alarm here.
_NO_FREE_CPU_ALARM = _DropMessages("does not have any available CPUs")


def quiet_ray() -> None:
    """What a normal run prints is progress and its summary: Ray's lines that say nothing a user can
    act on are not shown. (Ray core's one line about actor arguments: jobs/stderr_filter.py.)"""
    importlib.import_module("ray.data")  # it configures its loggers when first imported: ours come after

    # Ray Data warns whenever a stage gets fewer blocks than its pool size: true of every small run,
    # and read by newcomers as a failure. Nothing to act on, so not shown.
    warnings.filterwarnings("ignore", message=r"The (minimum|maximum) number of concurrent", category=UserWarning)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no "execution finished" lines
    # Off a terminal, progress bars are off on purpose (init_ray): Ray Data's warning that says so is not shown.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    dataset_log = logging.getLogger("ray.data.dataset")
    if _NO_FREE_CPU_ALARM not in dataset_log.filters:
        dataset_log.addFilter(_NO_FREE_CPU_ALARM)


def ray_wanted(address: str | None) -> bool:
    """Whether a job must run on Ray whatever its size: on a cluster (--address, RAY_ADDRESS), or in a
    process that has started Ray already (a notebook's, a test's). Otherwise a small job runs in
    this process (pipeline/in_process.py, decode_graph.py), without Ray's start-up."""
    ray = sys.modules.get("ray")
    return bool(address or os.environ.get("RAY_ADDRESS") or (ray is not None and ray.is_initialized()))


def local_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a container's
    --cpus), as Ray counts a local node's. The torch threads of a job run in this process."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota
    return n


def init_ray(address: str | None) -> bool:
    """Start a local Ray, or join a cluster (address or RAY_ADDRESS). Returns True on a cluster."""
    import ray

    quiet_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cluster = bool(address or os.environ.get("RAY_ADDRESS"))
    if ray.is_initialized():
        return cluster
    # logging_level: Ray's INFO lines ("Started a local Ray instance.") are for Ray's own users.
    if cluster:
        ray.init(address=address or os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 _system_config={"prestart_worker_first_driver": False, "enable_metrics_collection": False})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
    ctx.print_on_execution_start = False
    return cluster


@dataclass(frozen=True)
class ActorPool:
    """How one stage's codec actors are sized: `size` actors of `threads` torch threads, each reserving
    `num_cpus` CPUs and `num_gpus` GPUs from Ray."""
    size: int
    threads: int
    num_cpus: float
    num_gpus: float | None

    def map_args(self) -> dict:
        """The keyword arguments of `Dataset.map_batches` / `Dataset.map` that place the actors."""
        import ray

        return {"compute": ray.data.ActorPoolStrategy(size=self.size), "num_cpus": self.num_cpus,
                "num_gpus": self.num_gpus}


def actor_pool(workers: int, on_cluster: bool, gpus_per_worker: float = 0, inputs: int | None = None) -> ActorPool:
    """The one sizing rule of the codec actors (compress, decompress/audit, the RD sweep).

    `workers` actors (no more than `inputs` when the inputs are fewer), each with the CPUs shared out
    as torch threads (threads_per_worker). What each reserves: on a GPU, its share of the GPU and no
    CPU; on a cluster, its threads as whole CPUs, so that the actors spread over the nodes; locally,
    LOCAL_ACTOR_CPUS, leaving room for the tasks that feed them (see the module docstring)."""
    threads = threads_per_worker(workers)
    if gpus_per_worker:
        cpus = 0.0
    else:
        cpus = threads if on_cluster else LOCAL_ACTOR_CPUS
    size = max(1, min(workers, inputs) if inputs is not None else workers)
    return ActorPool(size=size, threads=threads, num_cpus=cpus, num_gpus=gpus_per_worker or None)


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of `workers` actors: the cluster's CPUs shared out, at least one."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    return max(1, cpus // max(1, workers))


def task_remote_args() -> dict:
    """Ray resources of one load or write task: no CPU, and one TASK_RESOURCE where the cluster has it."""
    import ray

    if ray.cluster_resources().get(TASK_RESOURCE):
        return {"num_cpus": TASK_CPUS, "resources": {TASK_RESOURCE: 1}}
    return {"num_cpus": TASK_CPUS}


def task_slots(workers: int) -> int:
    """Load (or write) tasks allowed at once: enough to keep `workers` actors fed, few enough not to
    crowd them out (these tasks reserve no CPU, so Ray does not bound their number)."""
    return max(2, workers)
