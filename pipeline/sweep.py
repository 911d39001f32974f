"""The RD sweep of `tng report --source` on Ray: each sampled source image coded by every codec.

One actor per worker holds the model; each row is one image (key, uri) and comes back with its
points (JSON, as `evaluation.measure.sweep` gives them) or the reason it could not be measured.
"""
from __future__ import annotations

import json

import numpy as np

from tng.codec.effort import DEFAULT_EFFORT


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
                  effort: int = DEFAULT_EFFORT) -> list[dict]:
    """Run SweepActor over items ({key, uri}); results in the order of items, points decoded."""
    import ray

    from tng.pipeline.run import actor_pool, init_ray

    if not items:
        return []
    pool = actor_pool(workers, init_ray(address), inputs=len(items))
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
        SweepActor, fn_constructor_kwargs={"model_id": model_id, "threads": pool.threads, "baselines": baselines,
                                           "storage_options": storage_options, "max_pixels": max_pixels,
                                           "effort": effort},
        **pool.map_args())
    by_key = {r["key"]: r for r in ds.iter_rows()}
    results = []
    for it in items:
        r = dict(by_key[it["key"]])
        r["points"] = json.loads(r["points"])
        results.append(r)
    return results
