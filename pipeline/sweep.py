"""The RD sweep of `tng report --source` on Ray (or, for a few images, in the command's own process):
each sampled source image coded by every codec.

One actor per worker holds the model; each row is one image (key, uri) and comes back with its
points (JSON, as `evaluation.measure.sweep` gives them) or the reason it could not be measured.
"""
from __future__ import annotations

import json

import numpy as np

from tng.codec.effort import DEFAULT_EFFORT

from .run import IN_PROCESS_FILES


class SweepActor:
    def __init__(self, model_id: int, threads: int, baselines: tuple[str, ...], storage_options: dict,
                 max_pixels: int, effort: int = DEFAULT_EFFORT):
        import torch

        from tng.codec import Codec
        from tng.evaluation.measure import baseline_encoders

        torch.set_num_threads(threads)
        self.codec = Codec(model_id=model_id, device="cpu", effort=effort)
        self.encoders = baseline_encoders(threads, baselines)
        self.opts, self.max_pixels = storage_options, max_pixels

    def __call__(self, row: dict) -> dict:
        import fsspec

        from tng.codec import TNGError, open_image
        from tng.evaluation.measure import sweep

        out = {"key": row["key"], "width": 0, "height": 0, "points": "[]", "error": None}
        try:
            with fsspec.open(row["uri"], "rb", **self.opts) as f:
                rgb = open_image(f.read(), max_pixels=self.max_pixels).rgb
            out.update(width=rgb.shape[1], height=rgb.shape[0],
                       points=json.dumps(sweep(self.codec, np.ascontiguousarray(rgb), self.encoders)))
        except Exception as e:  # one image must not stop the study: it is listed with its reason
            out["error"] = str(e) if isinstance(e, TNGError) else f"{type(e).__name__}: {e}"
        return out


def sweep_sources(items: list[dict], *, model_id: int, baselines: tuple[str, ...], workers: int,
                  storage_options: dict, max_pixels: int, address: str | None,
                  effort: int = DEFAULT_EFFORT, in_process_files: int = IN_PROCESS_FILES) -> list[dict]:
    """Run SweepActor over items ({key, uri}); results in the order of items, points decoded. At most
    `in_process_files` items run here, one actor on every CPU, without Ray's start-up, unless Ray is
    wanted (run.ray_wanted); more run on `workers` actors."""
    from tng.pipeline.run import ray_wanted

    if not items:
        return []
    kwargs = {"model_id": model_id, "baselines": baselines, "storage_options": storage_options,
              "max_pixels": max_pixels, "effort": effort}
    if not ray_wanted(address) and len(items) <= in_process_files:
        rows = _sweep_here(items, kwargs)
    else:
        rows = _sweep_on_ray(items, kwargs, workers, address)
    by_key = {r["key"]: r for r in rows}
    results = []
    for it in items:
        r = dict(by_key[it["key"]])
        r["points"] = json.loads(r["points"])
        results.append(r)
    return results


def _sweep_here(items: list[dict], kwargs: dict) -> list[dict]:
    """The items on one actor per CPU in this process's threads, one torch thread each, as Ray's local
    actors run (much of a sweep is the classic encoders, one image at a time on one core)."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from tng.pipeline.run import local_cpus

    n = max(1, min(local_cpus(), len(items)))
    threads = torch.get_num_threads()  # the actors set this process's; given back at the end
    try:
        actors: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(n):
            actors.put(SweepActor(threads=max(1, local_cpus() // n), **kwargs))

        def run(item: dict) -> dict:
            actor = actors.get()
            try:
                return actor(item)
            finally:
                actors.put(actor)

        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(run, items))
    finally:
        torch.set_num_threads(threads)


def _sweep_on_ray(items: list[dict], kwargs: dict, workers: int, address: str | None) -> list[dict]:
    import ray

    from tng.pipeline.run import actor_pool, init_ray

    pool = actor_pool(workers, init_ray(address), inputs=len(items))
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
        SweepActor, fn_constructor_kwargs={"threads": pool.threads, **kwargs}, **pool.map_args())
    return list(ds.iter_rows())
