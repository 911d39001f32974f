"""`tng report ARCHIVE OUT` and `tng info ARCHIVE`: what an archive holds and what it cost.

From the archive's metadata (the current row of each key, see `pipeline/archive.py`): image count,
bytes before and after, savings, the bytes saved per codec (TNG, JPEGs recompressed losslessly,
files kept as they are) and the share of the archive each holds, distributions of bpp / PSNR /
MS-SSIM, breakdowns by source format and resolution, the worst images by PSNR (with original and
decoded thumbnails where the source is reachable and unchanged) and errors by reason. With
--source, an RD study on a reproducible sample of the sources (`evaluation/`, on Ray:
`pipeline/sweep.py`): TNG at qualities 1–8 against JPEG, WebP, AVIF and JPEG XL, BD-rates, and which
quality to choose for a target PSNR with the savings it buys.

Writes OUT/summary.json (every figure), OUT/report.md, OUT/report.html (self-contained: images
embedded) and the same pictures as PNG files under OUT/plots and OUT/thumbs.

Archives made with `tng compress --codec avif|jxl|auto` also get the codec choice: the bytes each
single codec would have needed for the same images at the same per-image targets, from what every
row recorded of the codecs it tried (`bytes_tng`, `bytes_avif`, `bytes_jxl`), beside what the
archive holds.

Definitions: bytes in = the source files of the current `ok` rows; bytes out = their bitstreams
(a row kept as `source` counts its file on both sides); savings = 1 − out/in. bpp and PSNR
statistics are over the lossy rows (TNG, AVIF, JPEG XL; the lossless forms have no PSNR).

Memory: the driver holds aggregates, never the rows, so archives of any number of keys are read in
the same memory. The shards' metadata columns are read one shard at a time and spilled to a local
temporary folder (TMPDIR; ~0.3 KB a row) by hash partition of the key; then each partition's current
rows are found (`archive.current_row_partitions`: a key's rows all meet in its partition, of about
PARTITION_KEYS keys) and added to the `Tally`: counts and sums per codec, source format and
resolution; the codec-choice sums; errors and kept files by kind of reason (at most MAX_REASON_KINDS
kinds, the rest counted as one); the worst images by PSNR (--worst entries); the bpp / PSNR /
MS-SSIM distributions (`Distribution`: exact up to EXACT_VALUES values, then a histogram whose
quantiles are within RELATIVE_ACCURACY of the exact ones). The RD study's sample (keys sorted, one
drawn per stratum) is taken by merging the partitions' sorted keys, a batch of each at a time. So
the driver holds one shard, then one partition, and the aggregates, whatever the archive's size.
"""
from __future__ import annotations

import argparse
import bisect
import datetime as dt
import hashlib
import heapq
import io
import json
import math
import posixpath
import random
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from tng.codec.formats import FORMATS, LOSSY
from tng.codec.images import DEFAULT_MAX_PIXELS
from tng.codec.jpeg_transcode import CODEC as JPEG_XL
from tng.codec.registry import DEFAULT_MODEL_ID
from tng.jobs.common import RunError, parse_storage_options

if TYPE_CHECKING:
    import pyarrow as pa

META = ["key", "source_uri", "source_bytes", "source_sha256", "source_format", "width", "height", "mode", "codec", "note",
        "bitstream_bytes", "bpp", "psnr", "ms_ssim", "quality", "model_id", "status", "error", "run_id", "encoded_at",
        "setting", "target_psnr", "bytes_tng", "bytes_avif", "bytes_jxl"]
RESOLUTIONS = [(0, 0.25, "< 0.25 MP"), (0.25, 1, "0.25–1 MP"), (1, 4, "1–4 MP"), (4, 16, "4–16 MP"),
               (16, 64, "16–64 MP"), (64, float("inf"), "≥ 64 MP")]
BASELINE_NAMES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF", "jxl": "JPEG XL"}
CODEC_ORDER = list(FORMATS)
CODEC_LABELS = {name: f.label for name, f in FORMATS.items()}
THUMB_SIDE, CROP_SIDE = 320, 192
FIGURES = ("bpp", "psnr", "ms_ssim")  # the per-image figures whose distributions are shown
T = TypeVar("T")

# Distribution: values kept exactly up to EXACT_VALUES (the quantiles are numpy's, as they always
# were), then binned: DDSketch's log-spaced buckets, x in bucket i when γ^(i-1) < |x| ≤ γ^i, each
# standing for 2γ^i/(γ+1), which is within RELATIVE_ACCURACY of every value in it. 1e-4 is 0.003 dB
# at 30 dB and 0.0001 of an MS-SSIM; the buckets a figure can fill are bounded by its range (bpp
# from 0.001 to 100: 58,000 buckets of 16 bytes).
EXACT_VALUES = 100_000
RELATIVE_ACCURACY = 1e-4
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_ZERO = 1e-12  # |x| below it is 0, bucket 0
_OFFSET = 2**40  # bucket of x: sign(x)·(i + _OFFSET), so the buckets sort as their values do
MAX_REASON_KINDS = 1000  # kinds of error / note told apart; numbers and names are normalised away
# Keys per partition of the current rows (for shards of the usual 1,000 rows): what the driver holds at
# once. Smaller than compress's partitions (pending.PARTITION_ROWS, 50,000), which size tasks, not the
# driver: with those, the report's peak grew by 60 MB from 20 k to 200 k keys; with these, by 10 MB.
PARTITION_KEYS = 10_000


class Distribution:
    """The values of one per-image figure, added a block at a time: count, sum, min and max exact;
    the values themselves up to EXACT_VALUES of them, then counts per log-spaced bucket (see above):
    quantiles within RELATIVE_ACCURACY of numpy's, in memory bounded by the figure's range."""

    def __init__(self) -> None:
        self.count, self.total, self.min, self.max = 0, 0.0, math.inf, -math.inf
        self._values: list[np.ndarray] | None = []  # None once binned
        self._buckets, self._counts = np.empty(0, np.int64), np.empty(0, np.int64)

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        if not len(v):
            return
        self.count += len(v)
        self.total += float(v.sum())
        self.min, self.max = min(self.min, float(v.min())), max(self.max, float(v.max()))
        if self._values is None:
            self._bin(v)
        else:
            self._values.append(v)
            if self.count > EXACT_VALUES:
                self._bin(np.concatenate(self._values))
                self._values = None

    def _bin(self, v: np.ndarray) -> None:
        a = np.abs(v)
        i = np.ceil(np.log(np.maximum(a, _ZERO)) / math.log(_GAMMA)).astype(np.int64) + _OFFSET
        buckets, counts = np.unique(np.where(a < _ZERO, 0, np.sign(v).astype(np.int64) * i), return_counts=True)
        self._buckets, at = np.unique(np.concatenate([self._buckets, buckets]), return_inverse=True)
        self._counts = np.bincount(at, np.concatenate([self._counts, counts]), len(self._buckets)).astype(np.int64)

    def _bucket_values(self) -> np.ndarray:
        i = np.abs(self._buckets) - _OFFSET
        return np.where(self._buckets == 0, 0.0, np.sign(self._buckets) * 2 * _GAMMA ** i.astype(float) / (_GAMMA + 1))

    def percentiles(self, ps: list[float]) -> list[float]:
        """numpy.percentile's (linear interpolation between the order statistics), exact or binned."""
        if self._values is not None:
            return [float(q) for q in np.percentile(np.concatenate(self._values), ps)]
        ends, values = np.cumsum(self._counts), self._bucket_values()

        def nth(rank: int) -> float:  # the rank-th smallest value (0-based); the extremes are exact
            if rank <= 0 or rank >= self.count - 1:
                return self.min if rank <= 0 else self.max
            return float(np.clip(values[np.searchsorted(ends, rank, side="right")], self.min, self.max))

        out = []
        for p in ps:
            h = (self.count - 1) * p / 100
            lo = math.floor(h)
            out.append(nth(lo) + (h - lo) * (nth(lo + 1) - nth(lo)) if h > lo else nth(lo))
        return out

    def stats(self) -> dict | None:
        if not self.count:
            return None
        q = self.percentiles([5, 25, 50, 75, 95])
        return {"count": self.count, "mean": self.total / self.count, "min": self.min, "p5": q[0], "p25": q[1],
                "median": q[2], "p75": q[3], "p95": q[4], "max": self.max}

    def weighted_values(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(values, weights) for a histogram: the values themselves (weights None), or the buckets'."""
        if self._values is not None:
            return (np.concatenate(self._values) if self._values else np.empty(0)), None
        return self._bucket_values(), self._counts


def reason_class(reason: str) -> str:
    """Errors grouped by kind: numbers and quoted names (sizes, paths) replaced."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason or "unknown"))[:200]


class Reasons:
    """Rows grouped by the kind of their reason (`reason_class`): per kind the count, its first 5 keys
    in sorted order and, as the example, the reason of the first. At most MAX_REASON_KINDS kinds (in
    the order met); rows of further kinds are counted under one entry of kind 'other'."""

    def __init__(self) -> None:
        self.kinds: dict[str, dict] = {}
        self.other = {"count": 0, "keys": [], "example": None}

    def add(self, keys: list[str], reasons: list[str | None]) -> None:
        kind_of: dict[str | None, str] = {}  # reason -> kind, for this block
        for key, reason in zip(keys, reasons):
            if reason not in kind_of:
                kind_of[reason] = reason_class(reason or "unknown")
            kind = kind_of[reason]
            entry = self.kinds.get(kind)
            if entry is None:
                entry = self.other if len(self.kinds) >= MAX_REASON_KINDS else self.kinds.setdefault(
                    kind, {"count": 0, "keys": [], "example": None})
            entry["count"] += 1
            first = entry["keys"]
            if len(first) < 5 or key < first[-1]:
                bisect.insort(first, key)
                del first[5:]
                if first[0] == key:
                    entry["example"] = reason

    def entries(self) -> list[dict]:
        out = [{"reason": e["example"] or "unknown", "kind": kind, "count": e["count"], "keys": e["keys"]}
               for kind, e in self.kinds.items()]
        out.sort(key=lambda r: (-r["count"], r["kind"]))
        if self.other["count"]:
            out.append({"reason": f"other reasons (kinds beyond the first {MAX_REASON_KINDS}), e.g. "
                                  f"{self.other['example'] or 'unknown'}", "kind": "other",
                        "count": self.other["count"], "keys": self.other["keys"]})
        return out


GROUP_SUMS = ("images", "kept_as_source", "jpeg_lossless", "bytes_in", "bytes_out", "lossy")


class Tally:
    """Every figure of the report that comes from the metadata, over the current rows, added one block
    of them at a time (`add`); its memory does not depend on the number of rows (see the module
    docstring). `worst`: how many of the lowest-PSNR images to keep."""

    def __init__(self, worst: int = 6) -> None:
        self.worst_n = worst
        self.keys = self.ok = self.errors = 0
        # (dimension, value) -> sums: dimension 'all', 'codec', 'format' or 'resolution'
        self.groups: dict[str, dict[str, Counter]] = {d: {} for d in ("all", "codec", "format", "resolution")}
        self.pixels = 0.0  # of the ok rows
        self.ms_ssim = Counter()  # sum and n over the lossy rows
        self.models, self.qualities = Counter(), Counter()  # of the TNG rows
        self.first_encoded: dt.datetime | None = None
        self.last_encoded: dt.datetime | None = None
        self.distributions = {which: {f: Distribution() for f in FIGURES} for which in ("lossy", "tng")}
        self.worst: list[dict] = []
        self.error_reasons, self.kept_reasons = Reasons(), Reasons()
        self.choice = {"images": 0, "bytes_kept": 0, "codecs": {c: Counter() for c in LOSSY}}

    def add(self, t: pa.Table) -> None:
        """Add current rows (META columns), each key once over all calls."""
        import pyarrow.compute as pc

        self.keys += t.num_rows
        times = pc.min_max(t["encoded_at"]).as_py()
        if times["min"] is not None:
            self.first_encoded = min(self.first_encoded or times["min"], times["min"])
            self.last_encoded = max(self.last_encoded or times["max"], times["max"])
        is_ok = pc.fill_null(pc.equal(t["status"], "ok"), False)
        errors, ok = t.filter(pc.invert(is_ok)), t.filter(is_ok)
        self.errors += errors.num_rows
        self.ok += ok.num_rows
        self.error_reasons.add(errors["key"].to_pylist(), errors["error"].to_pylist())
        codec = pc.fill_null(ok["codec"], "")
        kept = ok.filter(pc.and_(pc.equal(codec, "source"), pc.is_valid(ok["note"])))
        self.kept_reasons.add(kept["key"].to_pylist(), kept["note"].to_pylist())
        lossy_mask = pc.is_in(codec, value_set=_strings(LOSSY))
        self._groups(ok, codec, lossy_mask)
        self.pixels += float(np.nansum(_floats(ok["width"]) * _floats(ok["height"])))

        lossy, tng = ok.filter(lossy_mask), ok.filter(pc.equal(codec, "tng"))
        ms_ssim = _floats(lossy["ms_ssim"])
        self.ms_ssim.update(sum=float(np.nansum(ms_ssim)), n=int(np.count_nonzero(~np.isnan(ms_ssim))))
        for f in FIGURES:
            self.distributions["lossy"][f].add(_floats(lossy[f]))
            self.distributions["tng"][f].add(_floats(tng[f]))
        self.models.update(int(m) for m in tng["model_id"].drop_null().to_pylist())
        q = np.round(_floats(tng["quality"]), 2)
        self.qualities.update(float(x) for x in q[~np.isnan(q)])
        self._worst(lossy)
        self._choice(ok, codec)

    def _groups(self, ok: pa.Table, codec: pa.ChunkedArray, lossy: pa.ChunkedArray) -> None:
        """Sums per codec, source format and resolution (and of all ok rows)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = ok.num_rows
        if not n:
            return
        mp = _floats(ok["width"]) * _floats(ok["height"]) / 1e6
        band = np.searchsorted([lo for lo, _, _ in RESOLUTIONS], mp, side="right") - 1
        sums = pa.table({
            "images": pa.repeat(1, n),
            "kept_as_source": pc.equal(codec, "source").cast(pa.int64()),
            "jpeg_lossless": pc.equal(codec, JPEG_XL).cast(pa.int64()),
            "bytes_in": ok["source_bytes"], "bytes_out": ok["bitstream_bytes"], "lossy": lossy.cast(pa.int64()),
            # the means of bpp and PSNR are over the lossy rows' values; NaN counts as missing (as in pandas)
            **{f: pc.if_else(pc.and_kleene(lossy, pc.invert(pc.is_nan(ok[f]))), ok[f], pa.scalar(None, pa.float64()))
               for f in ("bpp", "psnr")}})
        labels = np.array([label for _, _, label in RESOLUTIONS] + [None], object)  # None: size unknown
        dimensions = {
            "all": pa.repeat("all", n), "codec": codec, "format": pc.fill_null(ok["source_format"], "unknown"),
            "resolution": pa.array(labels[np.where(np.isfinite(mp), band, len(RESOLUTIONS))], pa.string())}
        aggregations = [(c, "sum") for c in GROUP_SUMS] + [(f, a) for f in ("bpp", "psnr") for a in ("sum", "count")]
        names = {f"{c}_sum": c for c in GROUP_SUMS}  # images_sum -> images; bpp_sum, bpp_count stay
        for dim, keys in dimensions.items():
            # One thread: threaded group-bys add a block's floats in a varying order, and the report's
            # means then differ in their last bits from run to run (200 runs of 50 k values: 35 sums).
            per = sums.append_column("_g", keys).group_by("_g", use_threads=False).aggregate(aggregations)
            for row in per.to_pylist():
                if row["_g"] is not None:
                    self.groups[dim].setdefault(row.pop("_g"), Counter()).update(
                        {names.get(k, k): v for k, v in row.items() if v is not None})

    def _worst(self, lossy: pa.Table) -> None:
        import pyarrow.compute as pc

        if not self.worst_n:
            return
        rated = lossy.filter(pc.invert(pc.is_nan(lossy["psnr"])))  # null and NaN dropped
        order = pc.sort_indices(rated, sort_keys=[("psnr", "ascending"), ("key", "ascending")])[:self.worst_n]
        lowest = [_worst_entry(r) for r in rated.take(order).to_pylist()]
        self.worst = sorted(self.worst + lowest, key=lambda w: (w["psnr"], w["key"]))[:self.worst_n]

    def _choice(self, ok: pa.Table, codec: pa.ChunkedArray) -> None:
        """What the rows coded at a per-image target hold, against what each lossy codec needed."""
        import pyarrow.compute as pc

        targeted = pc.fill_null(pc.invert(pc.is_nan(ok["target_psnr"])), False)
        rows, codec = ok.filter(targeted), codec.filter(targeted)
        if not rows.num_rows:
            return
        self.choice["images"] += rows.num_rows
        self.choice["bytes_kept"] += pc.sum(rows["bitstream_bytes"]).as_py() or 0
        for c in LOSSY:
            need = rows[f"bytes_{c}"]
            reached = pc.is_valid(need)
            self.choice["codecs"][c].update(
                reached=pc.sum(reached.cast("int64")).as_py(),
                not_reached=pc.sum(pc.invert(reached).cast("int64")).as_py(),
                needed=pc.sum(need).as_py() or 0, kept=pc.sum(rows["bitstream_bytes"].filter(reached)).as_py() or 0,
                chosen=pc.sum(pc.equal(codec, c).cast("int64")).as_py())


def _strings(values: Iterable[str]) -> pa.Array:
    import pyarrow as pa

    return pa.array(list(values), pa.string())


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64, NaN where null."""
    import pyarrow as pa

    return column.cast(pa.float64()).to_numpy()


def _number(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _worst_entry(r: dict) -> dict:
    return {"key": r["key"], "codec": r["codec"], "width": int(r["width"]), "height": int(r["height"]),
            "bpp": float("nan" if r["bpp"] is None else r["bpp"]), "psnr": float(r["psnr"]),
            "ms_ssim": _number(r["ms_ssim"]), "quality": _number(r["quality"]), "source_format": r["source_format"],
            "source_uri": r["source_uri"], "source_sha256": r["source_sha256"],
            "encoded_at": r["encoded_at"].isoformat()}


@dataclass
class Archive:
    url: str
    tally: Tally  # the figures of the current rows
    all_rows: int
    shards: int
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (shard, reason)
    runs: list[dict] = field(default_factory=list)  # manifests of completed runs
    run_ids_in_shards: set = field(default_factory=set)
    sample: list[tuple[str, str, int]] = field(default_factory=list)  # the RD study's (key, source_uri, source_bytes)


def load_archive(url: str, opts: dict, worst: int = 6, sample: tuple[int, int] | None = None) -> Archive:
    """Read every shard's metadata into a Tally (see the module docstring for how, in bounded memory).
    An unreadable shard is listed, not fatal, unless none is readable. `sample`: (n, seed) of the RD
    study's rows (`stratified`) among the current ok rows."""
    import pyarrow.parquet as pq

    from tng.pipeline.archive import RUNS, SCHEMA, current_row_partitions, open_fs, shard_paths
    from tng.pipeline.pending import SHARD_ROWS

    try:
        fs, root = open_fs(url, opts)
        paths = shard_paths(fs, root)
    except Exception as e:
        raise RunError(f"cannot read archive {url}: {type(e).__name__}: {e}") from None
    if not paths:
        what = "is empty" if fs.exists(posixpath.join(root, "shards")) else "has no shards/ folder"
        raise RunError(f"{url} is not a TNG archive with rows: it {what} (make one with `tng compress SRC {url}`)")
    unreadable, run_ids, rows = [], set(), 0

    def shards() -> Iterator[pa.Table]:
        nonlocal rows
        for p in paths:
            try:
                t = pq.read_table(p, filesystem=fs, columns=META, schema=SCHEMA)
            except Exception as e:
                unreadable.append((p, f"{type(e).__name__}: {e}"))
                continue
            rows += t.num_rows
            run_ids.update(t["run_id"].unique().to_pylist())
            yield t

    tally, picked = Tally(worst), []
    with tempfile.TemporaryDirectory(prefix="tng-report-") as spill:
        sorted_runs = []
        parts = math.ceil(len(paths) * SHARD_ROWS / PARTITION_KEYS)
        for i, part in enumerate(current_row_partitions(shards(), parts, posixpath.join(spill, "rows"))):
            tally.add(part)
            if sample:
                sorted_runs.append(_write_sorted_ok(part, posixpath.join(spill, f"sorted-{i}.arrow")))
        if sample:
            picked = stratified(heapq.merge(*(_read_sorted(p) for p in sorted_runs)), tally.ok, *sample)
    if len(unreadable) == len(paths):
        raise RunError(f"no shard of {url} is readable; the first: {unreadable[0][0]}: {unreadable[0][1]}")
    if rows == 0:
        raise RunError(f"{url} holds no rows")
    runs = []
    for p in sorted(fs.glob(posixpath.join(root, RUNS, "*.json"))):
        try:
            runs.append(json.loads(fs.cat_file(p)))
        except (OSError, ValueError):
            pass  # a manifest is a convenience: the rows are the truth
    return Archive(url, tally, rows, len(paths), unreadable, runs, run_ids, picked)


def _write_sorted_ok(part: pa.Table, path: str) -> str:
    """The partition's ok rows as (key, source_uri, source_bytes), sorted by key, to an Arrow file."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ok = part.filter(pc.fill_null(pc.equal(part["status"], "ok"), False))
    ok = ok.select(["key", "source_uri", "source_bytes"]).sort_by("key")
    with pa.OSFile(path, "wb") as f, pa.ipc.new_file(f, ok.schema) as w:
        w.write_table(ok, max_chunksize=4096)
    return path


def _read_sorted(path: str) -> Iterator[tuple[str, str, int]]:
    import pyarrow as pa

    with pa.OSFile(path) as f:
        reader = pa.ipc.open_file(f)
        for i in range(reader.num_record_batches):
            b = reader.get_batch(i)
            yield from zip(b["key"].to_pylist(), b["source_uri"].to_pylist(), b["source_bytes"].to_pylist())


def stratified(rows: Iterable[T], count: int, n: int, seed: int) -> list[T]:
    """n of `count` rows given in key order, spread over them: cut into n strata of consecutive rows,
    one drawn from each by seed (all of them when n ≥ count). Reads `rows` once, keeps the n."""
    if n >= count:
        return list(rows)
    rng = random.Random(seed)
    edges = np.linspace(0, count, n + 1).astype(int)
    ranks = iter([rng.randrange(lo, hi) for lo, hi in zip(edges, edges[1:])])
    want, out = next(ranks), []
    for rank, row in enumerate(rows):
        if rank == want:
            out.append(row)
            want = next(ranks, None)
            if want is None:
                break
    return out


# ---------------------------------------------------------------------------------------------- figures

def _group(sums: Counter) -> dict:
    """The figures of a group of ok rows from their sums."""
    bytes_in, bytes_out = int(sums["bytes_in"]), int(sums["bytes_out"])
    return {"images": int(sums["images"]), "kept_as_source": int(sums["kept_as_source"]),
            "jpeg_lossless": int(sums["jpeg_lossless"]), "bytes_in": bytes_in, "bytes_out": bytes_out,
            "savings": (1 - bytes_out / bytes_in) if bytes_in else None,
            "mean_bpp": sums["bpp_sum"] / sums["bpp_count"] if sums["lossy"] and sums["bpp_count"] else None,
            "mean_psnr": sums["psnr_sum"] / sums["psnr_count"] if sums["lossy"] and sums["psnr_count"] else None}


def by_codec(t: Tally) -> list[dict]:
    """Per codec (TNG, lossless JPEG recompression, kept as source): images, bytes in and out, bytes
    saved, and the share of the archive's images and of its bytes each holds."""
    total = t.groups["all"].get("all", Counter())
    out = []
    for codec in sorted(t.groups["codec"], key=lambda c: (CODEC_ORDER.index(c) if c in CODEC_ORDER else 99, c)):
        g = {"codec": codec, **_group(t.groups["codec"][codec])}
        g.update(label=CODEC_LABELS.get(codec, codec), saved_bytes=g["bytes_in"] - g["bytes_out"],
                 share_of_images=g["images"] / total["images"] if total["images"] else None,
                 share_of_bytes_out=g["bytes_out"] / total["bytes_out"] if total["bytes_out"] else None)
        out.append(g)
    return out


def codec_choice(t: Tally) -> dict | None:
    """What the rows coded at a per-image target (--codec other than tng) hold, against what each single
    lossy codec would have needed for the same images at the same targets (the rows' bytes_<codec>; a
    lower bound where that codec's search stopped once it could not win, so each single codec's total
    is at least the figure given). Per codec tried: the images it reaches the target on, their bytes,
    the archive's bytes for those same images, and the images it has no figure for (not tried there,
    or the target is out of its reach)."""
    c = t.choice
    if not c["images"]:
        return None
    out = {"images": c["images"], "bytes_kept": c["bytes_kept"], "codecs": []}
    for codec, s in c["codecs"].items():
        if not s["reached"] and not s["chosen"]:
            continue  # not tried on these rows (--codec avif tries AVIF alone)
        out["codecs"].append({"codec": codec, "label": CODEC_LABELS[codec], "images_reached": s["reached"],
                              "images_not_reached": s["not_reached"], "bytes_needed": s["needed"],
                              "bytes_kept_same_images": s["kept"],
                              "saving_vs_codec": (1 - s["kept"] / s["needed"]) if s["needed"] else None,
                              "chosen": s["chosen"]})
    return out


def archive_figures(a: Archive) -> dict:
    """Every figure the report states that comes from the metadata alone."""
    t = a.tally
    head = _group(t.groups["all"].get("all", Counter()))
    tng = t.groups["codec"].get("tng", Counter())
    head.update(keys=t.keys, ok=t.ok, errors=t.errors, coded_by_tng=int(tng["images"]),
                saved_bytes=head["bytes_in"] - head["bytes_out"],
                ratio=(head["bytes_in"] / head["bytes_out"]) if head["bytes_out"] else None,
                mean_ms_ssim=t.ms_ssim["sum"] / t.ms_ssim["n"] if t.ms_ssim["n"] else None,
                megapixels=t.pixels / 1e6,
                models={str(k): v for k, v in sorted(t.models.items())},
                qualities={f"{k:g}": v for k, v in sorted(t.qualities.items())})
    by_res = [{"resolution": label, **_group(t.groups["resolution"][label])}
              for _, _, label in RESOLUTIONS if label in t.groups["resolution"]]
    by_format = [{"format": fmt, **_group(sums)} for fmt, sums in sorted(t.groups["format"].items())]
    by_format.sort(key=lambda g: -g["images"])
    complete = {r.get("run_id") for r in a.runs}
    return {
        "archive": a.url,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "headline": head,
        "storage": {"shards": a.shards, "unreadable_shards": [{"shard": s, "reason": r} for s, r in a.unreadable],
                    "rows_in_shards": a.all_rows, "runs_complete": len(complete & a.run_ids_in_shards),
                    "runs_incomplete": sorted(a.run_ids_in_shards - complete),
                    "first_encoded": t.first_encoded.isoformat() if t.first_encoded else None,
                    "last_encoded": t.last_encoded.isoformat() if t.last_encoded else None},
        "distributions": {f: t.distributions["lossy"][f].stats() for f in FIGURES},
        "by_codec": by_codec(t),
        "codec_choice": codec_choice(t),
        "by_format": by_format,
        "by_resolution": by_res,
        "worst": [dict(w) for w in t.worst],
        "errors": t.error_reasons.entries(),
        "kept": t.kept_reasons.entries(),
    }


# ---------------------------------------------------------------------------------------------- thumbnails

def source_uri(source: str | None, key: str, recorded: str) -> str:
    """Where the original of `key` is read from: under --source when given, else where it was found."""
    return source.rstrip("/") + "/" + key if source else recorded


def worst_region(a: np.ndarray, b: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the side×side window (on a side/3 grid) where the squared error is largest."""
    h, w = a.shape[:2]
    if h <= side and w <= side:
        return 0, 0
    cell = max(1, side // 3)
    err = ((a.astype(np.int32) - b.astype(np.int32)) ** 2).sum(-1)
    gh, gw = h // cell, w // cell
    if not gh or not gw:  # thinner than a cell (a 2-pixel-high panorama): along the long side only
        line = err.sum(0 if h < w else 1)
        best = int(np.argmax(np.convolve(line, np.ones(side), "valid"))) if len(line) >= side else 0
        return (0, min(best, max(0, w - side))) if h < w else (min(best, max(0, h - side)), 0)
    blocks = err[: gh * cell, : gw * cell].reshape(gh, cell, gw, cell).sum((1, 3))
    k = min(3, gh), min(3, gw)
    c = np.pad(blocks.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    win = c[k[0]:, k[1]:] - c[:-k[0], k[1]:] - c[k[0]:, :-k[1]] + c[:-k[0], :-k[1]]
    y, x = np.unravel_index(np.argmax(win), win.shape)
    return min(y * cell, max(0, h - side)), min(x * cell, max(0, w - side))


def _png(rgb: np.ndarray, thumb: bool) -> bytes:
    from PIL import Image

    im = Image.fromarray(rgb)
    if thumb:
        im.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def thumbnails(url: str, opts: dict, worst: list[dict], source: str | None) -> dict[str, bytes]:
    """Decoded (always) and original (where reachable and unchanged) thumbnails and worst-error crops.

    Each entry of `worst` gets `original` (a note on where it came from, or why it is missing) and
    `pictures` (names in the returned dict).
    """
    import fsspec
    import pyarrow.parquet as pq

    from tng.codec import Codec, TNGError, open_image
    from tng.codec.formats import format_of
    from tng.pipeline.archive import open_fs, shard_paths

    if not worst:
        return {}
    fs, root = open_fs(url, opts)
    want = {(w["key"], w["encoded_at"]) for w in worst}
    streams = {}
    for p in shard_paths(fs, root):
        try:
            t = pq.read_table(p, filesystem=fs, columns=["key", "encoded_at", "bitstream", "model_id", "codec"],
                              filters=[("key", "in", sorted({k for k, _ in want}))])
        except Exception:
            continue  # listed as unreadable by load_archive
        for k, at, data, model, form in zip(*(t[c].to_pylist() for c in ("key", "encoded_at", "bitstream", "model_id",
                                                                          "codec"))):
            if (k, at.isoformat()) in want:
                streams[k] = (data, model, form)
    pictures, codecs = {}, {}
    for i, w in enumerate(worst, 1):
        w["pictures"] = {}
        if w["key"] not in streams:
            w["original"] = "bitstream not found"
            continue
        data, model, form = streams[w["key"]]
        try:
            if form == "tng":
                codec = codecs.setdefault(model, Codec(model_id=model, device="cpu"))
                decoded = np.asarray(codec.decode(data).image.convert("RGB"))
            else:
                decoded = np.ascontiguousarray(format_of(form).restore(data, files=False).rgb)
        except Exception as e:  # one damaged row (libjxl says so with a ValueError) costs its pictures only
            w["original"] = f"bitstream does not decode: {e if isinstance(e, TNGError) else f'{type(e).__name__}: {e}'}"
            continue
        original, uri = None, source_uri(source, w["key"], w["source_uri"])
        try:
            with fsspec.open(uri, "rb", **opts) as f:
                raw = f.read()
            if hashlib.sha256(raw).hexdigest() != w["source_sha256"]:
                w["original"] = f"{uri} has changed since it was archived"
            else:
                original = open_image(raw).rgb
                w["original"] = uri
        except (OSError, TNGError, ValueError) as e:
            w["original"] = f"not reachable: {type(e).__name__}: {e}"
        y, x = worst_region(original, decoded, CROP_SIDE) if original is not None else (
            max(0, (decoded.shape[0] - CROP_SIDE) // 2), max(0, (decoded.shape[1] - CROP_SIDE) // 2))
        w["crop"] = {"x": int(x), "y": int(y), "side": CROP_SIDE}
        crop = (slice(y, y + CROP_SIDE), slice(x, x + CROP_SIDE))
        views = {"decoded": (decoded, True), "decoded-crop": (decoded[crop], False)}
        if original is not None:
            views.update({"original": (original, True), "original-crop": (original[crop], False)})
        for name, (rgb, thumb) in views.items():
            fname = f"{i:02d}-{name}.png"
            pictures[fname] = _png(np.ascontiguousarray(rgb), thumb)
            w["pictures"][name] = fname
    return pictures


# ---------------------------------------------------------------------------------------------- RD study

def rd_study(a: Archive, args: argparse.Namespace, opts: dict) -> tuple[dict, bytes | None]:
    from tng.evaluation.curves import bd_results, mean_curves, rate_at_psnr, setting_at_psnr
    from tng.evaluation.measure import baseline_encoders
    from tng.pipeline.sweep import sweep_sources

    baselines = parse_baselines(args.baselines)
    available = tuple(baseline_encoders(1, baselines))
    items = [{"key": key, "uri": source_uri(args.source, key, uri)} for key, uri, _ in a.sample]
    print(f"RD study: {len(items)} images from {args.source}, TNG q1–8 and {', '.join(available) or 'no baselines'}",
          file=sys.stderr)
    results = sweep_sources(items, model_id=args.model, baselines=available, workers=args.workers,
                            storage_options=opts, max_pixels=args.max_pixels, address=args.address,
                            effort=args.effort, in_process_files=args.in_process_files)
    measured = [r for r in results if not r["error"]]
    study = {"source": args.source, "seed": args.seed, "requested": args.sample, "model_id": args.model,
             "effort": args.effort,
             "baselines": list(available), "missing_baselines": [b for b in baselines if b not in available],
             "images": [{"key": r["key"], "width": r["width"], "height": r["height"]} for r in measured],
             "failed": [{"key": r["key"], "error": r["error"]} for r in results if r["error"]]}
    if not measured:
        study["error"] = "no sampled source image could be read"
        return study, None
    curves = mean_curves(measured)
    study["curves"] = curves
    study["bd"] = bd_results(curves, [("TNG", b) for b in available])
    source_bytes = {key: size for key, _, size in a.sample}
    src_bpp = float(np.mean([source_bytes[r["key"]] * 8 / (r["width"] * r["height"]) for r in measured]))
    pixels, bytes_in = a.tally.pixels, float(a.tally.groups["all"].get("all", Counter())["bytes_in"])
    study["source_bpp"] = src_bpp
    targets = []
    for t in args.targets or default_targets(curves["TNG"]):
        q, bpp = setting_at_psnr(curves["TNG"], t), rate_at_psnr(curves["TNG"], t)
        row = {"psnr": t, "quality": q, "tng_bpp": bpp,
               "savings_vs_source": (1 - bpp / src_bpp) if bpp else None,
               "projected_archive_bytes": bpp * pixels / 8 if bpp else None,
               "projected_savings": (1 - bpp * pixels / 8 / bytes_in) if bpp and bytes_in else None}
        for b in available:
            rb = rate_at_psnr(curves[b], t)
            row[f"{b.lower()}_bpp"] = rb
            row[f"size_vs_{b.lower()}"] = (bpp / rb - 1) if bpp and rb else None
        targets.append(row)
    study["targets"] = targets
    from tng.evaluation.plots import rd_plot

    return study, rd_plot(curves, f"{len(measured)} source images sampled from the archive, mean over images")


def default_targets(curve: list[dict], most: int = 6) -> list[float]:
    """Whole dB values inside TNG's measured mean-PSNR range, at most `most` of them, evenly spread."""
    lo, hi = math.ceil(min(p["psnr"] for p in curve)), math.floor(max(p["psnr"] for p in curve))
    if hi < lo:
        return [round(curve[len(curve) // 2]["psnr"], 1)]
    step = max(1, math.ceil((hi - lo + 1) / most))
    return [float(t) for t in range(lo, hi + 1, step)]


def parse_baselines(text: str) -> tuple[str, ...]:
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown:
        raise RunError(f"--baselines: unknown {', '.join(unknown)} (choose from {', '.join(BASELINE_NAMES)})")
    return tuple(BASELINE_NAMES[n] for n in names)


# ---------------------------------------------------------------------------------------------- entry points

def report(args: argparse.Namespace) -> int:
    from tng.evaluation import plots
    from tng.jobs import report_render

    opts = parse_storage_options(args.storage_option)
    if args.sample < 1:
        raise RunError(f"--sample must be at least 1, got {args.sample}")
    a = load_archive(args.archive, opts, args.worst, (args.sample, args.seed) if args.source else None)
    fig = archive_figures(a)
    pictures = {f"thumbs/{k}": v for k, v in thumbnails(args.archive, opts, fig["worst"], args.source).items()}
    tng_images = fig["headline"]["coded_by_tng"]
    for name, label in (("bpp", "bits per pixel (whole file)"), ("psnr", "PSNR, RGB (dB)"), ("ms_ssim", "MS-SSIM")):
        if fig["distributions"][name]:
            values, weights = a.tally.distributions["tng"][name].weighted_values()
            pictures[f"plots/{name}.png"] = plots.histogram(values, label, f"{label}: {tng_images} images",
                                                            weights=weights)
    if args.source:
        fig["rd_study"], rd_png = rd_study(a, args, opts)
        if rd_png:
            pictures["plots/rd.png"] = rd_png
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in pictures.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    (out / "summary.json").write_text(json.dumps(fig, indent=1, default=str) + "\n")
    (out / "report.md").write_text(report_render.markdown(fig, pictures))
    (out / "report.html").write_text(report_render.html(fig, pictures))
    print(info_text(fig))
    st = fig.get("rd_study")
    if st and "bd" in st:
        print(f"RD study on {len(st['images'])} sources: BD-rate of TNG vs " + ", ".join(
            f"{r['anchor']} {r['psnr']['bd_rate']:+.1f}%" if r["psnr"]["bd_rate"] is not None else f"{r['anchor']} n/a"
            for r in st["bd"]))
    print(f"wrote {out / 'report.html'}, {out / 'report.md'}, {out / 'summary.json'}")
    return 0


def info_text(fig: dict) -> str:
    h, s = fig["headline"], fig["storage"]
    mb = lambda n: f"{n / 1e6:,.1f} MB"  # noqa: E731
    lines = [f"archive {fig['archive']}: {h['keys']:,} images: {h['ok']:,} ok ({h['coded_by_tng']:,} coded by TNG, "
             f"{h['jpeg_lossless']:,} JPEGs recompressed losslessly, {h['kept_as_source']:,} kept as source), "
             f"{h['errors']:,} errors"]
    if h["ok"]:
        lines.append(f"bytes: {mb(h['bytes_in'])} in, {mb(h['bytes_out'])} out, savings "
                     f"{100 * h['savings']:.1f}%" + (f" ({h['ratio']:.2f}x)" if h["ratio"] else ""))
    for c in fig["by_codec"]:
        lines.append(f"  {c['label']}: {c['images']:,} images ({100 * c['share_of_images']:.1f}%), "
                     f"{mb(c['bytes_in'])} -> {mb(c['bytes_out'])}, saved {mb(c['saved_bytes'])}"
                     + (f" ({100 * c['savings']:.1f}%)" if c["savings"] is not None else "")
                     + (f", {100 * c['share_of_bytes_out']:.1f}% of the archive's bytes"
                        if c["share_of_bytes_out"] is not None else ""))
    if h["mean_bpp"] is not None:
        d = fig["distributions"]
        lines.append(f"lossy rows: mean {h['mean_bpp']:.3f} bpp (median {d['bpp']['median']:.3f}), mean PSNR "
                     f"{h['mean_psnr']:.2f} dB (5% of images below {d['psnr']['p5']:.2f})"
                     + (f", mean MS-SSIM {h['mean_ms_ssim']:.4f}" if h["mean_ms_ssim"] is not None else ""))
    lines.append(f"shards: {s['shards']} ({len(s['unreadable_shards'])} unreadable), {s['rows_in_shards']:,} rows; "
                 f"runs: {s['runs_complete']} complete, {len(s['runs_incomplete'])} without a manifest; "
                 f"last encoded {s['last_encoded']}")
    for u in s["unreadable_shards"]:
        lines.append(f"warning: unreadable shard {u['shard']}: {u['reason']}")
    return "\n".join(lines)


def info(args: argparse.Namespace) -> int:
    a = load_archive(args.archive, parse_storage_options(args.storage_option), worst=0)
    print(info_text(archive_figures(a)))
    return 0


def _targets(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected dB values separated by commas, got {text!r}") from None


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", help="folder or fsspec URL of an archive made by `tng compress`")
    p.add_argument("out", help="folder for report.html, report.md, summary.json and the pictures")
    p.add_argument("--source", help="the SRC the archive was made from: thumbnails of originals and an RD study")
    p.add_argument("--sample", type=int, default=16, help="images in the RD study (spread over the archive)")
    p.add_argument("--seed", type=int, default=0, help="seed of the RD study's sample")
    p.add_argument("--baselines", default="jpeg,webp,avif,jxl",
                   help=f"classic codecs in the RD study, comma-separated from {','.join(BASELINE_NAMES)}")
    p.add_argument("--targets", type=_targets, help="PSNRs (dB) for the quality-to-choose table, comma-separated "
                                                    "(default: whole dB values across TNG's measured range)")
    p.add_argument("--worst", type=int, default=6, help="how many of the worst images by PSNR to show")
    p.add_argument("--model", type=int, default=DEFAULT_MODEL_ID, help="TNG model id in the RD study")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    # and from jobs/common.py's parents (jobs/cli.py): --effort (the RD study codes as `tng compress
    # --effort` would), --workers (codec actors of the RD study), --address, --storage-option


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", help="folder or fsspec URL of an archive made by `tng compress`")
