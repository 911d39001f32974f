"""Entropy models of the latents: what each symbol costs, in training and in the range coder.

Two kinds share one contract (as CompressAI's EntropyBottleneck and GaussianConditional do):

    FactorizedPrior       z, the hyper-latent: a learned density per channel, fixed once trained
    GaussianConditional   y, the latent: N(μ, σ²) per element, μ and σ from the hyper-synthesis of ẑ

    quantize(x, mode[, mean])  "noise":   x (− μ) + U(−½, ½), the training relaxation of the rate
                               "round":   rounded, straight-through gradients: the reconstruction's
                                          input, and the rate of the symbols the coder codes
                               "symbols": the integers the coder codes (int64, on the CPU)
    likelihood(x[, scale])     mass of [x − ½, x + ½] (float, differentiable); bits() sums −log2
    export_tables()            integer probability tables, computed from the float model once,
                               when weights are exported, and stored in the weights file
    load_tables(tables)        installs stored tables; coding reads nothing else
    encode(enc, ...)           range coding of one tile's symbols with those tables,
    decode(dec, ...)           into / out of a stream the two kinds share (`encode_tile`)

Workflow: training calls quantize and likelihood (TNGModel.forward); `registry.export_weights`
calls export_tables and `registry.load_weights` load_tables; the Codec quantizes to symbols and
calls `encode_tile` / `decode_tile`.

Determinism (DESIGN.md §1): coding never evaluates a float density. z has one stored table per
channel; y's table is chosen by `table_index` from the integer output of the exact hyper-synthesis,
so encoder and decoder choose the same tables on every machine. The float `scale` serves training,
refinement and rate estimates only. Tables are numpy arrays rather than module buffers: they stay on
the CPU beside the coder when a model moves to a GPU, and a training state dict has none.

Tile stream = varint(len(range-coded words)) + words + escapes. The words hold z channel by channel,
then y's symbols grouped by table (all of y's table indexes are known before y is decoded, so each
table is one vectorised constriction call). With a checkerboard context model (codec/context.py), y
is coded in two such groups: the anchors, whose tables the hyper-synthesis gives, then the others,
whose tables the context network computes from the decoded anchors. A y residual beyond its table's
radius is coded as the table's escape symbol, and its value follows the words as a zigzag varint.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import constriction
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import TNGError
from .intnet import ACT_BITS, ste_round
from .varint import Reader, uvarint, zigzag_varints

Mode = Literal["noise", "round", "symbols"]

TABLE_BITS = 22  # integer tables sum to about 2**22
Z_RADIUS = 48  # z symbols are clamped to [-Z_RADIUS, Z_RADIUS], in training and coding alike
# The Gaussian conditional's scales: SCALE_MIN·exp(SCALE_STEP·i), i = 0..SCALE_LEVELS-1, one table each.
SCALE_LEVELS = 64
SCALE_MIN, SCALE_MAX = 0.11, 256.0
SCALE_STEP = math.log(SCALE_MAX / SCALE_MIN) / (SCALE_LEVELS - 1)
MAX_RADIUS = 1024  # widest y table: residuals beyond a table's radius are escaped


def clamp_ste(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamp in the forward pass; pass gradients through so clamped values can move back in range."""
    return x + (torch.clamp(x, lo, hi) - x).detach()


def _integer_pmf(p: np.ndarray) -> np.ndarray:
    """Float probabilities -> int32 frequencies summing to about 2**TABLE_BITS; none is zero, so
    every symbol stays codable."""
    return np.maximum(1, np.round(p * 2**TABLE_BITS)).astype(np.int32)


def _categorical(table: np.ndarray) -> constriction.stream.model.Categorical:
    # Built per call from the stored integers (cheap next to a tile's coding), since constriction's
    # models can be neither copied nor pickled, and models are copied to devices.
    return constriction.stream.model.Categorical(table.astype(np.float64), perfect=False)


class EntropyModel(nn.Module):
    """The contract of the module docstring; subclasses name their tables in TABLE_NAMES."""

    TABLE_NAMES: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._tables: dict[str, np.ndarray] | None = None

    def quantize(self, x: torch.Tensor, mode: Mode, *params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def likelihood(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def bits(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        """Per-image bits (B,) of x (B, C, H, W) under the float model."""
        return -torch.log2(self.likelihood(x, *params)).sum((1, 2, 3))

    def export_tables(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_tables(self, tables: dict[str, np.ndarray]) -> None:
        """Install the integer tables stored with the weights (as export_tables named them)."""
        self._tables = {name: np.asarray(tables[name]) for name in self.TABLE_NAMES}

    def _table(self, name: str) -> np.ndarray:
        if self._tables is None:
            raise TNGError(f"{type(self).__name__} has no integer tables: load the model from a weights file to code")
        return self._tables[name]


class FactorizedPrior(EntropyModel):
    """z's prior: per channel a learned CDF c(x) = sigmoid(f(x)), f a small monotone network
    (Ballé et al. 2018, appendix 6.1; filters 3, 3, 3). One table per channel over ±Z_RADIUS."""

    TABLE_NAMES = ("table",)

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = torch.log(torch.expm1(torch.tensor(1 / scale / dims[i + 1])))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), float(init))))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    # -- the float model ----------------------------------------------------------------------
    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, N) -> logits of the CDF at x, same shape. softplus keeps the matrices positive,
        so f is monotone (the reparameterisation of Ballé et al.)."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(m), x) + b
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def quantize(self, z: torch.Tensor, mode: Mode) -> torch.Tensor:
        if mode == "noise":
            return z + torch.empty_like(z).uniform_(-0.5, 0.5)
        if mode == "round":
            return self.clip(ste_round(z))
        if mode == "symbols":
            return torch.clamp(torch.round(z), -Z_RADIUS, Z_RADIUS).cpu().to(torch.int64)
        raise ValueError(f"unknown quantisation mode {mode!r}")

    @staticmethod
    def clip(z_hat: torch.Tensor) -> torch.Tensor:
        """Rounded z into the tables' range, straight-through (refinement rounds z its own way)."""
        return clamp_ste(z_hat, -Z_RADIUS, Z_RADIUS)

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """Probability mass of the unit interval around each value of z (B, C, H, W)."""
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            b, c, h, w = z.shape
            v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
            lower = self.logits_cdf(v - 0.5)
            upper = self.logits_cdf(v + 0.5)
            sign = -torch.sign(lower + upper).detach()  # evaluate in the tail with better precision
            p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
            return p.reshape(c, b, h, w).permute(1, 0, 2, 3).clamp_min(1e-9)

    # -- tables and coding --------------------------------------------------------------------
    @torch.no_grad()
    def pmf(self) -> torch.Tensor:
        """(C, 2·Z_RADIUS+1) float64 probabilities of the integers -Z_RADIUS..Z_RADIUS, tails folded
        into the end symbols (where clamping puts the values beyond them)."""
        c = self.matrices[0].shape[0]
        k = torch.arange(-Z_RADIUS, Z_RADIUS + 1, dtype=torch.float32).expand(c, 1, -1)
        cdf_hi = torch.sigmoid(self.logits_cdf(k + 0.5)).double()[:, 0]
        cdf_lo = torch.sigmoid(self.logits_cdf(k - 0.5)).double()[:, 0]
        pmf = cdf_hi - cdf_lo
        pmf[:, 0] += cdf_lo[:, 0]
        pmf[:, -1] += 1 - cdf_hi[:, -1]
        return pmf.clamp_min(0)

    def export_tables(self) -> dict[str, np.ndarray]:
        """{"table": (C, 2·Z_RADIUS+1) int32}, one row per channel."""
        return {"table": _integer_pmf(self.pmf().numpy())}

    def encode(self, enc: constriction.stream.queue.RangeEncoder, z: np.ndarray) -> None:
        """z: (C, h, w) symbols, as quantize(..., "symbols") gives them for one tile."""
        for c, row in enumerate(self._table("table")):
            enc.encode((z[c].ravel() + Z_RADIUS).astype(np.int32), _categorical(row))

    def decode(self, dec: constriction.stream.queue.RangeDecoder, shape: tuple[int, int, int]) -> np.ndarray:
        """The (C, h, w) symbols `encode` wrote."""
        c, h, w = shape
        z = np.empty((c, h * w), np.int64)
        for ch, row in enumerate(self._table("table")):
            z[ch] = dec.decode(_categorical(row), h * w)
        return (z - Z_RADIUS).reshape(c, h, w)


class GaussianConditional(EntropyModel):
    """y's model: each residual r = y − μ is coded under N(0, σ²) with σ on a fixed grid of
    SCALE_LEVELS scales; the hyper-synthesis predicts μ and a continuous index into the grid.
    No learned parameters: the tables depend on the grid alone, and are stored with the weights
    so that no decoder evaluates erfc itself. Table i covers −r_i..r_i (symbol k + r_i), r_i about
    7σ_i, and ends with the escape symbol, which carries the mass beyond."""

    TABLE_NAMES = ("tables", "offsets")

    # -- the float model ----------------------------------------------------------------------
    @staticmethod
    def quantize(y: torch.Tensor, mode: Mode, mean: torch.Tensor) -> torch.Tensor:
        """Residuals of y around mean; for "symbols", mean is the exact hyper-synthesis' (float64)."""
        if mode == "noise":
            return y - mean + torch.empty_like(y).uniform_(-0.5, 0.5)
        if mode == "round":
            return ste_round(y - mean)
        if mode == "symbols":
            return torch.round(y.cpu().double() - mean).to(torch.int64)
        raise ValueError(f"unknown quantisation mode {mode!r}")

    @staticmethod
    def dequantize(residual: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        return residual + mean

    @staticmethod
    def scale(index: torch.Tensor) -> torch.Tensor:
        """σ of a continuous grid index (the hyper-synthesis' output in real units), clamped to the
        grid straight-through. Training and estimates only; coding uses `table_index`."""
        return SCALE_MIN * torch.exp(SCALE_STEP * clamp_ste(index, 0, SCALE_LEVELS - 1))

    @staticmethod
    def table_index(index_fixed: np.ndarray) -> np.ndarray:
        """The exact hyper-synthesis' index (fixed point, ACT_BITS fractional bits) -> table index:
        integer arithmetic, rounding half up, clamped to the grid."""
        return np.clip((index_fixed + (1 << (ACT_BITS - 1))) >> ACT_BITS, 0, SCALE_LEVELS - 1)

    @staticmethod
    def likelihood(r: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Mass of [r-½, r+½] under N(0, scale²), computed in the lower tail for precision."""
        r = torch.abs(r)
        upper = torch.special.ndtr((0.5 - r) / scale)
        lower = torch.special.ndtr((-0.5 - r) / scale)
        return (upper - lower).clamp_min(1e-9)

    # -- tables and coding --------------------------------------------------------------------
    def export_tables(self) -> dict[str, np.ndarray]:
        """{"tables": every table's int32 pmf, concatenated; "offsets": (SCALE_LEVELS+1,) int64 bounds}."""
        tables = [_gaussian_table(SCALE_MIN * math.exp(SCALE_STEP * i)) for i in range(SCALE_LEVELS)]
        offsets = np.concatenate([[0], np.cumsum([len(t) for t in tables])]).astype(np.int64)
        return {"tables": np.concatenate(tables), "offsets": offsets}

    def _coding_tables(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Each table, and each table's radius."""
        tables, offsets = self._table("tables"), self._table("offsets")
        rows = [tables[offsets[i] : offsets[i + 1]] for i in range(SCALE_LEVELS)]
        return rows, np.array([(len(t) - 2) // 2 for t in rows], np.int64)

    def encode(self, enc: constriction.stream.queue.RangeEncoder, residual: np.ndarray,
               index: np.ndarray) -> np.ndarray:
        """residual, index: (M, H, W) symbols and table indexes. Returns the escaped values, which
        the caller writes after the range-coded words (`encode_tile`)."""
        rows, radius = self._coding_tables()
        order, bounds = _by_table(index.ravel())
        r = radius[index.ravel()[order]]
        vals = residual.ravel()[order]
        escaped = np.abs(vals) > r
        sym = np.where(escaped, 2 * r + 1, vals + r).astype(np.int32)
        for i, row in enumerate(rows):
            if bounds[i] < bounds[i + 1]:
                enc.encode(sym[bounds[i] : bounds[i + 1]], _categorical(row))
        return vals[escaped]

    def decode(self, dec: constriction.stream.queue.RangeDecoder, index: np.ndarray,
               escapes: Callable[[int], np.ndarray]) -> np.ndarray:
        """The residuals `encode` wrote; escapes(n) gives the n escaped values, in the order
        `encode` returned them."""
        rows, radius = self._coding_tables()
        idx = index.ravel()
        order, bounds = _by_table(idx)
        sym = np.empty(idx.size, np.int64)
        for i, row in enumerate(rows):
            if bounds[i] < bounds[i + 1]:
                sym[bounds[i] : bounds[i + 1]] = dec.decode(_categorical(row), bounds[i + 1] - bounds[i])
        r = radius[idx[order]]
        escaped = sym == 2 * r + 1
        vals = sym - r
        vals[escaped] = escapes(int(escaped.sum()))
        residual = np.empty(idx.size, np.int64)
        residual[order] = vals
        return residual.reshape(index.shape)


def _ndtr(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _gaussian_table(s: float) -> np.ndarray:
    """Integer pmf of round(N(0, s²)) over -r..r, then the escape symbol with the mass beyond r."""
    r = min(max(3, math.ceil(7 * s)), MAX_RADIUS)
    p = [_ndtr((k + 0.5) / s) - _ndtr((k - 0.5) / s) for k in range(-r, r + 1)]
    p.append(2 * _ndtr((-r - 0.5) / s))
    return _integer_pmf(np.asarray(p))


def _by_table(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stable order of the elements grouping equal table indexes, and each table's [start, end)
    in that order (bounds[i]..bounds[i+1]): the encoder and decoder group identically."""
    # The stable order is unique, so any stable sort gives it; on uint8 keys numpy's is a radix sort.
    order = np.argsort(idx.astype(np.uint8) if SCALE_LEVELS <= 256 else idx, kind="stable")
    return order, np.searchsorted(idx[order], np.arange(SCALE_LEVELS + 1))


def encode_tile(z_prior: FactorizedPrior, y_prior: GaussianConditional, z: np.ndarray,
                residual: np.ndarray, index: np.ndarray, anchor: np.ndarray | None = None) -> bytes:
    """One tile's stream (module docstring) from its symbols: z (C, h, w), residual and table
    index (M, H, W). With a checkerboard context, anchor (H, W) marks the latents coded first: y's
    words are then the anchors', then the others' (whose tables the decoder learns from the anchors),
    and the escapes follow in the same order."""
    enc = constriction.stream.queue.RangeEncoder()
    z_prior.encode(enc, z)
    escapes = [y_prior.encode(enc, residual[..., g], index[..., g]) for g in _groups(anchor)]
    words = enc.get_compressed().tobytes()
    return uvarint(len(words)) + words + zigzag_varints(np.concatenate(escapes))


def _groups(anchor: np.ndarray | None) -> list:
    """The selections of y's elements coded one after the other: all at once, or anchors then the rest."""
    return [slice(None)] if anchor is None else [anchor, ~anchor]


Context = Callable[[np.ndarray, torch.Tensor, np.ndarray], tuple[torch.Tensor, np.ndarray]]


def decode_tile(z_prior: FactorizedPrior, y_prior: GaussianConditional, data: bytes,
                z_shape: tuple[int, int, int],
                hyper: Callable[[np.ndarray], tuple[torch.Tensor, np.ndarray]],
                context: tuple[np.ndarray, Context] | None = None) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Inverse of encode_tile. hyper(z) -> (mean, table index) of y; context, for a checkerboard
    model: (anchor mask, update), update(residual with the anchors decoded, mean, table index) ->
    (mean, table index) of every latent. Returns (z, residual, mean)."""
    rd = Reader(data)
    n = rd.uvarint("tile stream length")
    if n % 4:
        raise TNGError("corrupt file: bad tile stream length")
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(rd.take(n, "tile stream"), np.uint32))
    z = z_prior.decode(dec, z_shape)
    mean, index = hyper(z)
    groups = _groups(None if context is None else context[0])
    residual = np.zeros(index.shape, np.int64)
    for k, g in enumerate(groups):
        last = k == len(groups) - 1

        def escapes(count: int) -> np.ndarray:
            if last and not dec.maybe_exhausted():  # y's last symbols end the range-coded words
                raise TNGError("corrupt file: tile stream is longer than its latents")
            return rd.zigzag_varints(count, "escape values")

        if k:  # the anchors are decoded: the others' tables follow from them
            mean, index = context[1](residual, mean, index)
        residual[..., g] = y_prior.decode(dec, index[..., g], escapes)
    if not rd.at_end():
        raise TNGError("corrupt file: unexpected bytes after a tile")
    return z, residual, mean
