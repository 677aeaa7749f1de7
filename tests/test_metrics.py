"""Tests for din_fast.inference.metrics: Y-channel PSNR / SSIM (MATLAB / BasicSR conventions) and quantisation.

The SSIM oracle below is written independently: it filters every pixel with an explicit 11x11 window
and reflect-101 border indices (cv2.filter2D's default), then keeps the [5:-5, 5:-5] crop.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from din_fast.inference.metrics import psnr, quantize, rgb_to_y, ssim


# ---------------------------------------------------------------------------- oracles
def luma(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., c].astype(np.float64) for c in range(3))
    return (65.481 * r + 128.553 * g + 24.966 * b) / 255 + 16


def reflect101(i: int, n: int) -> int:
    if i < 0:
        return -i
    if i >= n:
        return 2 * n - 2 - i
    return i


def ssim_oracle(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    h, w = a.shape
    t = np.arange(11) - 5
    g = np.exp(-(t**2) / (2 * 1.5**2))
    g /= g.sum()
    window = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(h):
        for j in range(w):
            if not (5 <= i < h - 5 and 5 <= j < w - 5):
                continue  # the [5:-5, 5:-5] crop of the filtered maps
            sa = sb = saa = sbb = sab = 0.0
            for di in range(-5, 6):
                for dj in range(-5, 6):
                    wt = window[di + 5, dj + 5]
                    x = a[reflect101(i + di, h), reflect101(j + dj, w)]
                    y = b[reflect101(i + di, h), reflect101(j + dj, w)]
                    sa += wt * x
                    sb += wt * y
                    saa += wt * x * x
                    sbb += wt * y * y
                    sab += wt * x * y
            var_a, var_b, cov = saa - sa * sa, sbb - sb * sb, sab - sa * sb
            values.append(
                (2 * sa * sb + c1) * (2 * cov + c2) / ((sa * sa + sb * sb + c1) * (var_a + var_b + c2))
            )
    return float(np.mean(values))


def pair(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference image and a noisy version of it (correlated, so SSIM is far from 0 and 1)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, shape), 0, 255).astype(np.uint8)
    return a, b


# ---------------------------------------------------------------------------- luma and PSNR
def test_rgb_to_y_formula_and_range() -> None:
    img = np.array([[[0, 0, 0], [255, 255, 255], [10, 200, 30]]], np.uint8)
    y = rgb_to_y(img)
    assert y.shape == (1, 3) and y.dtype == np.float64
    np.testing.assert_allclose(y, [[16.0, 235.0, (65.481 * 10 + 128.553 * 200 + 24.966 * 30) / 255 + 16]])
    np.testing.assert_allclose(rgb_to_y(img.astype(np.float32)), y, rtol=1e-12)


@pytest.mark.parametrize("shape", [(16, 17, 3), (16, 17)])
def test_identical_images(shape: tuple[int, ...]) -> None:
    a, _ = pair(shape, 0)
    for y_channel in (True, False):
        assert psnr(a, a.copy(), y_channel=y_channel) == math.inf
        assert ssim(a, a.copy(), y_channel=y_channel) == 1.0


def test_psnr_of_one_grey_level_offset() -> None:
    a = np.random.default_rng(1).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    b = a + np.uint8(1)
    dy = (65.481 + 128.553 + 24.966) / 255
    assert psnr(a, b) == pytest.approx(20 * math.log10(255 / dy), abs=1e-9)
    assert psnr(a, b, y_channel=False) == pytest.approx(20 * math.log10(255), abs=1e-12)


def test_psnr_matches_direct_formula_and_is_symmetric() -> None:
    a, b = pair((20, 24, 3), 2)
    mse = np.mean((luma(a)[3:-3, 3:-3] - luma(b)[3:-3, 3:-3]) ** 2)
    expected = 20 * math.log10(255 / math.sqrt(mse))
    assert psnr(a, b, crop_border=3) == pytest.approx(expected, abs=1e-10)
    assert psnr(b, a, crop_border=3) == pytest.approx(expected, abs=1e-10)
    grey_mse = np.mean((a[..., 0].astype(float) - b[..., 0]) ** 2)
    assert psnr(a[..., 0], b[..., 0]) == pytest.approx(20 * math.log10(255 / math.sqrt(grey_mse)), abs=1e-10)


def test_crop_border_removes_border_differences() -> None:
    a, _ = pair((20, 24, 3), 3)
    b = a.copy()
    b[:2] = 255 - b[:2]  # differences only in the two top rows
    assert psnr(a, b, crop_border=2) == math.inf
    assert psnr(a, b, crop_border=1) < 100
    assert ssim(a, b, crop_border=2) == 1.0
    assert ssim(a, b, crop_border=1) < 1.0


# ---------------------------------------------------------------------------- SSIM
def test_ssim_grey_matches_loop_oracle() -> None:
    a, b = pair((16, 18), 4)
    expected = ssim_oracle(a, b)
    assert 0.1 < expected < 0.99
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)


def test_ssim_rgb_y_and_crop_match_loop_oracle() -> None:
    a, b = pair((17, 19, 3), 5)
    assert ssim(a, b) == pytest.approx(ssim_oracle(luma(a), luma(b)), abs=1e-12)
    c = 2
    expected = ssim_oracle(luma(a)[c:-c, c:-c], luma(b)[c:-c, c:-c])
    assert ssim(a, b, crop_border=c) == pytest.approx(expected, abs=1e-12)


def test_ssim_rgb_channels_are_averaged() -> None:
    a, b = pair((15, 16, 3), 6)
    per_channel = [ssim_oracle(a[..., k], b[..., k]) for k in range(3)]
    assert len(set(np.round(per_channel, 6))) == 3  # the channels really differ
    assert ssim(a, b, y_channel=False) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_ssim_defian_variant_uses_offset_luma() -> None:
    a, b = pair((16, 16, 3), 7)
    shifted = [luma(x) - 16 + 16 / 255 for x in (a, b)]
    expected = ssim_oracle(*shifted)
    got = ssim(a, b, variant="defian")
    assert got == pytest.approx(expected, abs=1e-12)
    assert got < ssim(a, b) - 1e-6  # the darker luma lowers SSIM's luminance term
    assert psnr(a, b) == pytest.approx(
        20 * math.log10(255 / math.sqrt(np.mean((shifted[0] - shifted[1]) ** 2))), abs=1e-9
    )


def test_ssim_defian_matches_skimage_path() -> None:
    skimage_color = pytest.importorskip("skimage.color")
    a, b = pair((16, 16, 3), 8)
    # DeFiAN's test.py: 0-255 floats into rgb2ycbcr (which expects [0, 1]), then / 255.
    ya, yb = (skimage_color.rgb2ycbcr(x.astype(np.float64))[..., 0] / 255 for x in (a, b))
    assert ssim(a, b, variant="defian") == pytest.approx(ssim_oracle(ya, yb), abs=1e-12)


# ---------------------------------------------------------------------------- quantize
def test_quantize_torch_layouts_and_rounding() -> None:
    k = torch.arange(256, dtype=torch.float64)
    x = torch.stack([k / 255, (k / 255).flip(0), torch.full_like(k, 2.5 / 255)]).reshape(3, 16, 16)
    q = quantize(x)
    assert q.dtype == np.uint8 and q.shape == (16, 16, 3)
    np.testing.assert_array_equal(q[..., 0].ravel(), np.arange(256))
    np.testing.assert_array_equal(q[..., 2], 2)  # 2.5 rounds half to even
    np.testing.assert_array_equal(quantize(x.unsqueeze(0)), q)
    np.testing.assert_array_equal(quantize(x.float()), q)
    assert quantize(torch.tensor([[-0.2, 1.3]])).tolist() == [[0, 255]]


def test_quantize_numpy() -> None:
    x = np.array([[[-0.1, 0.0, 1.0], [0.5, 2.5 / 255, 1.7]]])
    q = quantize(x)
    assert q.dtype == np.uint8 and q.shape == (1, 2, 3)
    np.testing.assert_array_equal(q, [[[0, 0, 255], [128, 2, 255]]])  # half to even


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(2, 3, 4, 4),
        torch.zeros(4, 4, dtype=torch.uint8),
        torch.zeros(4),
        np.zeros((4, 4), np.uint8),
        np.full((2, 2), np.nan),
        [[0.5]],
    ],
)
def test_quantize_errors(bad) -> None:
    with pytest.raises((ValueError, TypeError)):
        quantize(bad)


# ---------------------------------------------------------------------------- errors
def test_metric_errors() -> None:
    a, b = pair((20, 20, 3), 9)
    cases = [
        (a, b[:19]),  # shape mismatch
        (a.astype(np.float64), b),  # not uint8
        (torch.from_numpy(a), b),  # tensor instead of quantised array
        (np.zeros((20, 20, 4), np.uint8), np.zeros((20, 20, 4), np.uint8)),  # 4 channels
    ]
    for x, y in cases:
        for fn in (psnr, ssim):
            with pytest.raises(ValueError):
                fn(x, y)
    for fn in (psnr, ssim):
        with pytest.raises(ValueError, match="crop_border"):
            fn(a, b, crop_border=10)
        with pytest.raises(ValueError, match="crop_border"):
            fn(a, b, crop_border=-1)
    with pytest.raises(ValueError, match="11x11"):
        ssim(a, b, crop_border=5)
    with pytest.raises(ValueError, match="variant"):
        ssim(a, b, variant="matlab")
    with pytest.raises(ValueError, match="defian"):
        ssim(a[..., 0], b[..., 0], variant="defian")
    with pytest.raises(ValueError, match="defian"):
        ssim(a, b, y_channel=False, variant="defian")
    with pytest.raises(ValueError):
        rgb_to_y(a[..., 0])
