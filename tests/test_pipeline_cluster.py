"""`tng compress` on a two-node Ray cluster (ray.cluster_utils.Cluster) that loses a node mid-run:
every key must still end as exactly one `ok` row. Real nodes (own raylets), real Parquet."""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

import pyarrow.parquet as pq
import pytest

from test_pipeline_kill import make_images

N_IMAGES = 24


@pytest.fixture
def cluster(request):
    """Head + one worker node. Ray's temp dir is private to the test, so its `ray_current_cluster`
    file cannot send another process's plain `ray.init()` to this cluster (short path: Ray's sockets
    live there)."""
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "another test module left Ray running"
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp = tempfile.mkdtemp(prefix="tngc", dir="/tmp")
    head, worker = getattr(request, "param", ({"num_cpus": 2}, {"num_cpus": 2}))
    c = Cluster(initialize_head=True, head_node_args={**head, "include_dashboard": False})
    try:
        c.add_node(**worker)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        ray.data.DataContext.get_current().execution_no_progress_timeout_s = 120  # a hang fails the test
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(tmp, ignore_errors=True)


def compress_args(src, dst, address: str) -> argparse.Namespace:
    """2 workers of 2 threads on 2 + 2 CPUs: one codec actor fills each node (the layout whose load
    tasks never ran while they still asked for CPU)."""
    from tng.jobs.cli import parser

    return parser().parse_args(["compress", str(src), str(dst), "--address", address, "--workers", "2",
                                "--batch-size", "1", "--rows-per-shard", "1"])


def _actor_nodes() -> set[str]:
    """Nodes running a live codec actor (from the GCS: the state API would need the dashboard)."""
    from ray._private.state import actors

    return {a["Address"]["NodeID"] for a in actors(actor_state_name="ALIVE").values() if "MapWorker" in a["ActorClassName"]}


def test_losing_a_node_mid_run_keeps_one_ok_row_per_key(cluster, tmp_path):
    from tng.jobs.compress import compress

    src, dst = tmp_path / "src", tmp_path / "archive"
    make_images(src, N_IMAGES)
    (node,) = cluster.worker_nodes
    events = {}
    finished = threading.Event()

    def remove_when_busy() -> None:
        """Once a codec actor runs on the worker node and shards are coming out, kill that node."""
        try:
            while not finished.wait(0.1):
                if node.node_id in _actor_nodes() and list(dst.glob("shards/*.parquet")):
                    events["shards_at_removal"] = len(list(dst.glob("shards/*.parquet")))
                    cluster.remove_node(node, allow_graceful=False)
                    events["removed"] = time.monotonic()
                    return
        except Exception as e:  # reported by the assertion below
            events["error"] = repr(e)

    watcher = threading.Thread(target=remove_when_busy, daemon=True)
    watcher.start()
    try:
        summary = compress(compress_args(src, dst, cluster.address))
    finally:
        finished.set()
        watcher.join(timeout=60)
    assert "removed" in events and events["shards_at_removal"] < N_IMAGES, f"the node was not lost mid-run: {events}"
    rows = pq.read_table(dst / "shards").to_pylist()
    ok = [(r["key"], r["source_sha256"]) for r in rows if r["status"] == "ok"]
    assert len(ok) == len(set(ok)) == N_IMAGES, sorted(ok)
    assert (summary["ok"], summary["errors"], summary["archive_keys"]) == (N_IMAGES, 0, N_IMAGES)


@pytest.mark.parametrize("cluster", [({"num_cpus": 0}, {"num_cpus": 2, "resources": {"tng_task": 2}})],
                         indirect=True)
def test_a_head_kept_to_the_driver_gets_no_tasks(cluster, tmp_path):
    """As infra/ lays a cluster out: the head offers no CPU and no `tng_task`, the workers both.
    Load and write tasks then ask for a `tng_task` each, so none can land on the head, and the run
    completes on the worker (a task that could not be placed would hang, and fail the test)."""
    from tng.jobs.compress import compress
    from tng.pipeline.run import TASK_RESOURCE, task_remote_args

    assert task_remote_args() == {"num_cpus": 0, "resources": {TASK_RESOURCE: 1}}
    src, dst = tmp_path / "src", tmp_path / "archive"
    make_images(src, 4)
    args = compress_args(src, dst, cluster.address)
    args.workers = 1
    summary = compress(args)
    assert (summary["ok"], summary["errors"]) == (4, 0)
    # audit too: its one actor takes both of the worker's CPUs, so whatever runs beside it must not
    # need one (the reads of the streams), or the run would wait forever
    from tng.jobs.cli import parser
    from tng.jobs.decompress import audit

    assert audit(parser().parse_args(["audit", str(dst), "--address", cluster.address, "--workers", "1"])) == 0
