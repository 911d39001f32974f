"""Post-filters (codec/postfilter.py): exact integer filtering anywhere, a hostile-proof stream form, a
fit that pays for its own bits, and version-2 files that decode to the encoder's pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tng.codec import Codec, TNGError, container
from tng.codec.postfilter import KERNELS, SECTION_VERSION, W_MAX, PostFilter, fit, pack_section, unpack_section


def reference(rgb: np.ndarray, f: PostFilter) -> np.ndarray:
    """The module docstring's formula in int64 numpy, term by term: the independent reference."""
    k, r = f.size, f.size // 2
    p = np.pad(rgb.astype(np.int64), ((r, r), (r, r), (0, 0)), mode="edge")
    h, w = rgb.shape[:2]
    out = np.empty_like(rgb)
    for c in range(3):
        acc = np.full((h, w), 255 * f.bias[c], np.int64)
        for ch in range(3):
            for dy in range(k):
                for dx in range(k):
                    acc += f.weights[c, ch, dy, dx] * p[dy : dy + h, dx : dx + w, ch]
        corr = (acc + (1 << (f.shift - 1))) >> f.shift if f.shift else acc
        out[..., c] = np.clip(rgb[..., c].astype(np.int64) + corr, 0, 255)
    return out


def random_filter(rng: np.random.Generator, k: int, extreme: bool = False) -> PostFilter:
    if extreme:  # every weight at ±W_MAX: the largest sums the format allows
        w = rng.choice([-W_MAX, W_MAX], (3, 3, k, k))
        b = rng.choice([-W_MAX, W_MAX], 3)
    else:
        w = rng.integers(-W_MAX, W_MAX + 1, (3, 3, k, k))
        b = rng.integers(-W_MAX, W_MAX + 1, 3)
    return PostFilter(w.astype(np.int64), b.astype(np.int64), int(rng.integers(0, 16)))


@pytest.mark.parametrize("k", KERNELS)
def test_filtering_is_the_integer_formula_on_any_thread_count(k):
    rng = np.random.default_rng(k)
    # Planes of 0 and 255 as well as noise: the sums reach their bounds.
    pics = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), np.full((9, 11, 3), 255, np.uint8),
            np.where(rng.random((20, 20, 3)) < 0.5, 0, 255).astype(np.uint8)]
    threads = torch.get_num_threads()
    try:
        for pic in pics:
            for extreme in (False, True):
                f = random_filter(rng, k, extreme)
                want = reference(pic, f)
                for n in (1, 2):
                    torch.set_num_threads(n)
                    assert np.array_equal(f.apply(pic), want)
    finally:
        torch.set_num_threads(threads)


def test_filtering_stays_exact_whatever_precision_the_caller_set():
    """bf16/TF32 math for fp32 convolutions and matmuls, as a training script may set, would round the sums."""
    rng = np.random.default_rng(5)
    pic = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    f = random_filter(rng, 5, extreme=True)
    saved = torch.backends.mkldnn.conv.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision
    try:
        torch.backends.mkldnn.conv.fp32_precision = torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        assert np.array_equal(f.apply(pic), reference(pic, f))
    finally:
        torch.backends.mkldnn.conv.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision = saved


def test_sections_round_trip():
    rng = np.random.default_rng(0)
    filters = [random_filter(rng, k) for k in KERNELS] + [None, random_filter(rng, 3, extreme=True), None]
    back = unpack_section(pack_section(filters), len(filters))
    for a, b in zip(filters, back):
        assert (a is None and b is None) or (np.array_equal(a.weights, b.weights) and np.array_equal(a.bias, b.bias)
                                             and a.shift == b.shift)


@pytest.mark.parametrize("data,tiles,reason", [
    (b"", 1, "truncated"),
    (bytes([SECTION_VERSION + 1, 0]), 1, "adaptation section version"),
    (bytes([SECTION_VERSION]), 1, "truncated"),  # a record short
    (bytes([SECTION_VERSION, 0, 0]), 1, "unexpected bytes"),  # a record too many
    (bytes([SECTION_VERSION, 4 << 4]), 1, "unknown post-filter size"),
    (bytes([SECTION_VERSION, 1 << 4]) + bytes(11), 1, "truncated"),  # a 1×1 filter has 12 values
    (bytes([SECTION_VERSION, 1 << 4]) + b"\x80\x02" + bytes(11), 1, "beyond"),  # zigzag 256 = 128
    (bytes([SECTION_VERSION, 1 << 4]) + b"\xff\xff\xff\xff\xff\x01" + bytes(11), 1, "corrupt"),  # runaway varint
])
def test_hostile_sections_are_refused_with_a_reason(data, tiles, reason):
    with pytest.raises(TNGError, match=reason):
        unpack_section(data, tiles)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.binary(max_size=400), tiles=st.integers(1, 4))
def test_any_bytes_are_filters_or_a_tngerror(junk, tiles):
    try:
        filters = unpack_section(bytes([SECTION_VERSION]) + junk, tiles)
    except TNGError:
        return
    assert len(filters) == tiles
    for f in filters:
        assert f is None or (f.size in KERNELS and np.abs(f.weights).max() <= W_MAX and 0 <= f.shift < 16)


def test_fit_undoes_a_blur_and_a_colour_cast_and_pays_for_itself(photo):
    src = np.ascontiguousarray(photo[:96, :128])
    x = torch.from_numpy(src.copy()).permute(2, 0, 1)[None].float()
    blur = torch.tensor([[0, 0.1, 0], [0.1, 0.6, 0.1], [0, 0.1, 0]]).expand(3, 1, 3, 3)
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), blur, groups=3)
    decoded = (blurred[0].permute(1, 2, 0).numpy() * 0.93 + 6).round().clip(0, 255).astype(np.uint8)
    mse = lambda a: float(((a.astype(float) - src) ** 2).mean())  # noqa: E731
    f, out = fit(src, decoded, lam=0.05)  # distortion dear enough that a 3×3 filter's bytes pay
    assert f is not None and f.size == 3 and np.array_equal(out, f.apply(decoded))
    assert mse(out) < 0.1 * mse(decoded)
    f, out = fit(src, decoded, lam=0.01)  # bytes dearer: the colour cast alone, by a 1×1 filter, pays
    assert f is not None and f.size == 1 and mse(out) < 0.5 * mse(decoded)
    # Where the decoder is already right, no filter pays for its bytes.
    f, out = fit(src, src.copy(), lam=0.05)
    assert f is None and np.array_equal(out, src)


def test_filtered_files_are_version_2_and_decode_to_the_encoders_pixels(photo):
    """A photo coded in small tiles, some of which get a filter: the file says so in its version and
    its adaptation section, and decodes to the encoder's pixels on any thread count."""
    src = np.ascontiguousarray(photo[:128, :192])
    plain = Codec(device="cpu", effort=0).encode(src, quality=5)
    enc = Codec(device="cpu", effort=2, tile=64).encode(src, quality=5)
    header, sections = container.unpack(enc.data, 10**9)
    assert plain.data[4] == container.FORMAT_VERSION
    assert header.version == container.ADAPTED_VERSION and len(sections) == 3 + 1 + 6
    filters = unpack_section(sections[3], 6)
    assert any(filters)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert np.array_equal(Codec(device="cpu").decode(enc.data).rgb, enc.reconstruction)
    finally:
        torch.set_num_threads(threads)


def test_a_damaged_adaptation_section_under_valid_checksums_is_refused(photo):
    src = np.ascontiguousarray(photo[:256, :320])  # its post-filter pays on every CPU tried (128×192: not on all)
    enc = Codec(device="cpu", effort=2).encode(src, quality=5)
    header, sections = container.unpack(enc.data, 10**9)
    sections = [bytes(s) for s in sections]
    for bad, reason in [(b"", "truncated"), (sections[3] + b"\x00", "unexpected bytes"),
                        (bytes([9]) + sections[3][1:], "adaptation section version")]:
        damaged = container.pack(header, sections[:3] + [bad] + sections[4:])
        with pytest.raises(TNGError, match=reason):
            Codec(device="cpu").decode(damaged)
    # Without its section, a version-2 file's sections no longer add up.
    with pytest.raises(TNGError, match="sections for"):
        Codec(device="cpu").decode(container.pack(header, sections[:3] + sections[4:]))
