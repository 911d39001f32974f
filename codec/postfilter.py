"""Post-filters: a per-tile adaptation of the decoder, fitted by the encoder and carried in the stream.

A trained decoder is right on average, not for every image: its pixels of one photo are often a
little blurred, shifted in colour or off in level in ways a small linear filter of that photo can
undo. The encoder has the original, so it fits that filter per tile by least squares (a Wiener
filter, as video codecs' adaptive loop filters do), and keeps it only when the rate–distortion loss
the codec minimises, λ(q)·255²·MSE + bpp, counts the filter's own bits and still falls.

The filter corrects the decoder's uint8 pixels R of a tile, over all three channels of a k×k
neighbourhood (k in 1, 3, 5; tile borders replicated, as tiles are coded independently):

    out_c = clamp(R_c + floor((Σ_ch Σ_dy,dx w[c, ch, dy, dx] · R_ch(y+dy, x+dx) + 255·b_c + 2**(s-1)) / 2**s), 0, 255)

with integer weights and biases |w|, |b| <= 127 and a shift s in 0..15 (no rounding term at s = 0).
Every product is below 2**15 and every sum below 2**23, so an fp32 convolution (or matrix product)
computes the sums exactly in any order on any device, and the pixels are the same everywhere.

Stream form (the adaptation section of a version-2 file, codec/container.py), one record per tile:

    byte      0 for no filter, else (index of k in KERNELS, from 1) << 4 | s
    varints   zigzag: w (3·3·k·k, in the order of the array w[c, ch, dy, dx]), then b (3)

Decoding refuses with a TNGError any record that is truncated, names an unknown size, or holds a
value out of range; the work per tile is bounded by the largest kernel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import TNGError
from .intsynth import exact_fp32_convolutions
from .varint import Reader, zigzag_varints

KERNELS = (1, 3, 5)
W_MAX = 127
SHIFTS = range(16)
SECTION_VERSION = 1  # the adaptation section's own version byte
FIT_SAMPLES = 1 << 16  # about this many pixels, evenly spaced, make the fit: ample for 76 unknowns
FIT_BAND = 64  # rows of pixels whose regression rows are built at once
BAND_VALUES = 2**17  # fp32 values per band of `PostFilter.apply` on a CPU: half a MiB, within a core's L2


@dataclass(frozen=True)
class PostFilter:
    """One tile's filter: integer weights (3, 3, k, k), biases (3,) and the shift s."""

    weights: np.ndarray  # int64 (3 out, 3 in, k, k)
    bias: np.ndarray  # int64 (3,)
    shift: int

    @property
    def size(self) -> int:
        return self.weights.shape[-1]

    def nbytes(self) -> int:
        """len(self.to_bytes()), without making them: a varint per value, 1 byte below 64 in magnitude, else 2."""
        values = np.concatenate([self.weights.ravel(), self.bias])
        return 1 + len(values) + int(np.count_nonzero((values >= 64) | (values < -64)))

    def to_bytes(self) -> bytes:
        head = bytes([(KERNELS.index(self.size) + 1) << 4 | self.shift])
        return head + zigzag_varints(np.concatenate([self.weights.ravel(), self.bias]))

    def apply(self, rgb: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
        """The filtered (h, w, 3) uint8 pixels of a tile's decoded (h, w, 3) uint8 pixels."""
        h, w = rgb.shape[:2]
        r = self.size // 2
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
        padded = torch.from_numpy(np.pad(rgb, ((r, r), (r, r), (0, 0)), mode="edge")).to(device) if r else x
        b = torch.from_numpy(self.bias * 255).to(device=device, dtype=torch.float32)
        weights = torch.from_numpy(self.weights).to(device=device, dtype=torch.float32)
        colour = weights[:, :, 0, 0].t()
        out = torch.empty_like(x)
        # In bands of rows on a CPU, so that the few passes over each value find it in cache.
        rows = h if torch.device(device).type != "cpu" else max(1, BAND_VALUES // (3 * w))
        with exact_fp32_convolutions():  # integer sums below 2**23: exact in any order, unless TF32/bf16 math rounds them
            for y0 in range(0, h, rows):
                y1 = min(y0 + rows, h)
                if r == 0:  # a colour matrix: a matrix product (oneDNN's 1×1 convolution of 3 channels is slower)
                    acc = torch.addmm(b, x[y0:y1].reshape(-1, 3).float(), colour).view(y1 - y0, w, 3)
                else:  # channels-last: oneDNN's fast layout
                    band = padded[y0 : y1 + 2 * r].permute(2, 0, 1)[None].float().contiguous(memory_format=torch.channels_last)
                    acc = F.conv2d(band, weights, b)[0].permute(1, 2, 0)
                if self.shift:  # floor((acc + 2**(s-1)) / 2**s), exact in fp32 for integers below 2**23
                    acc = acc.add_(1 << (self.shift - 1)).mul_(2.0**-self.shift).floor_()
                out[y0:y1] = acc.add_(x[y0:y1]).clamp_(0, 255)
        return out.cpu().numpy()


def pack_section(filters: list[PostFilter | None]) -> bytes:
    """The adaptation section of a file whose tiles have these filters (None: no filter)."""
    return bytes([SECTION_VERSION]) + b"".join(f.to_bytes() if f else b"\x00" for f in filters)


def unpack_section(data: bytes | memoryview, tiles: int) -> list[PostFilter | None]:
    """The filters of `tiles` tiles from an adaptation section; TNGError for anything malformed."""
    r = Reader(data)
    version = r.take(1, "adaptation section")[0]
    if version != SECTION_VERSION:
        raise TNGError(f"unsupported adaptation section version {version} (this decoder reads {SECTION_VERSION})")
    out: list[PostFilter | None] = []
    for _ in range(tiles):
        head = r.take(1, "post-filter")[0]
        if head == 0:
            out.append(None)
            continue
        kind, shift = head >> 4, head & 15
        if not 1 <= kind <= len(KERNELS):
            raise TNGError(f"corrupt file: unknown post-filter size {kind}")
        k = KERNELS[kind - 1]
        values = r.zigzag_varints(9 * k * k + 3, "post-filter")
        if np.abs(values).max() > W_MAX:
            raise TNGError(f"corrupt file: post-filter weight beyond ±{W_MAX}")
        out.append(PostFilter(values[:-3].reshape(3, 3, k, k), values[-3:], shift))
    if not r.at_end():
        raise TNGError(f"corrupt file: {len(data) - r.pos} unexpected bytes after the post-filters")
    return out


def _normal_equations(decoded: np.ndarray, err: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(XᵀX, XᵀE) of the least-squares fit over about FIT_SAMPLES pixels on an even grid, scaled to
    stand for all of the tile's pixels: X holds each pixel's k×k neighbourhood in every channel (column
    ch·k·k + dy·k + dx, the order of the weights w[c, ch, dy, dx]) and the constant 255; E the error."""
    r = k // 2
    p = np.pad(decoded, ((r, r), (r, r), (0, 0)), mode="edge")  # uint8: only the sampled pixels become fp64
    h, w = decoded.shape[:2]
    step = max(1, int(math.sqrt(h * w / FIT_SAMPLES)))
    a = torch.zeros((3 * k * k + 1, 3 * k * k + 1), dtype=torch.float64)
    b = torch.zeros((3 * k * k + 1, 3), dtype=torch.float64)
    rows = 0
    for y0 in range(0, h, FIT_BAND * step):  # in bands of rows: bounded memory
        y1 = min(y0 + FIT_BAND * step, h)
        cols = [p[y0 + dy : y1 + dy : step, dx : dx + w : step, ch]
                for ch in range(3) for dy in range(k) for dx in range(k)]
        cols.append(np.full(cols[0].shape, 255, np.uint8))
        x = torch.from_numpy(np.stack(cols, -1).reshape(-1, len(cols))).double()
        # fp64, where these integer sums are exact in any order (fp32's would move the fit: neighbouring
        # pixels are nearly collinear); torch's, on the threads the codec's convolutions use.
        a += x.T @ x
        b += x.T @ torch.from_numpy(np.ascontiguousarray(err[y0:y1:step, ::step])).view(-1, 3)
        rows += len(x)
    scale = h * w / rows
    return a.numpy() * scale, b.numpy() * scale


def fit(source: np.ndarray, decoded: np.ndarray, lam: float, kernels: tuple[int, ...] = KERNELS,
        device: torch.device | str = "cpu") -> tuple[PostFilter | None, np.ndarray]:
    """The filter that lowers λ·255²·MSE + bpp of a tile the most, counting its own bits over the tile's
    pixels (None when none pays), and the tile's pixels through it (or `decoded` itself).

    source, decoded: (h, w, 3) uint8. The least-squares fit uses about FIT_SAMPLES pixels. Per size, the shift is chosen by the loss the normal
    equations predict; the sizes' candidates are then applied, and their real losses decide."""
    n = source.shape[0] * source.shape[1]
    target = source.astype(np.float64)
    err = target - decoded

    def sum_sq(d: np.ndarray) -> float:  # a dot product of integers in fp64: exact, in any order
        t = torch.from_numpy(d).view(-1)
        return float(torch.dot(t, t))

    k_max = max(kernels)
    a, bvec = _normal_equations(decoded, err, k_max)
    sse0 = sum_sq(err)

    def loss(sse: float, f: PostFilter | None) -> float:  # λ·255²·MSE + bpp, MSE in [0, 1] units, 3 channels
        return lam * sse / (3 * n) + 8 * (f.nbytes() if f else 1) / n  # no filter: a byte too

    best, best_out, best_loss = None, decoded, loss(sse0, None)
    for k in kernels:
        idx = _columns(k, k_max)
        ak, bk = a[np.ix_(idx, idx)], bvec[idx]
        ridge = 1e-6 * np.trace(ak) / len(idx)
        try:
            coef = np.linalg.solve(ak + ridge * np.eye(len(idx)), bk)  # (columns, 3 outputs)
        except np.linalg.LinAlgError:
            continue
        candidate, predicted = None, math.inf
        for s in SHIFTS:
            q = np.round(coef * 2.0**s)
            if np.abs(q).max() > W_MAX:
                break  # finer shifts only grow the integers
            wr = q / 2.0**s
            # The correction is rounded to whole levels: about 1/12 of a level² of noise per sample.
            sse = sse0 - 2 * float((wr * bk).sum()) + float(np.einsum("ic,ij,jc->", wr, ak, wr)) + 3 * n / 12
            f = _from_columns(q.astype(np.int64), k, s)
            if loss(sse, f) < predicted:
                candidate, predicted = f, loss(sse, f)
        if candidate is not None:
            out = candidate.apply(decoded, device)
            real = loss(sum_sq(np.subtract(target, out, out=err)), candidate)  # err is no longer needed
            if real < best_loss:
                best, best_out, best_loss = candidate, out, real
    return best, best_out


def _columns(k: int, k_max: int) -> np.ndarray:
    """Indexes of a k×k neighbourhood's columns (and the constant's) among those of k_max×k_max."""
    off = (k_max - k) // 2
    cols = [ch * k_max * k_max + (dy + off) * k_max + dx + off for ch in range(3) for dy in range(k) for dx in range(k)]
    return np.array(cols + [3 * k_max * k_max])


def _from_columns(q: np.ndarray, k: int, s: int) -> PostFilter:
    """A filter from its integer regression coefficients (3·k·k + 1 columns, 3 outputs)."""
    return PostFilter(np.ascontiguousarray(q[:-1].T.reshape(3, 3, k, k)), q[-1].copy(), s)

