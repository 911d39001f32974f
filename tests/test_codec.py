"""The codec end to end: round trips, rate estimate vs real bytes, determinism, rate control."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms

from tng.codec import Codec, Colour, Flag, TNGError, container, open_image, psnr
from tng.codec.images import DEFAULT_MAX_PIXELS
from tng.codec.intnet import ACT_BITS, ACT_MAX, WEIGHT_BITS, HyperSynthesis
from tng.codec.registry import DEFAULT_MODEL_ID, available_models, load_model
from conftest import allocation_peak, bomb_stream, sample_rgb

# The newest model decoded by exactsynth.py (models 1-6); the int8 synthesis (model 7 on) has its
# own exactness tests in test_intsynth.py.
LATEST_EXACT = max(i for i in available_models() if load_model(i).net.synthesis == "exact")


@pytest.mark.parametrize("h,w", [(1, 1), (1, 200), (3, 2), (63, 65), (97, 150)])
def test_any_size_round_trips(codec, small_photo, h, w):
    rgb = np.ascontiguousarray(np.resize(small_photo, (h, w, 3)))
    enc = codec.encode(rgb, quality=4)
    dec = codec.decode(enc.data)
    assert dec.rgb.shape == (h, w, 3) and dec.image.size == (w, h)
    assert np.array_equal(dec.rgb, enc.reconstruction)


def test_tiles_round_trip_and_no_pass_sees_more_than_a_tile(small_photo, monkeypatch):
    """Memory is bounded by the tile: no network pass, encode or decode, gets more than one tile."""
    tiled = Codec(device="cpu", tile=64)
    seen = []
    analyse, synthesise = Codec._analyse, Codec._synthesise
    monkeypatch.setattr(Codec, "_analyse", lambda self, net, x: seen.append(x.shape[-2:]) or analyse(self, net, x))
    monkeypatch.setattr(Codec, "_synthesise", lambda self, lm, r, m, q: seen.append(r.shape[-2:]) or synthesise(self, lm, r, m, q))
    enc = tiled.encode(small_photo, quality=5)
    dec = tiled.decode(enc.data)
    assert len(seen) >= 2 * 6  # 150x97 in tiles of 64: 3 x 2 tiles, analysed and synthesised
    assert all(h <= 64 and w <= 64 for h, w in seen)  # pixels in, latents (÷16) out: at most one tile
    monkeypatch.undo()
    assert np.array_equal(dec.rgb, enc.reconstruction)
    assert enc.psnr > 24 and dec.header.tile == 64
    # A decoder with default settings reads the tile size from the file.
    assert np.array_equal(Codec(device="cpu").decode(enc.data).rgb, dec.rgb)


def test_quality_4_is_good_on_photos(codec, photo):
    enc = codec.encode(photo, quality=4)
    assert enc.psnr > 26, enc.psnr
    assert psnr(codec.decode(enc.data).rgb, photo) == pytest.approx(enc.psnr)
    assert enc.bpp == len(enc.data) * 8 / (600 * 400)


def test_quality_orders_rate_and_distortion(codec, small_photo):
    encs = [codec.encode(small_photo, quality=q) for q in (1, 2.5, 4, 6, 8)]
    bpps, psnrs = [e.bpp for e in encs], [e.psnr for e in encs]
    assert bpps == sorted(bpps) and psnrs == sorted(psnrs), (bpps, psnrs)


@pytest.mark.parametrize("quality", [1.5, 4, 7])
def test_estimated_and_real_rate_agree(codec, photo, quality):
    enc = codec.encode(photo, quality=quality)
    est = codec.estimate_bits(photo, quality)
    real = len(enc.data) * 8
    assert abs(real - est) / real < 0.03, (real, est)


def test_decode_is_bit_exact_across_threads_and_analysis_dtype(small_photo):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        enc = Codec(device="cpu", analysis_dtype=torch.bfloat16).encode(small_photo, quality=3.3)
        torch.set_num_threads(2)
        dec = Codec(device="cpu").decode(enc.data)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(dec.rgb, enc.reconstruction)
    if torch.cuda.is_available():  # the lent GPU machines run this too
        assert np.array_equal(Codec(device="cuda").decode(enc.data).rgb, dec.rgb)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_the_encoder_is_deterministic_per_machine(photo, dtype):
    """The same bytes from a fresh codec, again, and on one thread as on two, for either analysis dtype,
    post-filters included (effort 2; on this crop and quality they pay on every CPU tried, AVX2 too).
    (bf16 where the CPU lacks it is emulated: slow, still deterministic.)"""
    crop = np.ascontiguousarray(photo[:256, :320])
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (2, 1, 2):
            torch.set_num_threads(n)
            runs.append(Codec(device="cpu", analysis_dtype=dtype, effort=2).encode(crop, quality=5).data)
    finally:
        torch.set_num_threads(threads)
    assert runs[0] == runs[1] == runs[2]
    header, sections = container.unpack(runs[0], DEFAULT_MAX_PIXELS)
    assert header.version == 2 and len(sections) == 5  # metadata, the post-filters' section, one tile


def test_the_default_analysis_is_bf16_where_native_else_fp32():
    from tng.codec.refine import fast_bf16

    want = torch.bfloat16 if fast_bf16(torch.device("cpu")) else torch.float32
    assert Codec(device="cpu").analysis_dtype == want
    assert Codec(device="cpu", analysis_dtype=torch.float32).analysis_dtype == torch.float32


def _exact_by_unfold(z: torch.Tensor, params) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer hyper-synthesis again, with another summation order (unfold + matmul, int64)."""
    x = z.to(torch.int64)
    frac = 0
    for i, (w, b, kw) in enumerate(params):
        if kw["transposed"]:  # = conv of the zero-upsampled, padded input with the flipped kernel
            s, k, p = kw["stride"], w.shape[-1], kw["pad"]
            up = torch.zeros(*x.shape[:2], (x.shape[2] - 1) * s + 1, (x.shape[3] - 1) * s + 1, dtype=torch.int64)
            up[:, :, ::s, ::s] = x
            lo, hi = k - 1 - p, k - 1 - p + s - 1
            x, w, pad = F.pad(up, (lo, hi, lo, hi)), w.flip(-1, -2).transpose(0, 1), 0
        else:
            pad = kw["pad"]
        cols = F.unfold(x.double(), w.shape[-1], padding=pad).to(torch.int64)  # exact: small integers
        out_h = x.shape[2] + 2 * pad - w.shape[-1] + 1
        acc = (w.reshape(w.shape[0], -1).to(torch.int64) @ cols[0]).reshape(1, w.shape[0], out_h, -1)
        acc = acc + (b.to(torch.int64) << frac)[None, :, None, None]
        shift = frac + WEIGHT_BITS - ACT_BITS
        x = (acc + (1 << (shift - 1))) >> shift
        frac = ACT_BITS
        if i < len(params) - 1:
            x = x.clamp(0, int(ACT_MAX * 2**ACT_BITS))
    m = x.shape[1] // 2
    return x[:, :m].double() / 2**ACT_BITS, x[:, m:]


def test_stream_bombs_are_refused_before_allocation(tmp_path, capsys):
    """A header claiming 60000x60000 is refused by Codec.decode and by `tng decode` before any pixel
    buffer exists (measured: allocations stay tiny), with the limit named."""
    from tng.jobs.cli import main

    data = bomb_stream(DEFAULT_MODEL_ID)
    codec = Codec(device="cpu")
    with allocation_peak() as mem, pytest.raises(TNGError, match="exceeds the pixel limit"):
        codec.decode(data)
    assert mem["peak"] < 100_000
    (tmp_path / "bomb.tng").write_bytes(data)
    with allocation_peak() as mem:
        assert main(["decode", str(tmp_path / "bomb.tng"), str(tmp_path / "out.png")]) == 1
    # The command loads the model (a few MB); the image would need 10.8 GB.
    assert mem["peak"] < 50_000_000 and not (tmp_path / "out.png").exists()
    assert "exceeds the pixel limit of 250000000 (--max-pixels)" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "bomb.tng"), str(tmp_path / "out.png"), "--max-pixels", "1000"]) == 1
    assert "pixel limit of 1000" in capsys.readouterr().err


@pytest.mark.parametrize("model_id", sorted({1, DEFAULT_MODEL_ID}))
def test_entropy_parameters_are_exact_integers(model_id):
    lm = load_model(model_id)
    g = torch.Generator().manual_seed(0)
    z = torch.randint(-6, 7, (1, lm.net.n, 3, 4), generator=g)
    mean, idx = HyperSynthesis.exact(z, lm.hyper.params)
    mean2, idx2 = _exact_by_unfold(z, lm.hyper.params)
    assert torch.equal(mean, mean2) and torch.equal(idx, idx2)
    # Largest possible partial sum stays exactly representable in float64.
    act = 48.0
    for w, b, _ in lm.hyper.params:
        bound = w.abs().flatten(1).sum(1).max().item() * act + b.abs().max().item() * 2**ACT_BITS
        assert bound < 2**53
        act = ACT_MAX * 2**ACT_BITS


@pytest.mark.parametrize("model_id", sorted({1, 6, DEFAULT_MODEL_ID}))
def test_the_int8_hyper_synthesis_gives_the_float64_integers(model_id):
    """ExactHyper's int8 kernel (oneDNN, 8-bit planes of inputs and weights) against the float64
    reference, on hyper-latents of the usual range, of the whole 16-bit range its planes take, in
    batches; beyond 16 bits (damaged streams only) it hands over to float64 and still agrees."""
    from tng.codec.int8conv import has_vnni
    from tng.codec.intnet import ExactHyper

    params = load_model(model_id).hyper.params
    fast = ExactHyper(params)
    assert fast.kernel == ("onednn" if has_vnni() else "float64")
    if not has_vnni():
        pytest.skip("no VNNI here: the float64 kernel runs, which is the reference")
    g = torch.Generator().manual_seed(model_id)
    n = params[0][0].shape[0]
    for shape, peak in (((1, n, 3, 4), 6), ((2, n, 8, 12), 40), ((1, n, 5, 7), 2**15 - 1), ((1, n, 16, 16), 2),
                        ((1, n, 2, 3), 2**15 + 9)):
        z = torch.randint(-peak, peak + 1, shape, generator=g)
        z.view(-1)[0] = peak  # the extreme itself
        want, got = HyperSynthesis.exact(z, params), fast(z)
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1]), shape
        assert got[0].is_contiguous() and got[1].dtype == torch.int64


def test_the_int8_hyper_synthesis_runs_only_where_its_sums_are_exact(monkeypatch):
    """Weights whose plane sums could pass 2**24 (fp32 no longer exact), or no VNNI: float64."""
    from tng.codec import intnet

    params = load_model(DEFAULT_MODEL_ID).hyper.params
    monkeypatch.setattr(intnet, "has_vnni", lambda: True)
    assert intnet.ExactHyper(params).kernel == "onednn"
    w, b, kw = params[-1]
    wide = torch.full_like(w, 63)  # low planes of 63: 1440 taps · 63 · 255 > 2**24
    assert intnet.ExactHyper(params[:-1] + [(wide, b, kw)]).kernel == "float64"
    with pytest.raises(ValueError, match="not exact"):
        intnet.ExactHyper(params[:-1] + [(wide, b, kw)], kernel="onednn")
    monkeypatch.setattr(intnet, "has_vnni", lambda: False)
    assert intnet.ExactHyper(params).kernel == "float64"
    with pytest.raises(ValueError, match="not exact"):
        intnet.ExactHyper(params, kernel="onednn")


def _synthesis_by_halves(synth, residual, mean, q_milli):
    """ExactSynthesis again, every convolution summed in another order: input channels in two halves,
    each half's partial result added afterwards, oneDNN off, one thread."""
    from tng.codec.exactsynth import GAIN_FRAC, LIM, MEAN_FRAC
    from tng.codec.exactsynth import ACT_FRAC as A

    def halves(conv, x, w, **kw):
        h = x.shape[1] // 2
        wa, wb = (w[:h], w[h:]) if conv is F.conv_transpose2d else (w[:, :h], w[:, h:])
        return conv(x[:, :h], wa, None, **kw) + conv(x[:, h:], wb, None, **kw)

    ig = synth.inverse_gain(q_milli).view(1, -1, 1, 1)
    x = torch.floor((residual.double() * 2**MEAN_FRAC + mean * 2**MEAN_FRAC) * ig / 2.0 ** (MEAN_FRAC + GAIN_FRAC - A) + 0.5)
    x = x.clamp(-LIM, LIM)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.backends.mkldnn.flags(enabled=False):
            for i, layer in enumerate(synth.layers):
                if layer[0] == "deconv":
                    _, w, scale, offset, stride, pad, out_pad = layer
                    v = halves(F.conv_transpose2d, x, w, stride=stride, padding=pad, output_padding=out_pad) / scale + offset
                    if i == len(synth.layers) - 1:
                        return torch.clamp(torch.floor(v * (255 / 2**A) + 0.5), 0, 255)[0].to(torch.uint8)
                    x = torch.clamp(torch.floor(v + 0.5), -LIM, LIM)
                else:
                    _, g, unit, beta = layer
                    sq = torch.floor(x * x / 2**A + 0.5)
                    x = torch.clamp(torch.floor(x * torch.sqrt((halves(F.conv2d, sq, g) + beta) / unit) + 0.5), -LIM, LIM)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.filterwarnings("ignore:TF32")
@pytest.mark.parametrize("model_id", sorted({1, LATEST_EXACT}))
def test_synthesis_is_exact_integer_arithmetic(codec, small_photo, model_id):
    """Decoded pixels must not depend on summation order (threads, BLAS, CPU kind, GPU)."""
    lm = load_model(model_id)
    assert max(lm.synth.bounds) < 2**53
    pixels = codec._pixels([small_photo])
    y = codec._analyse(lm.net, pixels[0])
    for q in (1.0, 4.25, 8.0):
        _, residual, mean = codec._code(lm, lm.net, y, q)
        pixels = lm.synth(residual, mean, int(q * 1000), torch.device("cpu"))[0]
        assert torch.equal(pixels, _synthesis_by_halves(lm.synth, residual, mean, int(q * 1000)))
    # The exact inverse gains are the float model's, to fixed-point precision.
    for q in (1.0, 2.5, 7.999):
        _, ig = lm.net.gains(torch.tensor([q]))
        exact = lm.synth.inverse_gain(int(round(q * 1000))) / 2**16
        assert torch.allclose(exact, ig.flatten().double(), rtol=1e-5, atol=2**-16)


@pytest.mark.parametrize("h, w, k, stride, pad, out_pad", [(13, 7, 5, 2, 2, 1), (16, 9, 3, 1, 1, 0), (5, 4, 5, 2, 2, 1)])
def test_striped_transposed_convolution_equals_one_piece(monkeypatch, h, w, k, stride, pad, out_pad):
    import tng.codec.exactsynth as es

    g = torch.Generator().manual_seed(h * w)
    x = torch.randint(-4096, 4096, (2, 6, h, w), generator=g).double()
    wt = torch.randint(-2047, 2048, (6, 4, k, k), generator=g).double()
    whole = F.conv_transpose2d(x, wt, None, stride, pad, out_pad)
    per_input_row = 2 * 4 * k * k * w  # column buffer values
    for rows in (1, 2, 5):  # bands of `rows` × stride output rows
        monkeypatch.setattr(es, "STRIPE_VALUES", rows * per_input_row)
        assert torch.equal(es.deconv_striped(x, wt, stride, pad, out_pad), whole)


def test_synthesis_in_bands_gives_the_same_pixels(monkeypatch, codec, small_photo):
    """The whole synthesis with tiny bands (many stripes per layer) against one piece."""
    import tng.codec.exactsynth as es

    lm = load_model(LATEST_EXACT)
    pixels = codec._pixels([small_photo])
    _, residual, mean = codec._code(lm, lm.net, codec._analyse(lm.net, pixels[0]), 3.0)
    whole = lm.synth(residual, mean, 3000, torch.device("cpu"))
    monkeypatch.setattr(es, "STRIPE_VALUES", 2**14)
    assert torch.equal(lm.synth(residual, mean, 3000, torch.device("cpu")), whole)


def _rd_loss(enc, q: float) -> float:
    """λ(q)·255²·MSE + bpp of an encoding, the loss the model was trained on and refinement lowers."""
    from tng.codec.model import lambda_at

    mse01 = 10 ** (-enc.psnr / 10)  # MSE of pixels in [0, 1]
    return lambda_at(torch.tensor([q])).item() * 255**2 * mse01 + enc.bpp


def test_effort_lowers_the_rd_loss_and_decodes_with_any_codec(codec, small_photo):
    plain, refined = Codec(device="cpu", effort=0), Codec(device="cpu", effort=5)
    for q in (2.0, 6.0):
        base, enc = plain.encode(small_photo, q), refined.encode(small_photo, q)
        assert _rd_loss(enc, q) < 0.97 * _rd_loss(base, q), q
        assert enc.bpp < base.bpp
        dec = codec.decode(enc.data)  # the one decoder reads every level's files
        assert np.array_equal(dec.rgb, enc.reconstruction) and dec.header.quality == q
        assert refined.encode(small_photo, q).data == enc.data  # seeded: the same file every time
    cup = np.ascontiguousarray(sample_rgb("coffee.png")[:256, :320])  # a post-filter pays here on every CPU tried
    for level in (1, 2):  # the post-filter alone, without refinement
        enc = Codec(device="cpu", effort=level).encode(cup, 5.0)
        assert enc.data[4] == container.ADAPTED_VERSION and _rd_loss(enc, 5.0) < _rd_loss(plain.encode(cup, 5.0), 5.0)
    with pytest.raises(TNGError, match="effort must be a whole number from 0 to 9"):
        Codec(device="cpu", effort=10)


@pytest.mark.parametrize("effort", [1, 4])
def test_targets_hold_for_the_file_the_effort_makes(small_photo, effort):
    """A search measures each try as the effort codes it (post-filter and refinement included)."""
    codec = Codec(device="cpu", effort=effort)
    enc = codec.encode(small_photo, target_psnr=30.0)
    assert enc.target_met and enc.psnr >= 30.0 and psnr(small_photo, codec.decode(enc.data).rgb) == enc.psnr
    # What was measured is the file the effort makes at the quality found, not a plain encode of it.
    assert codec.encode(small_photo, enc.quality).data == enc.data
    enc = codec.encode(small_photo, target_bpp=0.6)
    assert enc.target_met and enc.bpp <= 0.6
    assert np.array_equal(codec.decode(enc.data).rgb, enc.reconstruction)
    assert enc.quality >= Codec(device="cpu", effort=0).encode(small_photo, target_bpp=0.6).quality - 0.25


def test_target_psnr_and_bpp(codec, small_photo):
    enc = codec.encode(small_photo, target_psnr=29.0)
    assert enc.target_met and enc.psnr >= 29.0 and enc.quality < 8
    lower = codec.encode(small_photo, quality=max(1, enc.quality - 0.1))
    assert lower.psnr < 29.0 or enc.quality == 1
    enc = codec.encode(small_photo, target_bpp=0.6)
    assert enc.target_met and enc.bpp <= 0.6
    unreachable = codec.encode(small_photo, target_psnr=80)
    assert not unreachable.target_met and unreachable.quality == 8


def test_bad_quality_and_targets(codec, small_photo):
    with pytest.raises(TNGError, match="quality must be between 1 and 8"):
        codec.encode(small_photo, quality=9)
    with pytest.raises(TNGError, match="not both"):
        codec.encode(small_photo, target_psnr=30, target_bpp=1)


def test_pixel_limit_on_encode(small_photo):
    with pytest.raises(TNGError, match="exceeds the pixel limit of 1000"):
        Codec(device="cpu", max_pixels=1000).encode(small_photo)


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def test_alpha_is_lossless_and_modes_come_back(codec, small_photo):
    alpha = (np.arange(small_photo.shape[0] * small_photo.shape[1]) % 256).astype(np.uint8).reshape(small_photo.shape[:2])
    rgba = Image.fromarray(np.dstack([small_photo, alpha]), "RGBA")
    dec = codec.decode(codec.encode(open_image(_png(rgba))).data)
    assert dec.image.mode == "RGBA" and np.array_equal(dec.alpha, alpha)
    gray = Image.fromarray(small_photo[:, :, 1], "L")
    dec = codec.decode(codec.encode(open_image(_png(gray))).data)
    assert dec.image.mode == "L" and psnr(np.asarray(dec.image), small_photo[:, :, 1]) > 26


def test_metadata_and_flags_travel(codec, small_photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW; pixels stay as stored
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = open_image(_png(Image.fromarray(small_photo), exif=exif.tobytes(), icc_profile=icc))
    dec = codec.decode(codec.encode(src).data)
    assert dec.exif == src.exif and dec.icc_profile == icc
    assert dec.rgb.shape == small_photo.shape
    sixteen = Image.fromarray(small_photo[:, :, 0].astype(np.uint16) * 257)
    s16 = open_image(_png(sixteen))
    dec = codec.decode(codec.encode(s16).data)
    assert Flag(dec.header.flags) & Flag.REDUCED_16BIT and Colour(dec.header.colour) == Colour.GRAY


def _photo_crops(sizes):
    rgb = sample_rgb("chelsea.png")
    return [np.ascontiguousarray(rgb[i * 7 : i * 7 + h, i * 11 : i * 11 + w]) for i, (h, w) in enumerate(sizes)]


def test_encode_batch_groups_equal_tiles_and_matches_single_encodes(monkeypatch):
    codec = Codec(device="cpu", batch_pixels=10 * 128 * 128)
    images = _photo_crops([(100, 120), (128, 97), (70, 200), (110, 128)])  # three pad to 128x128, one to 128x256
    calls = []
    analyse = Codec._analyse
    monkeypatch.setattr(Codec, "_analyse", lambda self, net, tiles: calls.append(len(tiles)) or analyse(self, net, tiles))
    out = codec.encode_batch(images + [np.zeros((2, 2), np.uint8)], quality=3.5)
    assert sorted(calls) == [1, 3]
    assert isinstance(out[-1], TNGError) and "expected an (H, W, 3) uint8 array" in str(out[-1])
    for rgb, enc in zip(images, out):
        single = Codec(device="cpu").encode(rgb, quality=3.5)
        assert (enc.width, enc.height, enc.quality) == (rgb.shape[1], rgb.shape[0], 3.5)
        assert np.array_equal(codec.decode(enc.data).rgb, enc.reconstruction)  # what decoders will see
        assert abs(len(enc.data) - len(single.data)) <= 0.01 * len(single.data) + 8
        assert enc.psnr == pytest.approx(single.psnr, abs=0.05) and enc.psnr == pytest.approx(psnr(rgb, enc.reconstruction))


def test_encode_batch_isolates_a_failing_image(monkeypatch):
    """A failure inside a batch is retried image by image: only the image that fails gets an error."""
    codec = Codec(device="cpu", batch_pixels=8 * 128 * 128, max_pixels=100 * 130)
    images = _photo_crops([(100, 120), (100, 120), (100, 120)])
    images[1][:] = 13  # the image that makes the network fail
    analyse = Codec._analyse

    def flaky(self, net, x):
        if any(((t * 255).round() == 13).all() for t in x):
            raise RuntimeError("out of memory (simulated)")
        return analyse(self, net, x)

    monkeypatch.setattr(Codec, "_analyse", flaky)
    too_big = np.zeros((120, 120, 3), np.uint8)
    out = codec.encode_batch(images + [too_big], target_psnr=28)
    assert isinstance(out[1], TNGError) and "out of memory (simulated)" in str(out[1])
    assert isinstance(out[3], TNGError) and "pixel limit" in str(out[3])
    for k in (0, 2):
        assert out[k].psnr >= 28 and out[k].target_met
        assert np.array_equal(codec.decode(out[k].data).rgb, out[k].reconstruction)
    with pytest.raises(TNGError, match="out of memory"):
        codec.encode(images[1], quality=2)


def test_settling_a_refined_quality_walks_then_bisects_and_stays_bounded():
    """coder._settle on a fake file whose PSNR is its quality × 4 dB: from a start that misses (or meets)
    the target it walks back (onward) a step at a time, bisects the crossing, and gives up flagged after
    `walk` steps when nothing within reach is ok."""
    from tng.codec.coder import Encoded, _settle

    tries = []

    def attempt(q: float) -> Encoded:
        tries.append(q)
        return Encoded(b"", q, 1, 1, q, 4 * q, np.zeros((1, 1, 3), np.uint8))

    for start in (4.0, 5.5):  # misses 20 dB, then meets it
        tries.clear()
        e = _settle(attempt, lambda e: e.psnr >= 20.0, True, start)
        assert e.target_met and e.quality == 5.0 and len(tries) <= 1 + 4 + 2
    tries.clear()
    e = _settle(attempt, lambda e: e.psnr >= 100.0, True, 4.0)  # 25 and beyond: nothing reaches it
    assert not e.target_met and e.quality == 5.0 and tries == [4.0, 4.25, 4.5, 4.75, 5.0]
    e = _settle(attempt, lambda e: e.psnr >= 1.0, True, 1.5)  # everything meets it: the range's end
    assert e.target_met and e.quality == 1.0
