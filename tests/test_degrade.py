"""Tests for din_fast.io.degrade: MATLAB bicubic imresize and the BI / BD / DN degradations.

The imresize oracle below is written independently of the library, with scalar loops in MATLAB's
1-based convention and an explicit reflect-until-inside border rule.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from din_fast.io.degrade import (
    bicubic_degrade,
    blur_degrade,
    gaussian_kernel,
    imresize,
    noise_degrade,
    round_uint8,
)


# ---------------------------------------------------------------------------- loop-based oracle
def cubic(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def mirror(j: int, n: int) -> int:
    """1-based symmetric reflection (edge sample repeated) until the index is inside 1..n."""
    while j < 1 or j > n:
        j = 1 - j if j < 1 else 2 * n + 1 - j
    return j


def contributions(n: int, m: int, scale: float) -> list[list[tuple[int, float]]]:
    """For each of the m outputs: (0-based input index, weight) pairs, MATLAB's recipe."""
    antialias = scale < 1
    width = 4 / scale if antialias else 4.0
    taps = math.ceil(width) + 2
    rows = []
    for x in range(1, m + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        raw = []
        for p in range(taps):
            j = left + p
            w = scale * cubic(scale * (u - j)) if antialias else cubic(u - j)
            raw.append((j, w))
        total = sum(w for _, w in raw)
        rows.append([(mirror(j, n) - 1, w / total) for j, w in raw])
    return rows


def resize_axis(a: np.ndarray, rows: list[list[tuple[int, float]]], axis: int) -> np.ndarray:
    a = np.moveaxis(a, axis, 0)
    out = np.zeros((len(rows),) + a.shape[1:])
    flat_in = a.reshape(a.shape[0], -1)
    flat_out = out.reshape(len(rows), -1)
    for i, taps in enumerate(rows):
        for k in range(flat_in.shape[1]):
            acc = 0.0
            for j, w in taps:
                acc += w * flat_in[j, k]
            flat_out[i, k] = acc
    return np.moveaxis(out, 0, axis)


def reference_imresize(a: np.ndarray, out_hw: tuple[int, int], scales: tuple[float, float]) -> np.ndarray:
    a = a.astype(np.float64)
    order = [0, 1] if scales[0] <= scales[1] else [1, 0]
    for axis in order:
        a = resize_axis(a, contributions(a.shape[axis], out_hw[axis], scales[axis]), axis)
    return a


SCALES = [1 / 2, 1 / 3, 1 / 4, 2, 3, 0.75, 1.5]


# ---------------------------------------------------------------------------- imresize
@pytest.mark.parametrize("scale", SCALES)
def test_imresize_matches_loop_oracle(scale: float) -> None:
    img = np.random.default_rng(0).random((7, 9))
    out_hw = (math.ceil(scale * 7), math.ceil(scale * 9))
    expected = reference_imresize(img, out_hw, (scale, scale))
    got = imresize(img, scale)
    assert got.shape == out_hw and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("out_hw", [(5, 4), (4, 13), (10, 6)])
def test_imresize_output_shape_per_dimension_scales(out_hw: tuple[int, int]) -> None:
    img = np.random.default_rng(1).random((7, 9, 2))
    expected = reference_imresize(img, out_hw, (out_hw[0] / 7, out_hw[1] / 9))
    got = imresize(img, output_shape=out_hw)
    assert got.shape == out_hw + (2,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_output_shape_overrides_scale() -> None:
    img = np.random.default_rng(2).random((7, 9))
    np.testing.assert_array_equal(imresize(img, 0.5, output_shape=(3, 3)), imresize(img, output_shape=(3, 3)))


@pytest.mark.parametrize(
    "scale, shape",
    [(1 / 2, (4, 5)), (1 / 3, (3, 3)), (1 / 4, (2, 3)), (0.75, (6, 7)), (1.5, (11, 14)), (3, (21, 27))],
)
def test_imresize_shapes_use_ceil(scale: float, shape: tuple[int, int]) -> None:
    assert imresize(np.zeros((7, 9)), scale).shape == shape
    assert imresize(np.zeros((7, 9, 3)), scale).shape == shape + (3,)
    assert imresize(torch.zeros(2, 3, 7, 9), scale).shape == (2, 3) + shape


@pytest.mark.parametrize("scale", SCALES)
def test_constant_image_stays_constant(scale: float) -> None:
    np.testing.assert_allclose(imresize(np.full((7, 9, 3), 0.37), scale), 0.37, rtol=0, atol=1e-14)
    np.testing.assert_allclose(imresize(np.full((7, 9), 200, np.uint8), scale), 200.0, rtol=0, atol=1e-12)


def test_identity_at_scale_one() -> None:
    img = np.random.default_rng(3).random((7, 9, 3))
    np.testing.assert_allclose(imresize(img, 1), img, rtol=0, atol=1e-15)


def test_half_downscale_of_linear_ramp_is_pair_mean_in_interior() -> None:
    # Ramp r[j] = j. Output o (0-based) sits at 0-based coordinate 2o + 0.5 with taps symmetric about it,
    # so away from the borders (the 8-wide stretched kernel stays inside) the result is 2o + 0.5.
    n = 32
    ramp = np.tile(np.arange(n, dtype=np.float64), (4, 1))
    out = imresize(ramp, 0.5)
    assert out.shape == (2, 16)
    interior = np.arange(2, 14)
    np.testing.assert_allclose(out[:, interior], np.tile(2 * interior + 0.5, (2, 1)), rtol=0, atol=1e-12)
    # At the border the symmetric padding bends the ramp, so the first sample is not the pair mean 0.5.
    assert abs(out[0, 0] - 0.5) > 1e-3


def test_uint8_input_gives_same_unrounded_float64() -> None:
    img = np.random.default_rng(4).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    got = imresize(img, 0.5)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, imresize(img.astype(np.float64), 0.5))
    assert not np.allclose(got, np.round(got))  # not rounded


def test_round_uint8_is_matlab_conversion() -> None:
    vals = np.array([0.5, 1.5, 2.5, -3.0, 300.0, 254.49, 254.5])
    np.testing.assert_array_equal(round_uint8(vals), [1, 2, 3, 0, 255, 254, 255])
    assert round_uint8(vals).dtype == np.uint8


@pytest.mark.parametrize("scale", [1 / 3, 1.5])
def test_torch_float64_matches_numpy_per_image(scale: float) -> None:
    img = np.random.default_rng(5).random((2, 3, 7, 9))
    got = imresize(torch.from_numpy(img), scale)
    assert got.dtype == torch.float64
    for b in range(2):
        expected = imresize(img[b].transpose(1, 2, 0), scale).transpose(2, 0, 1)
        np.testing.assert_allclose(got[b].numpy(), expected, rtol=0, atol=1e-13)


def test_torch_float32_close_to_float64() -> None:
    img = torch.from_numpy(np.random.default_rng(6).random((3, 16, 20)))
    got32 = imresize(img.float(), 0.25)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), imresize(img, 0.25), rtol=0, atol=1e-5)


def test_torch_grey_2d() -> None:
    img = np.random.default_rng(7).random((7, 9))
    np.testing.assert_allclose(imresize(torch.from_numpy(img), 0.75).numpy(), imresize(img, 0.75), atol=1e-13)


@pytest.mark.parametrize(
    "img, kwargs",
    [
        (np.zeros((7, 9)), {"scale": 0}),
        (np.zeros((7, 9)), {"scale": -0.5}),
        (np.zeros((7, 9)), {"scale": float("nan")}),
        (np.zeros((7, 9)), {}),
        (np.zeros((7, 9)), {"output_shape": (0, 3)}),
        (np.zeros((7, 9)), {"output_shape": (3,)}),
        (np.zeros((0, 9)), {"scale": 2}),
        (np.zeros(9), {"scale": 2}),
        (np.zeros((2, 7, 9, 3)), {"scale": 2}),
        (np.zeros((7, 9), dtype=bool), {"scale": 2}),
        (np.zeros((7, 9), dtype=complex), {"scale": 2}),
        (np.full((7, 9), "a"), {"scale": 2}),
        (torch.zeros(7, 9, dtype=torch.uint8), {"scale": 2}),
        (torch.zeros(9), {"scale": 2}),
        (torch.zeros(0, 7, 9), {"scale": 2}),
    ],
)
def test_imresize_errors(img, kwargs) -> None:
    with pytest.raises(ValueError):
        imresize(img, **kwargs)


# ---------------------------------------------------------------------------- BI / BD / DN
def test_bicubic_degrade_is_imresize_reciprocal() -> None:
    hr = np.random.default_rng(8).random((12, 18, 3))
    np.testing.assert_array_equal(bicubic_degrade(hr, 3), imresize(hr, 1 / 3))
    assert bicubic_degrade(hr, 3).shape == (4, 6, 3)


def test_degradations_reject_integer_images() -> None:
    hr = np.zeros((12, 12, 3), np.uint8)
    for fn in (bicubic_degrade, blur_degrade, noise_degrade):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            fn(hr, 3)


def test_gaussian_kernel_is_normalised_fspecial() -> None:
    k = gaussian_kernel(7, 1.6)
    assert k.shape == (7, 7)
    assert abs(k.sum() - 1) < 1e-15
    r = np.arange(-3, 4)
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.6**2))
    np.testing.assert_allclose(k, g / g.sum(), rtol=1e-14)
    np.testing.assert_array_equal(k, k.T)


def replicate_blur_oracle(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    k = kernel.shape[0]
    c = (k - 1) // 2
    out = np.zeros_like(img, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            for a in range(k):
                for b in range(k):
                    ii = min(max(i + a - c, 0), h - 1)
                    jj = min(max(j + b - c, 0), w - 1)
                    out[i, j] += kernel[a, b] * img[ii, jj]
    return out


@pytest.mark.parametrize("kernel_size", [7, 4])
def test_blur_uses_replicate_borders(kernel_size: int) -> None:
    # scale 1 makes the bicubic step the identity, which isolates the blur.
    hr = np.random.default_rng(9).random((9, 11, 2))
    expected = replicate_blur_oracle(hr, gaussian_kernel(kernel_size, 1.6))
    np.testing.assert_allclose(blur_degrade(hr, 1, kernel_size=kernel_size), expected, rtol=0, atol=1e-13)


def test_blur_degrade_shape_constant_and_torch() -> None:
    hr = np.random.default_rng(10).random((30, 33, 3))
    lr = blur_degrade(hr)
    assert lr.shape == (10, 11, 3) and lr.dtype == np.float64
    np.testing.assert_allclose(blur_degrade(np.full((30, 33, 3), 0.6)), 0.6, rtol=0, atol=1e-14)
    lr_t = blur_degrade(torch.from_numpy(hr.transpose(2, 0, 1)).unsqueeze(0))
    assert lr_t.shape == (1, 3, 10, 11)
    np.testing.assert_allclose(lr_t[0].numpy().transpose(1, 2, 0), lr, rtol=0, atol=1e-13)


def test_noise_degrade_statistics_and_reproducibility() -> None:
    hr = np.full((256, 256), 0.5)
    lr = noise_degrade(hr, 2, sigma=30, generator=np.random.default_rng(11))
    noise = (lr - bicubic_degrade(hr, 2)).ravel()
    n, sigma = noise.size, 30 / 255
    # Five standard errors: sd(mean) = sigma / sqrt(n); sd(sample std) ~ sigma / sqrt(2 (n - 1)).
    assert abs(noise.mean()) < 5 * sigma / math.sqrt(n)
    assert abs(noise.std(ddof=1) / sigma - 1) < 5 / math.sqrt(2 * (n - 1))
    # The documented draw: sigma / 255 times the generator's standard normals, one per LR sample.
    draws = np.random.default_rng(11).standard_normal(n)
    np.testing.assert_allclose(noise, sigma * draws, rtol=0, atol=1e-15)
    again = noise_degrade(hr, 2, sigma=30, generator=np.random.default_rng(11))
    np.testing.assert_array_equal(lr, again)
    assert not np.array_equal(lr, noise_degrade(hr, 2, generator=np.random.default_rng(12)))


def test_noise_degrade_torch() -> None:
    hr = torch.full((1, 3, 128, 128), 0.25)
    lr = noise_degrade(hr, 2, generator=torch.Generator().manual_seed(0))
    assert lr.shape == (1, 3, 64, 64) and lr.dtype == torch.float32
    noise = (lr - 0.25).double().flatten()
    n, sigma = noise.numel(), 30 / 255
    assert abs(noise.mean().item()) < 5 * sigma / math.sqrt(n)
    assert abs(noise.std().item() / sigma - 1) < 5 / math.sqrt(2 * (n - 1))
    assert torch.equal(lr, noise_degrade(hr, 2, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(noise_degrade(hr, 2, sigma=0), bicubic_degrade(hr, 2))


def test_noise_degrade_errors() -> None:
    with pytest.raises(TypeError):
        noise_degrade(np.zeros((8, 8)), 2, generator=torch.Generator())
    with pytest.raises(TypeError):
        noise_degrade(torch.zeros(8, 8), 2, generator=np.random.default_rng(0))
    with pytest.raises(ValueError):
        noise_degrade(np.zeros((8, 8)), 2, sigma=-1)
