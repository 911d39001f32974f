"""Effort levels: how much encode-time search a file gets, as `cjxl -e` and `avifenc --speed` offer.

One knob, `Codec(effort=N)` / `tng encode --effort N`, N from 0 (the plain encode: one pass of the
analysis) to 9. Every level decodes with the same decoder at the same speed; higher levels spend more
encode time for smaller files at equal quality, in two ways:

- a post-filter per tile (codec/postfilter.py): a small linear filter the encoder fits to the tile by
  least squares and sends when it pays for its own bits; costs a fraction of a plain encode;
- refinement of the latents (codec/refine.py): steps of gradient descent on the tile's own
  rate–distortion loss, each a pass of the synthesis and its gradient (one to two plain encodes).

What each level gains and costs is measured in BENCHMARKS.md ("Effort levels").
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import TNGError


@dataclass(frozen=True)
class Effort:
    """One level's recipe."""

    level: int
    refine_steps: int  # refinement steps per tile (0: the analysis' latents as they are)
    filter_kernels: tuple[int, ...]  # post-filter sizes tried per tile (empty: none)
    encode_time: float = 1.0  # × a plain encode's time on 2 CPU cores, as measured (BENCHMARKS.md, "Effort levels")

    def describe(self) -> str:
        parts = []
        if self.filter_kernels:
            sizes = "/".join(f"{k}x{k}" for k in self.filter_kernels)
            parts.append(f"post-filter ({sizes})")
        if self.refine_steps:
            parts.append(f"{self.refine_steps} refinement steps")
        return " + ".join(parts) or "plain encode"

    @property
    def cost(self) -> str:
        return "the plain encode's time" if self.level == 0 else f"about {self.encode_time:.3g}x its time"


_SMALL, _ALL = (1, 3), (1, 3, 5)
LEVELS = (  # encode_time: BENCHMARKS.md, "Effort levels" (768x512 crops, 2 cores, quiet; 7-9 from their s/MP)
    Effort(0, 0, ()),
    Effort(1, 0, _SMALL, 1.2),
    Effort(2, 0, _ALL, 1.5),
    Effort(3, 5, _ALL, 11),
    Effort(4, 10, _ALL, 21),
    Effort(5, 20, _ALL, 39),
    Effort(6, 40, _ALL, 75),
    Effort(7, 80, _ALL, 140),
    Effort(8, 160, _ALL, 280),
    Effort(9, 320, _ALL, 560),
)
MAX_EFFORT = len(LEVELS) - 1
DEFAULT_EFFORT = 1  # the post-filter: a few percent smaller files for a fraction of an encode


def effort(level: int) -> Effort:
    """The recipe of a level; TNGError for a level that does not exist."""
    if not isinstance(level, int) or not 0 <= level <= MAX_EFFORT:
        raise TNGError(f"effort must be a whole number from 0 to {MAX_EFFORT}, got {level!r}")
    return LEVELS[level]
