"""The checkerboard context model (codec/context.py): exact integer arithmetic, two-pass coding that
decodes to the encoder's pixels on any thread count, a new context that changes nothing, and its
training path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tng.codec import Codec, TNGError
from tng.codec.context import CheckerboardContext, anchor_mask
from tng.codec.intnet import ACT_BITS, ACT_MAX, WEIGHT_BITS
from tng.codec.model import TNGModel
from tng.codec.registry import LoadedModel, export_weights, load_model, load_weights

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
    enc = Codec(device="cpu", model=ctx_model, refine=3).encode(small_photo, quality=4)
    assert np.array_equal(Codec(device="cpu", model=ctx_model).decode(enc.data).rgb, enc.reconstruction)


def test_damaged_context_streams_fail_cleanly(ctx_model, small_photo):
    codec = Codec(device="cpu", model=ctx_model)
    data = codec.encode(small_photo, quality=4).data
    rng = np.random.default_rng(3)
    for k in range(24):
        bad = bytearray(data)
        if k % 3 == 0:
            bad = bad[: rng.integers(len(data) // 2, len(data))]
        else:
            pos = rng.integers(len(data) // 3, len(data))
            bad[pos] ^= 1 << int(rng.integers(8))
        try:
            codec.decode(bytes(bad))
        except TNGError:
            pass  # any other exception fails the test
