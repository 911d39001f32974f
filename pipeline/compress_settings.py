"""CompressSettings: what a compress run codes with and how it is spread, whichever way it runs
(the Ray Data graph, compress_graph.py, or in this process, in_process.py)."""
from __future__ import annotations

from dataclasses import dataclass

from tng.codec.classic import DEFAULT_CHOICE
from tng.codec.effort import DEFAULT_EFFORT
from tng.codec.images import DEFAULT_MAX_PIXELS
from tng.codec.jpeg_transcode import DEFAULT_JPEG_CHOICE
from tng.codec.registry import DEFAULT_MODEL_ID

from .run import IN_PROCESS_FILES


@dataclass(frozen=True)
class CompressSettings:
    """What a run codes with and how it is spread (the manifest records these)."""
    quality: float = 4.0
    target_psnr: float | None = None
    model_id: int = DEFAULT_MODEL_ID
    effort: int = DEFAULT_EFFORT
    codec: str = DEFAULT_CHOICE  # for sources other than JPEG, one of classic.CHOICES (pipeline/stages.py)
    lossless: bool = False  # every source kept without loss (lossless JPEG XL, or the file)
    jpeg: str = DEFAULT_JPEG_CHOICE
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = 2
    gpus_per_worker: float = 0
    batch_size: int = 8
    rows_per_shard: int = 1000
    incremental: bool = False
    listing: str | None = None  # a listing manifest to take SRC's keys from, instead of listing SRC
    max_error_share: float = 1.0  # recorded only: the job decides what it means for the exit status
    in_process_files: int = IN_PROCESS_FILES  # runs of at most this many files (and archive shards) run without Ray; 0: never
