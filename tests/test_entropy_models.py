"""The entropy models' contract (codec/entropy_models.py), the GDN parameters both syntheses read, and
the one RD loss that training and refinement minimise."""
from __future__ import annotations

import math

import constriction
import numpy as np
import pytest
import torch

from tng.codec import TNGError
from tng.codec.entropy_models import (SCALE_LEVELS, SCALE_MIN, SCALE_STEP, Z_RADIUS, FactorizedPrior,
                                  GaussianConditional, decode_tile, encode_tile)
from tng.codec.intnet import ACT_BITS
from tng.codec.loss import rd_loss
from tng.codec.registry import DEFAULT_MODEL_ID, load_model


def _coded_bits(encode) -> tuple[int, np.ndarray, np.ndarray]:
    """Run encode(enc) on a fresh range encoder: (bits of its words, the words, what encode returned)."""
    enc = constriction.stream.queue.RangeEncoder()
    out = encode(enc)
    words = enc.get_compressed()
    return 32 * len(words), words, out


def _loaded_prior(channels: int = 4, seed: int = 0) -> FactorizedPrior:
    """A fresh (untrained) prior with the tables it exports installed, as export + load would."""
    torch.manual_seed(seed)
    prior = FactorizedPrior(channels)
    prior.load_tables(prior.export_tables())
    return prior


def _loaded_gaussian() -> GaussianConditional:
    model = GaussianConditional()
    model.load_tables(model.export_tables())
    return model


def test_factorized_prior_round_trips_every_symbol_with_its_tables():
    prior = _loaded_prior()
    rng = np.random.default_rng(0)
    z = rng.integers(-Z_RADIUS, Z_RADIUS + 1, (4, 3, 5))
    z[0, 0, :2] = -Z_RADIUS, Z_RADIUS  # the end symbols, which carry the folded tails
    _, words, _ = _coded_bits(lambda enc: prior.encode(enc, z))
    assert np.array_equal(prior.decode(constriction.stream.queue.RangeDecoder(words), z.shape), z)


def test_gaussian_conditional_round_trips_with_escapes_in_any_table():
    model = _loaded_gaussian()
    rng = np.random.default_rng(1)
    index = rng.integers(0, SCALE_LEVELS, (6, 4, 5))
    residual = np.round(rng.normal(0, 3, index.shape)).astype(np.int64)
    residual[0, 0, :3] = 5000, -70000, 2**40  # beyond every table's radius: escaped
    index[0, 0, :3] = 0, SCALE_LEVELS - 1, 7
    _, words, escapes = _coded_bits(lambda enc: model.encode(enc, residual, index))
    assert {5000, -70000, 2**40} <= set(escapes.tolist())
    queue = list(escapes)
    taken = []

    def give(n: int) -> np.ndarray:
        taken.append(n)
        return np.array([queue.pop(0) for _ in range(n)], np.int64)

    out = model.decode(constriction.stream.queue.RangeDecoder(words), index, give)
    assert np.array_equal(out, residual) and taken == [len(escapes)]


def test_tile_stream_round_trips_and_refuses_trailing_bytes():
    prior, gaussian = _loaded_prior(channels=3), _loaded_gaussian()
    rng = np.random.default_rng(2)
    z = rng.integers(-3, 4, (3, 2, 2))
    mean = torch.from_numpy(rng.normal(0, 1, (1, 5, 8, 8)))
    index = rng.integers(0, SCALE_LEVELS, (5, 8, 8))
    residual = np.round(rng.normal(0, 20, index.shape)).astype(np.int64)
    data = encode_tile(prior, gaussian, z, residual, index)
    seen = []

    def hyper(zd: np.ndarray):
        seen.append(zd.copy())  # the decoder gets ẑ before any of y, as the tables depend on it
        return mean, index

    zd, rd, md = decode_tile(prior, gaussian, data, z.shape, hyper)
    assert np.array_equal(zd, z) and np.array_equal(seen[0], z) and np.array_equal(rd, residual) and md is mean
    with pytest.raises(TNGError, match="unexpected bytes after a tile"):
        decode_tile(prior, gaussian, data + b"\0", z.shape, hyper)


@pytest.mark.parametrize("table", [8, 20, 35, 50])
def test_gaussian_likelihood_and_table_coded_rate_agree(table):
    """Samples of round(N(0, σ²)) at a table's σ: the float likelihood's bits and the range coder's
    bits with the integer table differ by the table rounding and the coder's last word or two."""
    model = _loaded_gaussian()
    sigma = SCALE_MIN * math.exp(SCALE_STEP * table)
    residual = np.round(np.random.default_rng(table).normal(0, sigma, (1, 8, 50, 50))).astype(np.int64)
    index = np.full(residual.shape[1:], table)
    coded, _, escapes = _coded_bits(lambda enc: model.encode(enc, residual[0], index))
    scale = model.scale(torch.full(residual.shape, float(table), dtype=torch.float64))
    estimated = model.bits(torch.from_numpy(residual).double(), scale).item()
    assert len(escapes) == 0  # tables reach about 7σ
    assert abs(coded - estimated) < 0.005 * estimated + 64, (coded, estimated)


def test_factorized_likelihood_and_table_coded_rate_agree():
    """The shipped model's prior of z: symbols drawn from its own tables, coded and estimated."""
    prior = load_model(DEFAULT_MODEL_ID).net.z_prior
    table = prior.export_tables()["table"]
    rng = np.random.default_rng(3)
    z = np.stack([rng.choice(np.arange(-Z_RADIUS, Z_RADIUS + 1), 400, p=row / row.sum()) for row in table])
    z = z.reshape(len(table), 20, 20)
    coded, _, _ = _coded_bits(lambda enc: prior.encode(enc, z))
    estimated = prior.bits(torch.from_numpy(z)[None]).item()
    assert abs(coded - estimated) < 0.01 * estimated + 64, (coded, estimated)


def test_shipped_tables_are_what_export_computes():
    """The y tables depend on the scale grid alone; z's on the float prior, whose float32 CDF may
    differ by an ulp between machines (one frequency unit here and there): hence stored integers."""
    for model_id in sorted({1, DEFAULT_MODEL_ID}):
        net = load_model(model_id).net
        for model in (net.z_prior, net.y_prior):
            for name, fresh in model.export_tables().items():
                stored = model._table(name)
                assert stored.dtype == fresh.dtype and stored.shape == fresh.shape
                assert np.abs(stored.astype(np.int64) - fresh).max() <= 2, (model_id, name)
        assert np.array_equal(net.y_prior._table("tables"), GaussianConditional().export_tables()["tables"])


def test_quantisation_modes():
    torch.manual_seed(0)
    prior = FactorizedPrior(2)
    z = torch.tensor([[[[-80.4, -1.5, 0.49, 2.5, 99.0]]]]).expand(1, 2, 1, 5).clone().requires_grad_(True)
    sym = prior.quantize(z, "symbols")
    assert sym.dtype == torch.int64 and sym[0, 0, 0].tolist() == [-Z_RADIUS, -2, 0, 2, Z_RADIUS]
    rounded = prior.quantize(z, "round")
    assert torch.equal(rounded.detach(), sym.float())
    rounded.sum().backward()  # straight-through, the clamp included
    assert torch.equal(z.grad, torch.ones_like(z))
    noisy = prior.quantize(z, "noise")
    assert (noisy - z).abs().max() <= 0.5 and not torch.equal(noisy, z)
    y, mean = torch.tensor([1.2, -3.7, 0.5]), torch.tensor([0.5, 0.25, 0.0], dtype=torch.float64)
    r = GaussianConditional.quantize(y, "symbols", mean)
    assert r.dtype == torch.int64 and r.tolist() == [1, -4, 0]  # float64 arithmetic, half to even
    assert torch.allclose(GaussianConditional.dequantize(r, mean), torch.tensor([1.5, -3.75, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="mode"):
        prior.quantize(z, "floor")


def test_table_index_rounds_the_fixed_point_index_half_up_and_clamps():
    half = 1 << (ACT_BITS - 1)
    fixed = np.array([-10**6, 0, half - 1, half, 5 * 2**ACT_BITS + half, 10**9])
    assert GaussianConditional.table_index(fixed).tolist() == [0, 0, 0, 1, 6, SCALE_LEVELS - 1]
    # The float scale of an integer index is the table's scale, and clamps to the grid.
    scale = GaussianConditional.scale(torch.tensor([-3.0, 10.0, 99.0], dtype=torch.float64))
    expected = [SCALE_MIN, SCALE_MIN * math.exp(10 * SCALE_STEP), SCALE_MIN * math.exp((SCALE_LEVELS - 1) * SCALE_STEP)]
    assert torch.allclose(scale, torch.tensor(expected, dtype=torch.float64))


def test_coding_without_tables_says_so():
    with pytest.raises(TNGError, match="no integer tables"):
        FactorizedPrior(2).encode(constriction.stream.queue.RangeEncoder(), np.zeros((2, 1, 1), np.int64))


def test_state_dict_keys_are_the_weights_files():
    """Entropy models renamed in code, not in files: checkpoints and weights keep their key names."""
    from tng.codec.model import TNGModel

    keys = set(TNGModel(16, 24).state_dict())
    assert {k for k in keys if k.startswith("z_prior.")} == {
        *(f"z_prior.matrices.{i}" for i in range(4)), *(f"z_prior.biases.{i}" for i in range(4)),
        *(f"z_prior.factors.{i}" for i in range(3))}
    assert not any(k.startswith("y_prior") for k in keys)  # the Gaussian conditional has no parameters
    lm = load_model(DEFAULT_MODEL_ID)
    assert lm.net.z_prior._table("table").shape == (lm.net.n, 2 * Z_RADIUS + 1)
    assert lm.net.y_prior._table("offsets").shape == (SCALE_LEVELS + 1,)


def test_both_syntheses_read_gdn_parameters_from_one_place(monkeypatch):
    """Moving GDN's floor moves the float layer and the exact synthesis alike."""
    from torch import nn

    from tng.codec.exactsynth import ExactSynthesis
    from tng.codec.layers import GDN

    gdn = GDN(4, inverse=True)
    with torch.no_grad():
        gdn.beta.zero_()  # below the floor: the floor decides
    g_s = nn.Sequential(nn.ConvTranspose2d(4, 4, 3, 1, 1), gdn, nn.ConvTranspose2d(4, 3, 3, 1, 1))
    x = torch.zeros(1, 4, 2, 2)
    for floor in (0.001, 0.25):
        monkeypatch.setattr(GDN, "BETA_MIN", floor)
        beta, _ = gdn.effective_parameters()
        assert torch.allclose(beta, torch.full((4,), floor))
        # γ: 0.1 on the diagonal, its own floor elsewhere
        assert torch.allclose(gdn(x + 1)[0, :, 0, 0], torch.full((4,), math.sqrt(floor + 0.1 + 3 * GDN.GAMMA_MIN)))
        _, _, unit, beta_int = ExactSynthesis(g_s, torch.zeros(8, 4)).layers[1]
        assert torch.allclose((beta_int / unit).flatten(), torch.full((4,), floor, dtype=torch.float64), rtol=1e-3)


def test_rd_loss_counts_the_valid_pixels_only():
    torch.manual_seed(0)
    x, x_hat = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    bits, lam = torch.tensor([640.0, 64.0]), torch.tensor([0.01, 0.1])
    whole = rd_loss(x_hat, x, bits, lam)
    assert torch.allclose(whole.mse, ((x_hat - x) ** 2).mean((1, 2, 3))) and torch.allclose(whole.bpp, bits / 64)
    assert torch.allclose(whole.loss, lam * 255**2 * whole.mse + whole.bpp)
    assert torch.allclose(rd_loss(x_hat, x, bits, lam, torch.ones(2, 1, 8, 8)).loss, whole.loss)
    valid = torch.zeros(2, 1, 8, 8)
    valid[:, :, :4] = 1  # the bottom half is padding: what it holds does not count, its rate does
    padded = x_hat.clone()
    padded[:, :, 4:] = 0.5
    part = rd_loss(padded, x, bits, 0.01, valid)
    assert torch.allclose(part.mse, ((x_hat - x)[:, :, :4] ** 2).mean((1, 2, 3))) and torch.allclose(part.bpp, bits / 32)


def test_training_and_refinement_minimise_the_same_rd_loss(monkeypatch):
    import tng.codec.refine
    import tng.jobs.train
    from tng.codec.model import TNGModel

    calls = []

    def spy(*args, **kwargs):
        out = rd_loss(*args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(tng.jobs.train, "rd_loss", spy)
    monkeypatch.setattr(tng.codec.refine, "rd_loss", spy)
    torch.manual_seed(0)
    net = TNGModel(8, 8)
    x, q = torch.rand(2, 3, 64, 64), torch.tensor([2.0, 5.0])
    loss, bpp, _ = tng.jobs.train.train_step(net, torch.optim.SGD(net.parameters(), lr=0.0), x, q, bf16=False).tolist()
    assert len(calls) == 1 and loss == pytest.approx(calls[0].loss.mean().item()) and bpp == pytest.approx(calls[0].bpp.mean().item())
    gain, inv_gain = net.gains(q[:1])
    with torch.no_grad():
        y = net.g_a(x[:1])
    tng.codec.refine.refine_latents(net, x[:1], torch.ones(1, 1, 64, 64), y, gain, inv_gain, lam=0.01, steps=2)
    assert len(calls) == 3
