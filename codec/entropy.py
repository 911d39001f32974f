"""Entropy coding of the latents to bytes with constriction's range coder.

Every probability the coder uses comes from an integer table stored with the weights:
- z (hyper-latent): one table per channel over -Z_RADIUS..Z_RADIUS (values are clamped there);
- y (latent) residuals round(y − μ): one table per scale index of the Gaussian conditional, over
  -r..r plus a final escape symbol; escaped values follow the range-coded stream as zigzag varints.
The scale index of each element comes from the integer hyper-synthesis, so encoder and decoder
choose identical tables on any machine. Because all indexes are known before y is decoded, the
elements are coded in groups of equal index: one vectorised constriction call per table.

Tile stream = varint(len(range-coded words)) + words + escapes.
"""
from __future__ import annotations

import math

import constriction
import numpy as np

from .errors import TNGError
from .varint import Reader, uvarint, zigzag_varints
from .intnet import ACT_BITS
from .model import SCALE_LEVELS, SCALE_MIN, SCALE_STEP, Z_RADIUS

TABLE_BITS = 22  # integer tables sum to about 2**22
MAX_RADIUS = 1024


def _ndtr(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def scale_tables() -> tuple[np.ndarray, np.ndarray]:
    """Integer pmfs of the Gaussian conditional, concatenated, with offsets (SCALE_LEVELS+1,).

    Table i covers residuals -r_i..r_i (index k + r_i) and ends with the escape symbol.
    Built once at export and stored with the weights; decoders use the stored integers.
    """
    tables, offsets = [], [0]
    for i in range(SCALE_LEVELS):
        s = SCALE_MIN * math.exp(SCALE_STEP * i)
        r = min(max(3, math.ceil(7 * s)), MAX_RADIUS)
        p = [_ndtr((k + 0.5) / s) - _ndtr((k - 0.5) / s) for k in range(-r, r + 1)]
        p.append(2 * _ndtr((-r - 0.5) / s))
        t = np.maximum(1, np.round(np.asarray(p) * 2**TABLE_BITS)).astype(np.int32)
        tables.append(t)
        offsets.append(offsets[-1] + len(t))
    return np.concatenate(tables), np.asarray(offsets, np.int64)


def z_tables(pmf: np.ndarray) -> np.ndarray:
    """Integer tables (C, 2·Z_RADIUS+1) from the factorized prior's float pmf."""
    return np.maximum(1, np.round(pmf * 2**TABLE_BITS)).astype(np.int32)


def scale_indexes(idx_fixed: np.ndarray) -> np.ndarray:
    """Fixed-point scale index (ACT_BITS fractional bits) -> table index, rounding half up, clamped."""
    return np.clip((idx_fixed + (1 << (ACT_BITS - 1))) >> ACT_BITS, 0, SCALE_LEVELS - 1)


class EntropyCoder:
    """Codes one tile's (z, y) given the integer tables; `hyper` maps ẑ to (μ, fixed-point index)."""

    def __init__(self, z_table: np.ndarray, y_tables: np.ndarray, y_offsets: np.ndarray):
        Cat = constriction.stream.model.Categorical
        self.z_models = [Cat(row.astype(np.float64), perfect=False) for row in z_table]
        self.y_models = []
        self.y_radius = np.empty(SCALE_LEVELS, np.int64)
        for i in range(SCALE_LEVELS):
            t = y_tables[y_offsets[i] : y_offsets[i + 1]]
            self.y_models.append(Cat(t.astype(np.float64), perfect=False))
            self.y_radius[i] = (len(t) - 2) // 2

    def encode(self, z: np.ndarray, residual: np.ndarray, index: np.ndarray) -> bytes:
        """z: (C, h, w) ints in range; residual: (M, H, W) ints; index: (M, H, W) table indexes."""
        enc = constriction.stream.queue.RangeEncoder()
        for c, model in enumerate(self.z_models):
            enc.encode((z[c].ravel() + Z_RADIUS).astype(np.int32), model)
        res, idx = residual.ravel(), index.ravel()
        order = np.argsort(idx, kind="stable")
        r = self.y_radius[idx[order]]
        vals = res[order]
        escaped = np.abs(vals) > r
        sym = np.where(escaped, 2 * r + 1, vals + r).astype(np.int32)
        bounds = np.searchsorted(idx[order], np.arange(SCALE_LEVELS + 1))
        for i in range(SCALE_LEVELS):
            if bounds[i] < bounds[i + 1]:
                enc.encode(sym[bounds[i] : bounds[i + 1]], self.y_models[i])
        words = enc.get_compressed().tobytes()
        return uvarint(len(words)) + words + zigzag_varints(vals[escaped])

    def decode(self, data: bytes, z_shape: tuple[int, int, int], hyper) -> np.ndarray:
        """Inverse of encode. hyper(z) -> (mean, index) of y; returns (z, residual, mean)."""
        rd = Reader(data)
        n = rd.uvarint("tile stream length")
        if n % 4:
            raise TNGError("corrupt file: bad tile stream length")
        words = np.frombuffer(rd.take(n, "tile stream"), np.uint32)
        dec = constriction.stream.queue.RangeDecoder(words)
        c, h, w = z_shape
        z = np.empty((c, h * w), np.int64)
        for ch, model in enumerate(self.z_models):
            z[ch] = dec.decode(model, h * w)
        z = (z - Z_RADIUS).reshape(c, h, w)
        mean, index = hyper(z)
        idx = index.ravel()
        order = np.argsort(idx, kind="stable")
        bounds = np.searchsorted(idx[order], np.arange(SCALE_LEVELS + 1))
        sym = np.empty(idx.size, np.int64)
        for i in range(SCALE_LEVELS):
            k = bounds[i + 1] - bounds[i]
            if k:
                sym[bounds[i] : bounds[i + 1]] = dec.decode(self.y_models[i], k)
        if not dec.maybe_exhausted():
            raise TNGError("corrupt file: tile stream is longer than its latents")
        r = self.y_radius[idx[order]]
        escaped = sym == 2 * r + 1
        vals = sym - r
        vals[escaped] = rd.zigzag_varints(int(escaped.sum()), "escape values")
        if not rd.at_end():
            raise TNGError("corrupt file: unexpected bytes after a tile")
        residual = np.empty(idx.size, np.int64)
        residual[order] = vals
        return z, residual.reshape(index.shape), mean
