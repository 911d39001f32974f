"""The checkerboard context model (codec/context.py): exact integer arithmetic, two-pass coding that
decodes to the encoder's pixels on any thread count, a new context that changes nothing, and its
training path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tng.codec import Codec, TNGError, coder, container
from tng.codec.context import CheckerboardContext, anchor_mask
from tng.codec.images import DEFAULT_MAX_PIXELS
from tng.codec.intnet import ACT_BITS, ACT_MAX, WEIGHT_BITS
from tng.codec.model import TNGModel
from tng.codec.registry import LoadedModel, export_weights, load_model, load_weights
from tng.codec.varint import Reader, uvarint

BASE = 7  # a model without a context, which the test models extend


def _with_context(tmp_path, name: str, last_std: float, seed: int = 0) -> LoadedModel:
    """Model BASE plus a checkerboard context whose last layer is N(0, last_std) (0: as training starts)."""
    base = load_model(BASE)
    torch.manual_seed(seed)
    net = TNGModel(base.net.n, base.net.m, base.net.synthesis, "checkerboard")
    missing, _ = net.load_state_dict(base.net.state_dict(), strict=False)
    assert missing and all(k.startswith("context.") for k in missing)
    with torch.no_grad():
        last = net.context.layers[-1]
        last.weight.normal_(0, last_std)
        last.bias.normal_(0, last_std)
    path = tmp_path / f"{name}.safetensors"
    export_weights(net.state_dict(), net.n, net.m, 900, path, name)
    return load_weights(path)


@pytest.fixture(scope="module")
def ctx_model(tmp_path_factory) -> LoadedModel:
    """A context that changes the means and tables of the non-anchors (every path is exercised)."""
    return _with_context(tmp_path_factory.mktemp("ctx"), "ctx-random", 0.004)


def test_anchor_mask_is_a_checkerboard():
    m = anchor_mask(3, 4)
    assert m.tolist() == [[True, False, True, False], [False, True, False, True], [True, False, True, False]]


def _exact_by_unfold(y_hat, mean, idx, params):
    """The context network again in int64, with another summation order (unfold + matmul)."""
    a = 1 << ACT_BITS
    lim = int(ACT_MAX * a)
    anchor = anchor_mask(*y_hat.shape[-2:])

    def layer(x, p):
        w, b, kw = p
        cols = F.unfold(x.double(), w.shape[-1], padding=kw["pad"]).to(torch.int64)
        acc = (w.reshape(w.shape[0], -1).to(torch.int64) @ cols[0]).reshape(1, w.shape[0], *x.shape[2:])
        acc = acc + (b.to(torch.int64) << ACT_BITS)[None, :, None, None]
        return (acc + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS

    y = torch.where(anchor, (y_hat * a).to(torch.int64).clamp(-lim, lim), 0)
    ctx = layer(y, params[0]).clamp(-lim, lim)
    mean_fixed = (mean * a).to(torch.int64)
    hidden = layer(torch.cat([ctx, mean_fixed.clamp(-lim, lim), idx.clamp(-lim, lim)], 1), params[1]).clamp(0, lim)
    d = layer(hidden, params[2])
    m = mean.shape[1]
    return (torch.where(anchor, mean_fixed, mean_fixed + d[:, :m]).double() / a,
            torch.where(anchor, idx, idx + d[:, m:]))


def test_context_parameters_are_exact_integers(ctx_model):
    g = torch.Generator().manual_seed(1)
    m = ctx_model.net.m
    shape = (1, m, 6, 7)
    mean = torch.randint(-40 * 256, 40 * 256, shape, generator=g).double() / 256
    y_hat = mean + torch.randint(-30, 31, shape, generator=g).double()
    y_hat[0, 0, 0, 0] = 5000.0  # beyond the clip
    idx = torch.randint(0, 63 * 256, shape, generator=g)
    out = CheckerboardContext.exact(y_hat, mean, idx, ctx_model.context)
    ref = _exact_by_unfold(y_hat, mean, idx, ctx_model.context)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    anchor = anchor_mask(6, 7)
    assert torch.equal(out[0][..., anchor], mean[..., anchor]) and torch.equal(out[1][..., anchor], idx[..., anchor])
    assert not torch.equal(out[1], idx)  # the non-anchors' indexes moved
    # Largest possible partial sum of any layer stays exactly representable in float64.
    for w, b, _ in ctx_model.context:
        bound = (w.abs().flatten(1).sum(1).max().item() * ACT_MAX + b.abs().max().item()) * 2**(ACT_BITS + WEIGHT_BITS)
        assert bound < 2**53


def test_training_path_follows_the_exact_one(ctx_model):
    """The float32 network (training) computes the same parameters as the exact one, up to rare ties."""
    net = ctx_model.net
    g = torch.Generator().manual_seed(2)
    shape = (1, net.m, 8, 8)
    mean = torch.randint(-20 * 256, 20 * 256, shape, generator=g).double() / 256
    y_hat = mean + torch.randint(-5, 6, shape, generator=g).double()
    idx = torch.randint(0, 63 * 256, shape, generator=g)
    exact_mean, exact_idx = CheckerboardContext.exact(y_hat, mean, idx, ctx_model.context)
    with torch.no_grad():
        f_mean, f_idx = net.context(y_hat.float(), mean.float(), idx.float() / 256)
    assert (f_mean.double() - exact_mean).abs().max() <= 2 / 256
    assert (f_idx.double() * 256 - exact_idx.double()).abs().max() <= 2


def test_round_trip_is_exact_across_threads_and_tiles(ctx_model, small_photo, photo):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        small = Codec(device="cpu", model=ctx_model).encode(small_photo, quality=3.3)
        tiled = Codec(device="cpu", model=ctx_model, tile=256).encode(photo, quality=6)
        torch.set_num_threads(2)
        for enc in (small, tiled):
            dec = Codec(device="cpu", model=ctx_model).decode(enc.data)
            assert np.array_equal(dec.rgb, enc.reconstruction)
    finally:
        torch.set_num_threads(threads)
    assert small.psnr > 25 and tiled.psnr > 30


def test_a_new_context_codes_as_its_base_did(tmp_path, photo):
    """Zero last layer: the same symbols and pixels as the base model, the words only reordered."""
    zero = _with_context(tmp_path, "ctx-zero", 0.0)
    base = Codec(device="cpu", model=load_model(BASE)).encode(photo, quality=4)
    ctx = Codec(device="cpu", model=zero).encode(photo, quality=4)
    assert np.array_equal(ctx.reconstruction, base.reconstruction)
    assert abs(len(ctx.data) - len(base.data)) <= 16


def test_refined_context_streams_decode(ctx_model, small_photo):
    enc = Codec(device="cpu", model=ctx_model, effort=3).encode(small_photo, quality=4)
    assert np.array_equal(Codec(device="cpu", model=ctx_model).decode(enc.data).rgb, enc.reconstruction)


def _symbols(lm: LoadedModel, photo: np.ndarray, quality: float) -> tuple[torch.Tensor, ...]:
    """What the encoder codes of a one-tile photo: (z symbols, residuals, means, fixed-point indexes)."""
    codec = Codec(device="cpu", model=lm)
    gain, _ = codec._gains(lm.net, quality)
    yg = codec._analyse(lm.net, codec._pixels([photo])[0]) * gain
    return codec._symbols(lm, lm.net, yg, lm.net.h_a(yg).float())


def _tile_sections(data: bytes) -> list[bytes]:
    """The sections of a stream's tiles: the last ones, one per tile."""
    header, sections = container.unpack(data, DEFAULT_MAX_PIXELS)
    tiles = -(-header.width // header.tile) * -(-header.height // header.tile)
    return [bytes(s) for s in sections[-tiles:]]


def test_the_context_moves_the_non_anchors_and_so_the_streams(ctx_model, tmp_path, small_photo):
    """ctx_model against the same weights with the context's last layer zeroed (which codes as the
    base model does, above): the anchors' symbols, means and tables stand; the others' move, and with
    them the tile streams, the bits (estimated and coded) and the pixels. A codec that skipped the
    context on both sides would round-trip either model and fail here."""
    zero = _with_context(tmp_path, "ctx-zero", 0.0)  # the same seed: the same first two layers
    assert all(torch.equal(a[0], b[0]) for a, b in zip(ctx_model.context[:2], zero.context[:2]))
    with_ctx, without = _symbols(ctx_model, small_photo, 4.0), _symbols(zero, small_photo, 4.0)
    anchor = anchor_mask(*with_ctx[1].shape[-2:])
    assert torch.equal(with_ctx[0], without[0])  # z
    for a, b in zip(with_ctx[1:], without[1:]):  # residuals, means, indexes
        assert torch.equal(a[..., anchor], b[..., anchor])
        assert not torch.equal(a[..., ~anchor], b[..., ~anchor])
    enc = {lm.name: Codec(device="cpu", model=lm).encode(small_photo, quality=4) for lm in (ctx_model, zero)}
    ctx, base = enc[ctx_model.name], enc[zero.name]
    assert _tile_sections(ctx.data) != _tile_sections(base.data) and len(ctx.data) != len(base.data)
    assert Codec(device="cpu", model=ctx_model).estimate_bits(small_photo, 4.0) != \
        Codec(device="cpu", model=zero).estimate_bits(small_photo, 4.0)
    assert not np.array_equal(ctx.reconstruction, base.reconstruction)


def test_a_decoder_that_ignores_the_context_does_not_get_the_pixels(ctx_model, small_photo, monkeypatch):
    """The non-anchors decoded with the hyper-prior's tables and means (the context's update skipped)
    are other symbols: the stream fails to decode or gives other pixels, never the encoder's."""
    enc = Codec(device="cpu", model=ctx_model).encode(small_photo, quality=4)
    monkeypatch.setattr(coder._TileTables, "context", lambda self, residual, mean, index: (mean, index))
    try:
        rgb = Codec(device="cpu", model=ctx_model).decode(enc.data).rgb
    except TNGError:
        rgb = None  # what happens with this photo: the hyper-prior's tables do not even decode the words
    assert rgb is None or not np.array_equal(rgb, enc.reconstruction)


def _with_tile_section(data: bytes, tile: int, damage) -> bytes:
    """data with one tile's section replaced by damage(section) and packed again: both checksums and
    the section table hold, so it is the tile decoder, context included, that meets the damage."""
    header, sections = container.unpack(data, DEFAULT_MAX_PIXELS)
    sections = [bytes(s) for s in sections]
    k = len(sections) - len(_tile_sections(data)) + tile
    sections[k] = damage(sections[k])
    out = container.pack(header, sections)
    assert [bytes(s) for s in container.unpack(out, DEFAULT_MAX_PIXELS)[1]] == sections
    return out


def _relength(section: bytes, delta: int) -> bytes:
    """The section with its leading count of range-coded bytes changed by delta, the bytes kept."""
    r = Reader(section)
    n = r.uvarint("length")
    return uvarint(n + delta) + section[r.pos :]


# Damage the tile decoder finds whatever the bytes (codec/entropy_models.py `decode_tile`): it takes
# the range-coded words whole (their count leads the section), and they alone decide the symbols, so
# also how many escaped values follow them. A section cut short runs out inside the words or those
# values, one with a byte more has it left over, and a count that is no multiple of 4, or beyond the
# section's end, is refused before anything is decoded.
DETECTED = {
    "emptied": lambda s: b"",
    "cut by one byte": lambda s: s[:-1],
    "cut in half": lambda s: s[: len(s) // 2],
    "one byte more": lambda s: s + b"\0",
    "word count not a multiple of 4": lambda s: _relength(s, 1),
    "more words than the section holds": lambda s: _relength(s, 4 * len(s)),
}


@pytest.fixture(scope="module")
def tiled(ctx_model, small_photo) -> tuple[Codec, bytes]:
    """A codec of ctx_model in tiles of 64 and its stream of small_photo: 6 tiles, the last with escaped values."""
    codec = Codec(device="cpu", model=ctx_model, tile=64)
    enc = codec.encode(small_photo, quality=4)
    assert np.array_equal(codec.decode(_with_tile_section(enc.data, 5, lambda s: s)).rgb, enc.reconstruction)
    last = Reader(_tile_sections(enc.data)[-1])
    words = last.uvarint("length")
    assert len(last.data) > last.pos + words  # escaped values follow its words
    return codec, enc.data


@pytest.mark.parametrize("damage", DETECTED)
def test_damaged_context_tile_streams_are_refused(tiled, damage):
    codec, data = tiled
    for tile in range(len(_tile_sections(data))):
        with pytest.raises(TNGError, match="^(corrupt|truncated) file: .*(tile|escape)"):
            codec.decode(_with_tile_section(data, tile, DETECTED[damage]))


def _garbled(section: bytes, k: int, rng: np.random.Generator) -> bytes:
    """One bit flipped, the bytes from somewhere on replaced, or a random word inserted after the words."""
    r = Reader(section)
    n = r.uvarint("length")
    pos = int(rng.integers(r.pos, len(section)))
    if k % 3 == 0:
        return section[:pos] + bytes([section[pos] ^ 1 << int(rng.integers(8))]) + section[pos + 1 :]
    if k % 3 == 1:
        return section[:pos] + rng.integers(0, 256, len(section) - pos, np.uint8).tobytes()
    words = section[r.pos : r.pos + n] + rng.integers(0, 256, 4, np.uint8).tobytes()
    return uvarint(n + 4) + words + section[r.pos + n :]


def test_garbled_context_tile_streams_fail_cleanly(tiled, small_photo):
    """Changed words may decode to other valid symbols (a range coder cannot always tell: a word after
    a stream's words often reads as the coder's own padding); the image must then come out whole.
    Anything but a TNGError or an image of the right size fails the test."""
    codec, data = tiled
    sections = _tile_sections(data)
    rng = np.random.default_rng(7)  # its 24 cases: refused by constriction and by the decoder, and decoded
    refused = 0
    for k in range(24):
        tile = int(rng.integers(len(sections)))
        try:
            dec = codec.decode(_with_tile_section(data, tile, lambda s: _garbled(s, k, rng)))
        except TNGError:
            refused += 1
            continue
        assert dec.rgb.shape == small_photo.shape and dec.rgb.dtype == np.uint8
    assert refused  # with this seed, some of the damage is found
