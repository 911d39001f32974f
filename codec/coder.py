"""Encoding images to `.tng` bytes and back: tiles, transforms, entropy coding, rate control.

    from tng.codec import Codec, open_image
    enc = Codec().encode(open_image("photo.jpg"), quality=4)      # or target_psnr= / target_bpp=
    dec = Codec().decode(enc.data)                                 # dec.image is a PIL image

Images are cut into tiles of `tile` pixels (default 1024), each padded to a multiple of 64 by edge
replication and coded independently, so memory is bounded by the tile size plus the image itself.
Sections of a file: [exif, icc profile, alpha (PNG, lossless), tile 0, tile 1, ...]; files whose tiles
carry post-filters (format version 2) have the adaptation section before the tiles.

The encoder's effort (codec/effort.py) decides how hard it searches: refinement of each tile's
latents (codec/refine.py) and a post-filter per tile (codec/postfilter.py), which the decoder applies
to the tile's pixels in exact integer arithmetic.

Decoding is exact: symbols, probability tables and means come from an integer network (intnet.py),
and the synthesis runs in exact integer arithmetic (exactsynth.py), so a stream decodes to the same
pixels on every machine, thread count and device; the encoder's reconstruction is those pixels.
Only the encoder's analysis is a float network (it decides the symbols, which are then fixed).
Models with a checkerboard context (codec/context.py) code each tile's latents in two passes, the
anchors first, whose decoded values give the others' tables through a second integer network.
"""
from __future__ import annotations

import copy
import io
from dataclasses import replace
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import container
from .allocator import keep_freed_memory
from .context import CheckerboardContext, anchor_mask
from .effort import DEFAULT_EFFORT, Effort, effort as effort_recipe
from .entropy_models import decode_tile, encode_tile
from .errors import TNGError
from .exactsynth import as_image
from .images import DEFAULT_MAX_PIXELS, Colour, Flag, SourceImage, to_pil
from .intnet import ACT_BITS
from .metrics import psnr
from .model import LEVELS, STRIDE, lambda_at
from .postfilter import PostFilter, fit as fit_filter, pack_section, unpack_section
from .refine import fast_bf16, refine_latents
from .registry import DEFAULT_MODEL_ID, LoadedModel, load_model

DEFAULT_TILE = 1024
MIN_QUALITY, MAX_QUALITY = 1.0, float(LEVELS)
_META_SECTIONS = 3  # exif, icc, alpha


@dataclass
class Encoded:
    data: bytes  # the complete .tng file
    quality: float  # the quality actually used (as stored in the header)
    width: int
    height: int
    bpp: float  # len(data)·8 / pixels
    psnr: float  # of the decoded RGB against the source RGB, dB (inf when identical)
    reconstruction: np.ndarray  # (H, W, 3) uint8: exactly what a decoder will produce
    target_met: bool = True  # False when a --target-psnr / --target-bpp could not be reached


@dataclass
class Decoded:
    header: container.Header
    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None
    exif: bytes | None
    icc_profile: bytes | None

    @property
    def image(self) -> Image.Image:
        """The image in its original colour mode (L, LA, RGB or RGBA)."""
        return to_pil(self.rgb, self.alpha, Colour(self.header.colour))


@dataclass(frozen=True)
class _Plan:
    """One image of an encode_batch call and its tiles (y, x, h, w): what to code, never what has
    been coded; each stage returns its results instead of writing them here."""

    index: int  # in the call's list of images
    src: SourceImage
    tiles: tuple[tuple[int, int, int, int], ...]

    def tile(self, t: int) -> np.ndarray:
        y, x, h, w = self.tiles[t]
        return self.src.rgb[y : y + h, x : x + w]


_Batch = list[tuple[_Plan, int]]  # (image, tile index) pairs of one padded tile size
# A tile's stream, the decoder's pixels when reconstructed, and its post-filter (None: none)
_Coded = tuple[bytes, np.ndarray | None, PostFilter | None]


def _tiles(height: int, width: int, tile: int):
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            yield y, x, min(tile, height - y), min(tile, width - x)


def _padded(n: int) -> int:
    return -(-n // STRIDE) * STRIDE


class Codec:
    """Encoder and decoder with their settings. Models are loaded lazily and cached per id.

    device: "cpu", "cuda", ... (default: cuda when available). analysis_dtype: torch.float32 or
    torch.bfloat16 for the analysis transform (encoder only: it chooses the symbols, which any decoder
    decodes identically); default bf16 where the device runs it natively (AVX-512 BF16 or AMX CPUs,
    GPUs with bf16 units), else fp32. The two choose slightly different symbols (their rates at equal
    PSNR: BENCHMARKS.md); per machine and dtype the bytes are fixed.
    model: an already loaded model (registry.load_weights) to use instead of the registry's for its id.
    batch_pixels: most (padded) pixels that `encode_batch` sends through the networks at once
    (default: four tiles' worth on a GPU; on CPU one tile at a time, as batches ran slower there, their
    working set outgrowing the caches: BENCHMARKS.md).
    effort: the encoder's effort level, 0-9 (codec/effort.py): smaller files at equal quality for more
    encode time; decoding costs the same at every level.
    """

    def __init__(self, model_id: int = DEFAULT_MODEL_ID, device: str | None = None,
                 analysis_dtype: torch.dtype | None = None, tile: int = DEFAULT_TILE,
                 max_pixels: int = DEFAULT_MAX_PIXELS, model: LoadedModel | None = None,
                 batch_pixels: int | None = None, effort: int = DEFAULT_EFFORT):
        if tile % STRIDE or not STRIDE <= tile < 2**16:
            raise TNGError(f"tile size must be a multiple of {STRIDE} below 65536, got {tile}")
        self.model_id, self.tile, self.max_pixels = model_id, tile, max_pixels
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.analysis_dtype = analysis_dtype or (torch.bfloat16 if fast_bf16(self.device) else torch.float32)
        if self.device.type == "cpu":
            keep_freed_memory()  # the networks' large buffers reuse pages instead of faulting in fresh ones
        self.effort = effort_recipe(effort)
        self.batch_pixels = batch_pixels or (1 if self.device.type == "cpu" else 4 * tile * tile)
        self._nets: dict[int, torch.nn.Module] = {}
        self._loaded = {model.model_id: model} if model else {}
        if model:
            self.model_id = model.model_id

    # -- model parts ------------------------------------------------------------------------
    def _model(self, model_id: int) -> tuple[LoadedModel, torch.nn.Module]:
        lm = self._loaded.get(model_id) or load_model(model_id)
        if model_id not in self._nets:
            net = lm.net
            if self.device.type != "cpu":  # the registry's copy stays on CPU for other codecs
                net = copy.deepcopy(net).to(self.device)
            self._nets[model_id] = net
        return lm, self._nets[model_id]

    def _pixels(self, tiles: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tiles of equal padded size as (n, 3, H, W) in [0, 1], edge-padded, and the (n, 1, H, W) mask of their own pixels."""
        hp, wp = _padded(tiles[0].shape[0]), _padded(tiles[0].shape[1])
        x = np.stack([np.pad(t, ((0, hp - t.shape[0]), (0, wp - t.shape[1]), (0, 0)), mode="edge") for t in tiles])
        x = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        valid = torch.zeros(len(tiles), 1, hp, wp, device=self.device)
        for k, t in enumerate(tiles):
            valid[k, :, : t.shape[0], : t.shape[1]] = 1
        return x, valid

    @torch.no_grad()
    def _analyse(self, net, x: torch.Tensor) -> torch.Tensor:
        """Latents (n, M, h, w) of padded tiles (n, 3, H, W), in one pass of the network."""
        # Channels-last: oneDNN's and cuDNN's fastest layout, kept through the network (the weights
        # are converted at load) instead of reordered around every convolution.
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.analysis_dtype, enabled=self.analysis_dtype != torch.float32):
            return net.g_a(x).float().contiguous()

    @staticmethod
    def _gains(net, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
        g, ig = net.gains(torch.tensor([quality], dtype=torch.float32, device=net.log_gain.device))
        return g, ig

    @torch.no_grad()
    def _code(self, lm: LoadedModel, net, y: torch.Tensor, quality: float, steps: int = 0,
              pixels: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[list[bytes], torch.Tensor, torch.Tensor]:
        """Quantise and entropy-code tiles' latents (n, M, h, w), refined first for `steps` steps against
        the tiles' pixels (`_pixels`, needed then). Returns (one stream per tile, residuals, means) on CPU."""
        gain, inv_gain = self._gains(net, quality)
        if steps:
            yg, z = refine_latents(net, *pixels, y, gain, inv_gain, _lambda(lm, quality), steps)
        else:
            yg = y * gain
            z = net.h_a(yg).float()
        z, residual, mean, idx = self._symbols(lm, net, yg, z)
        table = net.y_prior.table_index
        anchor = anchor_mask(*residual.shape[-2:]).numpy() if lm.context else None
        streams = [encode_tile(net.z_prior, net.y_prior, z[k].numpy(), residual[k].numpy(), table(idx[k].numpy()),
                               anchor) for k in range(len(z))]
        return streams, residual, mean

    @staticmethod
    def _symbols(lm: LoadedModel, net, yg: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The coded integers of gained latents yg and hyper-latents z, on CPU: (z symbols, residuals,
        means, fixed-point scale indexes), the last two from the exact hyper-synthesis and, with a
        context model, from the anchors' symbols as the decoder will have them."""
        z = net.z_prior.quantize(z, "symbols")
        mean, idx = lm.hyper(z)
        residual = net.y_prior.quantize(yg, "symbols", mean)
        if lm.context:  # the anchors' residuals stand: their means do not change
            mean, idx = CheckerboardContext.exact(residual + mean, mean, idx, lm.context)
            residual = net.y_prior.quantize(yg, "symbols", mean)
        return z, residual, mean, idx

    def _synthesise(self, lm: LoadedModel, residual: torch.Tensor, mean: torch.Tensor, q_milli: int) -> torch.Tensor:
        """The decoder's pixels (n, 3, H, W), in exact integer arithmetic (codec/exactsynth.py): the same everywhere."""
        return lm.synth(residual, mean, q_milli, self.device)

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, image: SourceImage | np.ndarray, quality: float = 4.0, target_psnr: float | None = None,
               target_bpp: float | None = None) -> Encoded:
        """Encode at a quality in [1, 8], or the quality that meets target_psnr (dB) / target_bpp."""
        out = self.encode_batch([image], quality, target_psnr, target_bpp)[0]
        if isinstance(out, Exception):
            raise out
        return out

    def encode_batch(self, images: list[SourceImage | np.ndarray], quality: float = 4.0,
                     target_psnr: float | None = None, target_bpp: float | None = None) -> list[Encoded | TNGError]:
        """Encode several images as `encode` does, one result per image in order: an Encoded, or the
        TNGError that image alone raised. Tiles of equal size, of one image or of several, go through
        the networks together, up to `batch_pixels` at a time (a gain on GPUs only)."""
        if target_psnr is not None and target_bpp is not None:
            raise TNGError("give either a target PSNR or a target bpp, not both")
        searching = target_psnr is not None or target_bpp is not None
        if not searching and not MIN_QUALITY <= quality <= MAX_QUALITY:
            raise TNGError(f"quality must be between {MIN_QUALITY:g} and {MAX_QUALITY:g}, got {quality:g}")
        lm, net = self._model(self.model_id)
        results: list[Encoded | TNGError | None] = [None] * len(images)
        plans = []
        for i, image in enumerate(images):
            try:
                plans.append(self._plan(i, image))
            except TNGError as e:
                results[i] = e
        if searching:
            # A search keeps the latents (2.5 bytes per pixel) and tries qualities image by image,
            # each try coded as a fixed quality is.
            tiles, failed = self._per_tile(plans, partial(self._analyse_tiles, net))
            finish = partial(self._search, lm, net, target_psnr=target_psnr, target_bpp=target_bpp)
        else:  # each batch of tiles is coded through to streams and pixels
            q_milli = int(round(quality * 1000))
            tiles, failed = self._per_tile(plans, partial(self._code_tiles, lm, net, q_milli))
            finish = partial(self._pack, lm, q_milli)
        for plan in plans:
            if plan.index in failed:
                results[plan.index] = failed[plan.index]
                continue
            try:
                results[plan.index] = finish(plan, [tiles[plan.index, t] for t in range(len(plan.tiles))])
            except Exception as e:
                results[plan.index] = _as_error(e)
        return results

    def _plan(self, index: int, image: SourceImage | np.ndarray) -> _Plan:
        src = image if isinstance(image, SourceImage) else _from_array(image)
        if src.width * src.height > self.max_pixels:
            raise TNGError(f"image of {src.width}x{src.height} = {src.width * src.height} pixels exceeds the pixel limit of {self.max_pixels} (--max-pixels)")
        return _Plan(index, src, tuple(_tiles(src.height, src.width, self.tile)))

    def _per_tile(self, plans: list[_Plan], work: Callable[[_Batch], list]) -> tuple[dict[tuple[int, int], Any], dict[int, TNGError]]:
        """work's result for every tile, keyed (image index, tile index), and the error of each image
        that failed. work gets batches of tiles (`_batches`) and returns one result per tile; a batch
        that fails is retried tile by tile, so that only the images that fail alone get an error."""
        done: dict[tuple[int, int], Any] = {}
        failed: dict[int, TNGError] = {}
        for batch in self._batches(plans):
            try:
                done.update(zip(((plan.index, t) for plan, t in batch), work(batch)))
                continue
            except Exception as e:
                if len(batch) == 1:
                    failed[batch[0][0].index] = _as_error(e)
                    continue
            for plan, t in batch:
                try:
                    done[plan.index, t] = work([(plan, t)])[0]
                except Exception as e:
                    failed[plan.index] = _as_error(e)
        return done, failed

    def _batches(self, plans: list[_Plan]):
        """Lists of (image, tile index) of equal padded tile size, at most batch_pixels each (at least one tile)."""
        groups: dict[tuple[int, int], _Batch] = {}
        for plan in plans:
            for t, (_, _, h, w) in enumerate(plan.tiles):
                groups.setdefault((_padded(h), _padded(w)), []).append((plan, t))
        for (hp, wp), items in groups.items():
            per = max(1, self.batch_pixels // (hp * wp))
            for k in range(0, len(items), per):
                yield items[k : k + per]

    def _analyse_tiles(self, net, batch: _Batch) -> list[torch.Tensor]:
        """Each tile's latents (1, M, h, w), from one pass of the analysis over the batch."""
        lat = self._analyse(net, self._pixels([plan.tile(t) for plan, t in batch])[0])
        return [lat[k : k + 1] for k in range(len(batch))]

    def _code_tiles(self, lm: LoadedModel, net, q_milli: int, batch: _Batch) -> list[_Coded]:
        """Each tile's stream, decoded pixels and post-filter at one quality, from one pass of the
        analysis, the coder and the synthesis over the batch."""
        tiles = [plan.tile(t) for plan, t in batch]
        inputs = self._pixels(tiles)
        lat = self._analyse(net, inputs[0])
        return self._code_latents(lm, net, lat, q_milli, inputs, tiles, self.effort)

    def _code_latents(self, lm: LoadedModel, net, lat: torch.Tensor, q_milli: int,
                      pixels: tuple[torch.Tensor, torch.Tensor] | None, tiles: list[np.ndarray], recipe: Effort,
                      reconstruct: bool = True) -> list[_Coded]:
        """Tiles' latents at one quality, as `recipe` codes them: their streams and, with reconstruct
        (always when the recipe fits post-filters, whose bytes count), the decoder's pixels cropped to
        each tile's own (h, w, 3) pixels `tiles`, and each tile's post-filter. pixels: the tiles'
        `_pixels`, needed when the recipe refines."""
        streams, residual, mean = self._code(lm, net, lat, q_milli / 1000, recipe.refine_steps, pixels)
        kernels = recipe.filter_kernels
        if not (reconstruct or kernels):
            return [(stream, None, None) for stream in streams]
        out = self._synthesise(lm, residual, mean, q_milli)
        coded = []
        for k, (stream, tile) in enumerate(zip(streams, tiles)):
            decoded, post = as_image(out[k], *tile.shape[:2]), None
            if kernels:
                post, decoded = fit_filter(tile, decoded, _lambda(lm, q_milli / 1000), kernels, self.device)
            coded.append((stream, decoded, post))
        return coded

    def _pack(self, lm: LoadedModel, q_milli: int, plan: _Plan, coded: list[_Coded]) -> Encoded:
        """The image's .tng file from its coded tiles; PSNR when they carry their pixels (else nan)."""
        src = plan.src
        filters = [post for _, _, post in coded]
        adapted = any(filters)  # version 2 only when a tile has a post-filter: other files stay version 1
        header = container.Header(lm.model_id, lm.digest, src.width, src.height, int(src.colour),
                                  int(src.flags), q_milli, self.tile,
                                  container.ADAPTED_VERSION if adapted else container.FORMAT_VERSION)
        meta = [src.exif or b"", src.icc_profile or b"", _alpha_png(src.alpha)]
        meta += [pack_section(filters)] if adapted else []
        data = container.pack(header, meta + [stream for stream, _, _ in coded])
        recon = None
        if coded[0][1] is not None:
            recon = np.empty_like(src.rgb)
            for (y, x, h, w), (_, pixels, _) in zip(plan.tiles, coded):
                recon[y : y + h, x : x + w] = pixels
        quality_psnr = psnr(src.rgb, recon) if recon is not None else float("nan")
        return Encoded(data, q_milli / 1000, src.width, src.height, len(data) * 8 / (src.width * src.height),
                       quality_psnr, recon)

    def _at_quality(self, lm: LoadedModel, net, plan: _Plan, latents: list[torch.Tensor], quality: float,
                    recipe: Effort | None = None, reconstruct: bool = True) -> Encoded:
        """The image coded at one quality from its tiles' latents, tile by tile, as `recipe` (default:
        the codec's effort) codes it: one try of a search."""
        recipe = recipe or self.effort
        q_milli = int(round(quality * 1000))
        coded = []
        for t, lat in enumerate(latents):
            pixels = self._pixels([plan.tile(t)]) if recipe.refine_steps else None
            coded += self._code_latents(lm, net, lat, q_milli, pixels, [plan.tile(t)], recipe, reconstruct)
        return self._pack(lm, q_milli, plan, coded)

    def _search(self, lm: LoadedModel, net, plan: _Plan, latents: list[torch.Tensor], *,
                target_psnr: float | None, target_bpp: float | None) -> Encoded:
        """The image at the quality that meets its target, measured on the file the effort makes: by
        bisection over its latents, each try coded as the effort codes it. With refinement, whose tries
        cost many encodes, the bisection runs without it and a few refined tries around its answer
        settle the quality (refinement moves the file along the quality axis only a little)."""
        if target_psnr is not None:
            ok, want_low = (lambda e: e.psnr >= target_psnr), True
        else:
            ok, want_low = (lambda e: e.bpp <= target_bpp), False
        unrefined = replace(self.effort, refine_steps=0)
        # bpp needs no reconstruction while searching (unless post-filters' bytes count); the final choice gets one.
        coarse = _bisect(partial(self._at_quality, lm, net, plan, latents, recipe=unrefined, reconstruct=want_low),
                         ok, want_low)
        if not self.effort.refine_steps:
            if coarse.reconstruction is not None:
                return coarse
            final = self._at_quality(lm, net, plan, latents, coarse.quality)
            final.target_met = coarse.target_met
            return final
        return _settle(partial(self._at_quality, lm, net, plan, latents), ok, want_low, coarse.quality)

    # -- decoding ---------------------------------------------------------------------------
    def decode(self, data: bytes | memoryview) -> Decoded:
        header, sections = container.unpack(data, self.max_pixels)
        lm, net = self._model(header.model_id)
        colour = _checked_header(header, lm)
        tiles = list(_tiles(header.height, header.width, header.tile))
        meta = _META_SECTIONS + (header.version == container.ADAPTED_VERSION)
        if len(sections) != meta + len(tiles):
            raise TNGError(f"corrupt file: {len(sections)} sections for {len(tiles)} tiles")
        filters = unpack_section(sections[_META_SECTIONS], len(tiles)) if meta > _META_SECTIONS else [None] * len(tiles)
        alpha = _alpha_from_png(bytes(sections[2]), header.width, header.height, colour)
        rgb = np.empty((header.height, header.width, 3), np.uint8)
        for (y, x, h, w), stream, post in zip(tiles, sections[meta:], filters):
            pixels = self._decode_tile(lm, net, bytes(stream), h, w, header.quality_milli)
            rgb[y : y + h, x : x + w] = post.apply(pixels, self.device) if post else pixels
        exif, icc = bytes(sections[0]) or None, bytes(sections[1]) or None
        return Decoded(header, rgb, alpha, exif, icc)

    def _decode_tile(self, lm: LoadedModel, net, stream: bytes, h: int, w: int, q_milli: int) -> np.ndarray:
        """One tile's (h, w, 3) uint8 pixels from its stream."""
        z_shape = (lm.net.n, _padded(h) // STRIDE, _padded(w) // STRIDE)
        try:
            tables = _TileTables(lm, net)
            context = None
            if lm.context:  # on y's grid, 4× z's (the hyper-synthesis upsamples twice)
                context = (anchor_mask(4 * z_shape[1], 4 * z_shape[2]).numpy(), tables.context)
            _, residual, mean = decode_tile(net.z_prior, net.y_prior, stream, z_shape, tables.hyper, context)
        except TNGError:
            raise
        except Exception as e:  # constriction rejects some impossible streams itself
            raise TNGError(f"corrupt file: tile stream does not decode ({e})") from None
        pixels = self._synthesise(lm, torch.from_numpy(residual)[None], mean, q_milli)
        return as_image(pixels[0], h, w)

    # -- measurement ------------------------------------------------------------------------
    @torch.no_grad()
    def estimate_bits(self, image: SourceImage | np.ndarray, quality: float) -> float:
        """Bits of the latents as the model's continuous densities estimate them (no coding)."""
        src = image if isinstance(image, SourceImage) else _from_array(image)
        lm, net = self._model(self.model_id)
        bits = 0.0
        for y, x, h, w in _tiles(src.height, src.width, self.tile):
            gain, _ = self._gains(net, quality)
            yg = self._analyse(net, self._pixels([src.rgb[y : y + h, x : x + w]])[0]) * gain
            z, residual, _, idx = self._symbols(lm, net, yg, net.h_a(yg).float())
            # The float models on the CPU copy, where the symbols are; σ of the unrounded index (the
            # coder rounds it to a table's).
            z_prior, y_prior = lm.net.z_prior, lm.net.y_prior
            scale = y_prior.scale(idx.double() / 2**ACT_BITS)
            bits += z_prior.bits(z).item() + y_prior.bits(residual.double(), scale).item()
        return bits


def _checked_header(header: container.Header, lm: LoadedModel) -> Colour:
    """The header's colour mode, once its weights, tile size, flags and quality are known to make sense."""
    if header.weights_digest != lm.digest:
        raise TNGError(f"file was coded with different weights for model id {header.model_id} (digest mismatch)")
    if header.tile % STRIDE or header.tile == 0:
        raise TNGError(f"corrupt file: tile size {header.tile}")
    try:
        colour = Colour(header.colour)
        Flag(header.flags)
    except ValueError:
        raise TNGError(f"corrupt file: unknown colour mode {header.colour} or flags {header.flags}") from None
    if not MIN_QUALITY <= header.quality <= MAX_QUALITY:
        raise TNGError(f"corrupt file: quality {header.quality}")
    return colour


class _TileTables:
    """decode_tile's callbacks for one tile: y's means and table indexes from the decoded z by the
    exact hyper-synthesis, then (context models) from the decoded anchors by the exact context
    network, which continues from the hyper-synthesis' fixed-point indexes."""

    def __init__(self, lm: LoadedModel, net) -> None:
        self.lm, self.net = lm, net
        self.idx: torch.Tensor | None = None  # the hyper-synthesis' fixed-point indexes

    def hyper(self, z: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        mean, self.idx = self.lm.hyper(torch.from_numpy(z)[None])
        return mean, self.net.y_prior.table_index(self.idx.numpy()[0])

    def context(self, residual: np.ndarray, mean: torch.Tensor, index: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        y_hat = torch.from_numpy(residual)[None].double() + mean
        mean, idx = CheckerboardContext.exact(y_hat, mean, self.idx, self.lm.context)
        return mean, self.net.y_prior.table_index(idx.numpy()[0])


def _lambda(lm: LoadedModel, quality: float) -> float:
    """λ of a quality: the weight of distortion against bits in the loss its gains were trained for."""
    return lambda_at(torch.tensor([quality]), lm.lambdas).item()


def _settle(attempt: Callable[[float], Encoded], ok: Callable[[Encoded], bool], want_low: bool, start: float,
            step: float = 0.25, walk: int = 4, halvings: int = 2) -> Encoded:
    """The best ok quality near `start` (the lowest for want_low, else the highest): up to `walk` steps
    of `step` from start, onward while ok or back while not, until the answer changes, then `halvings`
    bisections of the last step: at most walk + halvings + 1 tries. Returns the best ok try, or the
    closest miss flagged target_met=False."""
    onward = -step if want_low else step  # where better ok qualities lie
    clamp = lambda q: min(max(q, MIN_QUALITY), MAX_QUALITY)  # noqa: E731
    first = attempt(clamp(start))
    good, bad = (first, None) if ok(first) else (None, first)
    direction = onward if good else -onward
    for _ in range(walk):
        last = good if direction == onward else bad
        q = clamp(last.quality + direction)
        if q == last.quality:  # the end of the range
            break
        e = attempt(q)
        if ok(e):
            good = e
            if direction != onward:  # missed until here: crossed
                break
        else:
            bad = e
            if direction == onward:  # met until here: crossed
                break
    if good is None:
        bad.target_met = False
        return bad
    if bad is not None and abs(good.quality - bad.quality) <= step + 1e-9:  # crossed within one step: refine it
        for _ in range(halvings):
            e = attempt((good.quality + bad.quality) / 2)
            if ok(e):
                good = e
            else:
                bad = e
    return good


def _bisect(attempt: Callable[[float], Encoded], ok: Callable[[Encoded], bool], want_low: bool,
            steps: int = 8) -> Encoded:
    """Bisection over quality. want_low: the lowest quality that is ok (PSNR target);
    otherwise the highest quality that is ok (bpp target). Quality is assumed monotone."""
    lo, hi = MIN_QUALITY, MAX_QUALITY
    edge = attempt(hi if want_low else lo)
    if not ok(edge):  # even the best (or smallest) setting misses: return it, flagged
        edge.target_met = False
        return edge
    best = edge
    other = attempt(lo if want_low else hi)
    if ok(other):
        return other
    for _ in range(steps):
        mid = (lo + hi) / 2
        e = attempt(mid)
        if ok(e):
            best = e
            if want_low:
                hi = mid
            else:
                lo = mid
        elif want_low:
            lo = mid
        else:
            hi = mid
    return best


def _as_error(e: Exception) -> TNGError:
    """An image's failure as the TNGError its result carries: a TNGError as it is, anything else named."""
    return e if isinstance(e, TNGError) else TNGError(f"{type(e).__name__}: {e}")


def _from_array(rgb: np.ndarray) -> SourceImage:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise TNGError(f"expected an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    return SourceImage(np.ascontiguousarray(rgb), None, Colour.RGB, Flag(0), "RGB", None, None, None)


def _alpha_png(alpha: np.ndarray | None) -> bytes:
    if alpha is None:
        return b""
    buf = io.BytesIO()
    Image.fromarray(alpha, "L").save(buf, "PNG")
    return buf.getvalue()


def _alpha_from_png(data: bytes, width: int, height: int, colour: Colour) -> np.ndarray | None:
    has_alpha = colour in (Colour.GRAY_ALPHA, Colour.RGBA)
    if not has_alpha:
        if data:
            raise TNGError("corrupt file: alpha plane in an image without alpha")
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode != "L" or im.size != (width, height):
                raise TNGError("corrupt file: alpha plane does not match the image")
            return np.asarray(im)
    except TNGError:
        raise
    except Exception as e:
        raise TNGError(f"corrupt file: alpha plane does not decode ({e})") from None
