"""The 8-bit integer synthesis (codec/intsynth.py): the same pixels from every kernel and thread
count, sums provably exact, and a training forward that is the decoder's network."""
from __future__ import annotations

import dataclasses
import io
import lzma
import math

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tng.codec import Codec, container
from tng.codec.images import DEFAULT_MAX_PIXELS
from tng.codec.int8conv import has_vnni, interleave, polyphase
from tng.codec.intsynth import WIDE_MARGIN, Int8Synthesis, QuantSynthesis, integer_tensors
from tng.codec.model import TNGModel
from tng.codec.registry import DEFAULT_MODEL_ID, _header_metadata, available_models, export_weights, load_model, load_weights


def test_polyphase_convolution_is_the_transposed_convolution():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 5, 6, dtype=torch.float64)
    w = torch.randn(7, 4, 5, 5, dtype=torch.float64)
    want = F.conv_transpose2d(x, w, None, 2, 2, 1)
    got = interleave(F.conv2d(x, polyphase(w), None, 1, 1), 4)
    assert torch.allclose(got, want, atol=1e-12)


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    return int8_weights(tmp_path_factory.mktemp("w"))


def int8_weights(folder):
    """Model 6's weights with a calibrated int8 synthesis, exported and loaded like a shipped model."""
    base = load_model(6)
    net = TNGModel(base.net.n, base.net.m, "int8")
    net.load_state_dict(base.net.state_dict(), strict=False)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((1, 3, 128, 128), dtype=np.float32))
    x = F.avg_pool2d(x, 5, 1, 2)  # smooth, image-like
    net.int8.calibrate(net.g_s, [net.synthesis_input(x, torch.tensor([q])) for q in (1.0, 4.0, 8.0)])
    path = folder / "int8.safetensors"
    export_weights(net.state_dict(), net.n, net.m, 900, path, "int8-test")
    # Export recomputes the integer hyper-synthesis and the entropy tables in float arithmetic, which
    # can round differently on this CPU than on the one that shipped model 6: take model 6's stored
    # ones, so that the two models differ in their synthesis alone on every machine.
    raw = path.read_bytes()
    shipped = available_models()[6]
    base_raw = lzma.decompress(shipped.read_bytes()) if shipped.suffix == ".xz" else shipped.read_bytes()
    tensors, stored = safetensors.torch.load(raw), safetensors.torch.load(base_raw)
    tensors.update({k: v for k, v in stored.items() if k.startswith("h_s.") or k in ("y_tables", "y_offsets", "z_table")})
    save_file(tensors, str(path), metadata=_header_metadata(raw))
    return load_weights(path)


def _photo(h=128, w=192, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3)).astype(np.float32)
    big = F.interpolate(torch.from_numpy(small).permute(2, 0, 1)[None], size=(h, w), mode="bicubic")
    return big[0].permute(1, 2, 0).clamp(0, 255).to(torch.uint8).numpy()


KERNELS = [pytest.param("float", "cpu", id="fp32-cpu"), pytest.param("onednn", "cpu", id="onednn-cpu"),
           pytest.param("float", "cuda", id="fp32-cuda")]


def _synthesis_with(model, kernel: str, device: str) -> Int8Synthesis:
    """The model's int8 synthesis on one kernel and device; a visible skip where this machine has neither."""
    if kernel == "onednn" and not has_vnni():
        pytest.skip("no AVX-512 VNNI or AVX-VNNI for oneDNN here (the CPU, or ONEDNN_MAX_CPU_ISA): the decoder runs the fp32 kernel (fp32-cpu) instead")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return Int8Synthesis(model.synth.tensors, model.net.log_inv_gain, kernel)


@pytest.mark.parametrize("kernel, device", KERNELS[:2])  # the CPU kernels: Codec decodes on the CPU here
@pytest.mark.parametrize("which", ["fixture", "default"])
def test_stream_decodes_to_the_encoders_pixels_with_every_kernel_and_thread_count(int8_model, which, kernel, device):
    """The test fixture's weights, and the shipped default model's when it has an int8 synthesis."""
    if which == "default":
        int8_model = load_model(DEFAULT_MODEL_ID)
        if int8_model.net.synthesis != "int8":
            pytest.skip("the default model has no int8 synthesis")
    model = dataclasses.replace(int8_model, synth=_synthesis_with(int8_model, kernel, device))
    enc = Codec(device="cpu", model=int8_model).encode(_photo(), quality=5.5)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            dec = Codec(device="cpu", model=model).decode(enc.data)
            assert np.array_equal(dec.rgb, enc.reconstruction), n
    finally:
        torch.set_num_threads(threads)


def test_bands_of_rows_give_the_same_pixels(int8_model, monkeypatch):
    """The steps after each convolution in tiny bands (many per layer) against one band per layer."""
    import tng.codec.intsynth as intsynth

    enc = Codec(device="cpu", model=int8_model).encode(_photo(seed=4), quality=7)
    monkeypatch.setattr(intsynth, "BAND_VALUES", 2**9)
    small = Codec(device="cpu", model=int8_model).decode(enc.data).rgb
    monkeypatch.setattr(intsynth, "BAND_VALUES", 2**30)
    whole = Codec(device="cpu", model=int8_model).decode(enc.data).rgb
    assert np.array_equal(small, enc.reconstruction) and np.array_equal(whole, enc.reconstruction)


# What each convolution's input takes (stored uint8 minus the zero point the kernel subtracts):
# 8-bit activations, the high and low planes of 15-bit ones, an IGDN's squares.
_RANGES = {"kernel": (-127, 127), "high": (-128, 127), "low": (0, 127), "gamma": (0, 255)}


def _extreme_input(w: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A whole input plane (1, C_in, H, W) of lo and hi only, tiled with k×k windows, two per output
    channel: one hi where the channel's weights are positive and lo elsewhere, where its sum at the
    window's centre is the largest it can be; one hi where they are negative, the smallest. Returns
    the input, the centres (rows, cols, channels) and the sums they must reach there."""
    cout, _, k, _ = w.shape
    n = math.ceil(math.sqrt(2 * cout))  # windows per side
    x = torch.full((1, w.shape[1], n * k, n * k), lo, dtype=torch.float64)
    rows, cols, chans, bound = [], [], [], []
    for i in range(n * n):
        o, sign = i % cout, 1 if (i // cout) % 2 == 0 else -1
        r, c = divmod(i, n)
        x[0, :, r * k : (r + 1) * k, c * k : (c + 1) * k] = torch.where(w[o].double() * sign > 0, hi, lo)
        wp, wn = w[o].double().clamp(min=0).sum(), w[o].double().clamp(max=0).sum()
        rows.append(r * k + k // 2), cols.append(c * k + k // 2), chans.append(o)
        bound.append(wp * hi + wn * lo if sign > 0 else wp * lo + wn * hi)
    return x, (torch.tensor(rows), torch.tensor(cols), torch.tensor(chans)), torch.stack(bound)


def _run_conv(synth: Int8Synthesis, k: int, which: str, values: torch.Tensor, device: str) -> torch.Tensor:
    """Layer k's convolution `which` of input values as the decoder stores and sums them (uint8,
    channels-last; cuDNN off, fp32 math as this process has it by default), back on the CPU in float64."""
    zero = {"kernel": 128, "high": 128, "low": 0, "gamma": 0}[which]
    stored = (values + zero).to(torch.uint8).to(device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=False):
        return synth._conv(k, which, torch.device(device))(stored).double().cpu()


@pytest.mark.parametrize("kernel, device", KERNELS)
def test_kernels_sum_exactly_at_the_limits_of_the_sums(int8_model, kernel, device):
    """Every convolution of the synthesis, on input planes whose every value is at an end of its
    range and where every output channel reaches both bounds of its sum, against a float64
    convolution (exact: the sums are integers far below 2**53). For 15-bit inputs, also the layer's
    sum 128·high + low, one fp32 rounding of the exact sum."""
    synth = _synthesis_with(int8_model, kernel, device)
    for k, layer in enumerate(synth.layers):
        w = layer["kernel"]
        if int(layer["planes"]) == 1:
            which = [("kernel", w, 1)]
        else:  # the two planes of X = 128·high + low at its ends (16383 = 128·127 + 127, -16384 = 128·-128 + 0)
            which = [("high", w, 1), ("low", w, 1)]
            x, _, _ = _extreme_input(w, -16384, 16383)
            high = torch.floor(x / 128)
            got = (_run_conv(synth, k, "high", high, device).float() * 128
                   + _run_conv(synth, k, "low", x - 128 * high, device).float())
            assert torch.equal(got, F.conv2d(x, w.double(), padding=1).float()), (k, "128·high + low")
        if "gamma" in layer:
            which.append(("gamma", layer["gamma"].view(*layer["gamma"].shape, 1, 1), 0))
        for name, kern, pad in which:
            x, (rows, cols, chans), bound = _extreme_input(kern, *_RANGES[name])
            want = F.conv2d(x, kern.double(), padding=pad)
            assert torch.equal(want[0, chans, rows, cols], bound)  # the sums are at their limits
            assert torch.equal(_run_conv(synth, k, name, x, device), want), (k, name)


@pytest.mark.parametrize("kernel, device", KERNELS)
def test_saturated_latents_give_the_reference_pixels(int8_model, kernel, device):
    """The whole synthesis with layer 0's input at ±16383 everywhere against the numpy reference:
    planes of one sign, of alternating signs, of random signs."""
    synth = _synthesis_with(int8_model, kernel, device)
    size = (int8_model.net.m, 6, 8)
    g = torch.Generator().manual_seed(3)
    signs = torch.stack([torch.ones(size), (-1.0) ** torch.arange(6 * 8).view(1, 6, 8).expand(size),
                         torch.randint(0, 2, size, generator=g).double() * 2 - 1])
    # Layer 0's input is t = residual·step, times the tile's scale u: with every |t| just below
    # 16383·2**20, u is 2**-20 and every input rounds to ±16383.
    step = synth.inverse_gain(8000).view(1, -1, 1, 1) * synth.input * 2**8
    residual = torch.trunc(signs * (16383 * 2**20) / step)
    assert ((residual * step).abs() / 2**20 - 16383).abs().max() < 0.01
    mean = torch.zeros_like(residual)
    got = synth(residual, mean, 8000, torch.device(device)).cpu().numpy()
    assert np.array_equal(got, _reference_synthesis(synth, residual, mean, 8000))


def test_an_isa_cap_below_vnni_selects_the_float_kernel(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 on a VNNI CPU makes oneDNN's int8 products saturate in int16: the decoder
    must not take that kernel then (it would give other pixels), whatever /proc/cpuinfo says."""
    import tng.codec.int8conv as int8conv

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(int8conv, "open", lambda *a, **k: io.StringIO("flags : sse avx2 avx512_vnni\n"), raising=False)
    for cap, want in [(None, True), ("AVX2", False), ("avx512_core", False), ("AVX2_VNNI", False),
                      ("AVX512_CORE_VNNI", True), ("ALL", True)]:
        if cap is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert has_vnni() is (want and hasattr(torch.ops.onednn, "qconv_pointwise")), cap
    monkeypatch.setattr(int8conv, "open", lambda *a, **k: io.StringIO("flags : sse avx2 avx_vnni\n"), raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2_VNNI")
    assert has_vnni() is hasattr(torch.ops.onednn, "qconv_pointwise")


def test_sums_that_could_leave_fp32_are_refused(int8_model):
    tensors = dict(int8_model.synth.tensors)
    tensors["s8.0.kernel"] = torch.full_like(tensors["s8.0.kernel"], 127)  # 160·9 taps
    with pytest.raises(ValueError, match="not exact"):
        Int8Synthesis(tensors, int8_model.net.log_inv_gain)


def test_training_forward_is_the_decoders_network(int8_model):
    """QuantSynthesis (straight-through, float) and the integer decoder give the same image up to
    the rounding of the last step, so that fine-tuning trains what ships."""
    net = int8_model.net
    # the decoder's network alone (no post-filter), on the latents of the same fp32 analysis
    codec = Codec(device="cpu", model=int8_model, effort=0, analysis_dtype=torch.float32)
    img = _photo(seed=2)
    enc = codec.encode(img, quality=4)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = net.synthesis_input(x, torch.tensor([4.0]))
        fake = net.synthesise(y).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
    diff = np.abs(fake - enc.reconstruction.astype(np.float64))
    assert diff.mean() < 0.6 and np.percentile(diff, 99) < 3, (diff.mean(), np.percentile(diff, 99))


def test_export_is_stable_through_a_weights_file(int8_model, tmp_path):
    """Re-exporting loaded int8 weights writes the same integer network (fp16 storage included)."""
    path = tmp_path / "again.safetensors"
    export_weights(int8_model.net.state_dict(), int8_model.net.n, int8_model.net.m, 901, path, "again")
    again = load_weights(path)
    assert again.metadata["synthesis"] == "int8"
    for k, (a, b) in enumerate(zip(int8_model.synth.layers, again.synth.layers)):
        for name in a:
            assert torch.equal(a[name], b[name]), (k, name)


def test_calibration_sets_steps_from_the_largest_activations():
    from tng.codec.layers import GDN

    q = QuantSynthesis([4, 3, 3, 3])
    g_s = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 3, 5, 2, 2, 1), GDN(3, True),
                              torch.nn.ConvTranspose2d(3, 3, 5, 2, 2, 1), GDN(3, True),
                              torch.nn.ConvTranspose2d(3, 3, 5, 2, 2, 1), GDN(3, True),
                              torch.nn.ConvTranspose2d(3, 3, 5, 2, 2, 1))
    y = torch.zeros(1, 4, 2, 2)
    y[0, 1, 0, 0] = -12.7
    q.calibrate(g_s, [y])
    assert q.step(0)[1].item() == pytest.approx(12.7 * WIDE_MARGIN / 16383)  # a 15-bit input: two planes
    assert integer_tensors(g_s, q)["s8.0.kernel"].dtype == torch.int8


def test_reduced_precision_settings_of_the_caller_do_not_reach_the_sums(int8_model):
    """A process that allows bf16 math in oneDNN's fp32 convolutions (fast on AVX-512 BF16 CPUs)
    still decodes exactly: the synthesis runs its fp32 kernel in IEEE fp32 and restores the setting."""
    enc = Codec(device="cpu", model=int8_model).encode(_photo(seed=5), quality=7)
    synth = Int8Synthesis(int8_model.synth.tensors, int8_model.net.log_inv_gain, "float")
    saved = torch.backends.mkldnn.conv.fp32_precision
    torch.backends.mkldnn.conv.fp32_precision = "bf16"
    try:
        dec = Codec(device="cpu", model=dataclasses.replace(int8_model, synth=synth)).decode(enc.data)
        assert torch.backends.mkldnn.conv.fp32_precision == "bf16"
    finally:
        torch.backends.mkldnn.conv.fp32_precision = saved
    assert np.array_equal(dec.rgb, enc.reconstruction)


def test_wide_activations_are_split_into_two_exact_planes(int8_model):
    """15-bit inputs (layers 0 and 1) travel as high + 128 and low planes: X = 128·high + low,
    clamped to [-16384, 16383], rounding ties to even; 8-bit ones as X + 128 in [-127, 127]."""
    from tng.codec.intsynth import WIDE_INPUTS

    synth = int8_model.synth
    wide = [k for k in range(4) if int(synth.layers[k]["planes"]) == 2]
    assert wide == list(WIDE_INPUTS) and 2 not in wide  # the costly layer stays 8-bit
    t = torch.tensor([-20000.0, -16384.4, -129.5, -128.0, -1.5, -0.5, 0.5, 127.0, 128.6, 16383.2, 99999.0])
    high, low = synth._planes(t.clone().view(1, 1, 1, 1, -1), wide[0])
    value = (high.view(-1).to(torch.int32) - 128) * 128 + low.view(-1).to(torch.int32)
    assert value.tolist() == [-16384, -16384, -130, -128, -2, 0, 0, 127, 129, 16383, 16383]
    assert int(low.max()) <= 127
    (one,) = synth._planes(t.clone().view(1, 1, 1, 1, -1), 2)
    assert (one.view(-1).to(torch.int32) - 128).tolist() == [-127, -127, -127, -127, -2, 0, 0, 127, 127, 127, 127]


def test_tile_scale_is_the_finest_that_fits():
    """u: at most SCALE_BITS significant bits, peak·u within the limit, the next larger such value not;
    1/u as fp32; a tile of zeros gets a finite scale."""
    from tng.codec.intsynth import SCALE_BITS, SCALE_MAX, _tile_scale

    peaks = torch.tensor([0.0, 1e-3, 50.0, 100.0, 127.0, 127.5, 254.0, 255.0, 1e6, 3.0e4])
    for limit in (127, 128 * 128 - 1):
        u, back = _tile_scale(peaks, limit)
        assert u[0] == SCALE_MAX and torch.equal(back, (1 / u).float().double())
        for p, v in zip(peaks[1:].double().tolist(), u[1:].tolist()):
            m, e = math.frexp(v)
            assert m * 2**SCALE_BITS == int(m * 2**SCALE_BITS)  # SCALE_BITS significant bits
            assert round(p * v) <= limit and p * (v + 2.0 ** (e - SCALE_BITS)) > limit, (p, v)
    # powers of two stay exact: the calibrated range itself (peak = limit) gets u = 1
    assert _tile_scale(torch.tensor([127.0]), 127)[0].item() == 1.0


def test_tiles_beyond_the_calibrated_range_get_coarser_steps_not_clipped(int8_model, monkeypatch):
    """Saturated colour blocks drive the activations far past what the fixture was calibrated on
    (smooth noise): the per-tile scale loses far less than clipping at the calibrated range would."""
    import tng.codec.intsynth as intsynth

    img = np.zeros((128, 192, 3), np.uint8)
    img[:, 64:128, 0] = 255
    img[:, 128:, 1:] = 255
    img[32:96, ::8] = 255
    exact = Codec(6, device="cpu").encode(img, quality=8)
    enc = Codec(device="cpu", model=int8_model).encode(img, quality=8)
    # The same symbols: only the synthesis differs. The headers differ in model id and digest (and so
    # in their checksum); the rest of them, the metadata sections (exif, icc, alpha) and the tile's
    # section (the last: one tile) must be the same bytes.
    (h8, s8), (hx, sx) = (container.unpack(e.data, DEFAULT_MAX_PIXELS) for e in (enc, exact))
    assert dataclasses.replace(h8, model_id=hx.model_id, weights_digest=hx.weights_digest) == hx
    assert [bytes(s) for s in s8[:3] + s8[-1:]] == [bytes(s) for s in sx[:3] + sx[-1:]]
    ones = lambda peak, limit: (torch.ones(len(peak), dtype=torch.float64),) * 2  # noqa: E731
    monkeypatch.setattr(intsynth, "_tile_scale", ones)
    clipped = Codec(device="cpu", model=int8_model).encode(img, quality=8)
    # measured: 16.9 dB scaled, 12.7 clipped, 22.7 for model 6's exact synthesis
    assert enc.psnr > clipped.psnr + 3.0 and clipped.psnr < exact.psnr - 6.0, (enc.psnr, clipped.psnr, exact.psnr)


def test_the_decoders_square_root_is_correctly_rounded():
    """torch's CPU sqrt is 1 ulp off for many values on AVX2 CPUs (AMD EPYC: golden files of model 7
    decoded to other pixels there); `sqrt_` must be correctly rounded, as math.sqrt is, in float64 and
    float32 (whose correctly rounded root is the float64 one rounded)."""
    from tng.codec.exactsynth import sqrt_

    rng = np.random.default_rng(7)
    values = np.abs(rng.standard_normal(50_000)) * 10.0 ** rng.integers(-3, 7, 50_000)
    got64 = sqrt_(torch.from_numpy(values.copy())).numpy()
    assert all(g == math.sqrt(v) for g, v in zip(got64.tolist(), values.tolist()))
    v32 = values.astype(np.float32)
    got32 = sqrt_(torch.from_numpy(v32.copy()).view(100, 500).t()).t().reshape(-1).numpy()  # strided, in place
    want32 = np.array([math.sqrt(v) for v in v32.astype(np.float64).tolist()]).astype(np.float32)
    assert np.array_equal(got32, want32)


def _reference_synthesis(synth: Int8Synthesis, residual: torch.Tensor, mean: torch.Tensor, q_milli: int) -> np.ndarray:
    """The int8 synthesis as the module docstring specifies it, written again with numpy's IEEE-754
    fp32 operations (correctly rounded on every CPU) and float64 sums: the pixels any machine must give."""
    from tng.codec.intnet import ACT_BITS
    from tng.codec.intsynth import ACT_MAX, LAYERS, Q_MAX, WIDE_MAX, _tile_scale

    f32 = np.float32

    def conv(x, w, pad):  # exact: integer sums below 2**24
        return F.conv2d(torch.from_numpy(np.ascontiguousarray(x, np.float64)), w.double(), None, 1, pad).numpy().astype(f32)

    def planes(t, k):
        t = np.round(t)
        if synth._planes_of(k) == 1:
            return [np.clip(t, -ACT_MAX, ACT_MAX)]
        t = np.clip(t, -WIDE_MAX - 1, WIDE_MAX)
        hi = np.floor(t / 128)
        return [hi, t - hi * 128]

    ig = synth.inverse_gain(q_milli).view(1, -1, 1, 1).numpy()
    t = (residual.double().numpy() * 2**ACT_BITS + mean.numpy() * 2**ACT_BITS) * ig * synth.input.numpy()
    u, back = _tile_scale(torch.from_numpy(np.abs(t).max((1, 2, 3))), synth._limit(0))
    x = planes(t * u.numpy().reshape(-1, 1, 1, 1), 0)
    for k in range(LAYERS):
        lay = synth.layers[k]
        acc = conv(x[0], lay["kernel"], 1)
        if len(x) == 2:
            acc = acc * f32(128) + conv(x[1], lay["kernel"], 1)
        b, c4, h, w = acc.shape
        c = c4 // 4
        a = acc.transpose(0, 2, 3, 1).reshape(b, h, w, 4, c) * back.numpy().astype(f32).reshape(-1, 1, 1, 1, 1)
        a = a + lay["bias"].float().numpy().reshape(4, c)
        if k == LAYERS - 1:
            px = np.clip(np.round(a * lay["scale"].numpy().reshape(4, c)), 0, 255).astype(np.uint8)
            return px.reshape(b, h, w, 2, 2, c).transpose(0, 5, 1, 3, 2, 4).reshape(b, c, 2 * h, 2 * w)
        q = np.clip(np.round(a * a * lay["square"].numpy().reshape(4, c)), 0, Q_MAX)
        norm = conv(q.reshape(b, h, w * 4, c).transpose(0, 3, 1, 2), lay["gamma"].view(c, c, 1, 1), 0)
        norm = np.sqrt(norm.transpose(0, 2, 3, 1).reshape(a.shape) * lay["gamma_scale"].numpy() + lay["beta"].numpy())
        a = a * norm * lay["scale"].numpy().reshape(4, c)
        u, back = _tile_scale(torch.from_numpy(np.abs(a).max((1, 2, 3, 4))), synth._limit(k + 1))
        x = [p.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c).transpose(0, 3, 1, 2)
             for p in planes(a * u.numpy().astype(f32).reshape(-1, 1, 1, 1, 1), k + 1)]
    raise AssertionError("unreachable")


def test_synthesis_gives_the_pixels_of_its_ieee_reference():
    """On this machine, whatever its CPU: the shipped default's int8 synthesis gives, value for value,
    the pixels of the numpy reference. (Golden files made on AVX-512 hosts failed on an AVX2 one
    until the square root was made correctly rounded.)"""
    lm = load_model(DEFAULT_MODEL_ID)
    if lm.net.synthesis != "int8":
        pytest.skip("the default model has no int8 synthesis")
    g = torch.Generator().manual_seed(3)
    for q_milli, spread in ((1500, 2), (4000, 4), (8000, 10)):
        residual = torch.randint(-spread, spread + 1, (2, lm.net.m, 6, 9), generator=g)
        mean = torch.randint(-2560, 2561, residual.shape, generator=g).double() / 256
        got = lm.synth(residual, mean, q_milli, torch.device("cpu")).numpy()
        assert np.array_equal(got, _reference_synthesis(lm.synth, residual, mean, q_milli)), q_milli
