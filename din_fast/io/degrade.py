r"""Image degradations used to make low-resolution (LR) inputs: MATLAB-compatible bicubic resizing and
the three standard SR degradation models BI, BD and DN (Zhang et al., RDN, followed by the DIN journal).

Layouts and ranges
------------------
* numpy: ``H x W`` or ``H x W x C``; the spatial axes are 0 and 1. Results are always float64.
* torch: ``(..., H, W)`` (e.g. ``(C, H, W)`` or ``(B, C, H, W)``); the spatial axes are the last two.
  Results keep the tensor's floating dtype and device (the resampling matrices are built in float64 and
  cast once).
* ``imresize`` works on any value range (it is linear). ``bicubic_degrade``, ``blur_degrade`` and
  ``noise_degrade`` take float images in [0, 1]; integer images are rejected, because the noise level is
  defined on the 0-255 scale and silently mixing scales is the classic bug. Results are *not* clipped or
  rounded: bicubic overshoot and noise can leave [0, 1]. To mimic a MATLAB pipeline that writes uint8
  PNGs, convert with ``round_uint8(255 * lr)``.

MATLAB bicubic ``imresize`` (antialiasing on, the default)
----------------------------------------------------------
Cubic kernel (Keys, a = -0.5)::

    k(x) = 1.5|x|^3 - 2.5|x|^2 + 1              |x| <= 1
         = -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2      1 < |x| <= 2
         = 0                                    otherwise

For one dimension of length ``n`` resized by ``s`` to ``m`` samples (1-based indices as in MATLAB):

* when ``s < 1`` (downscaling) the kernel is stretched, ``h(x) = s k(s x)``, and its width is ``4 / s``;
  otherwise ``h = k`` and the width is 4;
* output sample ``x = 1..m`` sits at input coordinate ``u = x / s + 0.5 (1 - 1 / s)``;
* its taps are ``j = left, ..., left + P - 1`` with ``left = floor(u - width / 2)`` and
  ``P = ceil(width) + 2``, weights ``w_j = h(u - j)`` normalised to sum to 1 per output sample;
* taps outside ``1..n`` are mirrored symmetrically (the edge sample repeated: ``0 -> 1``, ``-1 -> 2``,
  ``n + 1 -> n``), i.e. index ``j`` maps through the period-``2n`` sequence ``1..n, n..1``.

The weights of each dimension form a dense ``m x n`` matrix ``A`` (weights of taps that mirror onto the
same sample are summed), and the resize is ``A_H X A_W^T`` done as two matrix products. MATLAB trims
taps whose weight is zero for every output; in the dense matrix such taps contribute exact zeros, so
the result is the same (for finite inputs). Like MATLAB, the dimension with the smaller scale is resized
first (height first on a tie). The order only changes floating-point rounding; resizing the smaller
side first keeps the intermediate image, and so the work, small.

Output size: with ``scale``, ``ceil(scale * n)`` per dimension and the weights use ``scale`` itself;
with ``output_shape = (m_H, m_W)``, the per-dimension scales are ``m / n`` (MATLAB's semantics for
``imresize(img, [rows cols])``).

MATLAB returns uint8 for uint8 input (rounded half away from zero and saturated); ``imresize`` here
always returns the unrounded float result, and ``round_uint8`` applies MATLAB's conversion.

Degradation models
------------------
* BI: ``LR = imresize(HR, 1 / scale)``.
* BD: 2-D Gaussian blur (``kernel_size x kernel_size``, std ``sigma``; 7 and 1.6 in RDN and DIN) with
  replicated borders, then ``imresize(., 1 / scale)``. This is RDN's ``imresize_BD.m``:
  ``imfilter(HR, fspecial('gaussian', 7, 1.6), 'replicate')`` followed by bicubic ``imresize`` (which
  antialiases again). Other papers subsample the blurred image directly instead; DIN evaluates on
  RDN's BD sets, so RDN's recipe is the one to match.
* DN: ``LR = imresize(HR, 1 / scale) + n`` with ``n ~ N(0, (sigma / 255)^2)`` i.i.d. per sample
  (sigma is on the 0-255 scale, 30 in RDN and DIN).

RDN's scripts run on uint8 images, so MATLAB rounds after ``imfilter`` and after ``imresize``; the
functions here keep the exact float values instead (a difference of at most half a grey level per step).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

Image = np.ndarray | torch.Tensor

__all__ = [
    "imresize",
    "round_uint8",
    "gaussian_kernel",
    "bicubic_degrade",
    "blur_degrade",
    "noise_degrade",
]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's bicubic)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _resize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """Dense ``out_len x in_len`` float64 matrix of MATLAB's bicubic contributions (see module doc)."""
    if scale < 1:
        width = 4.0 / scale

        def kernel(d: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * d)
    else:
        width = 4.0
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = left[:, None] + np.arange(math.ceil(width) + 2)  # 1-based input indices, (out_len, P)
    weights = kernel(u[:, None] - taps)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric mirroring: index j (1-based) follows the period-2n sequence 1..n, n..1.
    period = np.mod(taps.astype(np.int64) - 1, 2 * in_len)
    index = np.where(period < in_len, period, 2 * in_len - 1 - period)
    matrix = np.zeros((out_len, in_len))
    rows = np.broadcast_to(np.arange(out_len)[:, None], index.shape)
    np.add.at(matrix, (rows, index), weights)
    return matrix


def _spatial_size(img: Image) -> tuple[int, int]:
    """Validate an image for resizing/filtering and return its (H, W)."""
    if isinstance(img, torch.Tensor):
        if img.ndim < 2:
            raise ValueError(f"expected a tensor of shape (..., H, W), got shape {tuple(img.shape)}")
        if not img.is_floating_point():
            raise ValueError(f"expected a floating-point tensor, got dtype {img.dtype}")
        h, w = img.shape[-2], img.shape[-1]
    elif isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f"expected an array of shape HxW or HxWxC, got shape {img.shape}")
        if img.dtype.kind not in "iuf":
            raise ValueError(f"expected an integer or float array, got dtype {img.dtype}")
        h, w = img.shape[0], img.shape[1]
    else:
        raise TypeError(f"expected a numpy array or torch tensor, got {type(img).__name__}")
    if math.prod(img.shape) == 0:
        raise ValueError(f"expected a non-empty image, got shape {tuple(img.shape)}")
    return h, w


def _check_scale(scale: float, name: str = "scale") -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {scale!r}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{name} must be positive and finite, got {scale!r}")
    return float(scale)


def _apply_matrix(img: Image, matrix: np.ndarray, spatial_axis: int) -> Image:
    """Contract spatial axis 0 (H) or 1 (W) of ``img`` with ``matrix`` (out x in)."""
    if isinstance(img, torch.Tensor):
        m = torch.from_numpy(matrix).to(device=img.device, dtype=img.dtype)
        return m @ img if spatial_axis == 0 else img @ m.T
    return np.moveaxis(np.tensordot(matrix, img, axes=([1], [spatial_axis])), 0, spatial_axis)


def imresize(
    img: Image,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
) -> Image:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (antialiased), vectorised.

    Args:
        img: numpy ``HxW``/``HxWxC`` of any integer or float dtype, or a float torch tensor
            ``(..., H, W)``.
        scale: positive factor (any real, not only integers); output size ``ceil(scale * (H, W))``.
        output_shape: ``(out_H, out_W)``; when given it overrides ``scale`` and the per-dimension scales
            become ``out / in``.

    Returns:
        numpy float64 ``out_H x out_W[xC]`` (unrounded, also for uint8 input; see ``round_uint8``) or a
        tensor ``(..., out_H, out_W)`` of the input's dtype and device. The maths is in the module doc.

    Raises:
        ValueError: non-positive scale or output size, neither given, empty image, wrong ndim or dtype.
    """
    h, w = _spatial_size(img)
    if output_shape is not None:
        if len(output_shape) != 2 or not all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in output_shape
        ):
            raise ValueError(f"output_shape must be two positive integers, got {output_shape!r}")
        out = (int(output_shape[0]), int(output_shape[1]))
        scales = (out[0] / h, out[1] / w)
    elif scale is not None:
        s = _check_scale(scale)
        scales = (s, s)
        out = (math.ceil(s * h), math.ceil(s * w))
    else:
        raise ValueError("imresize needs scale or output_shape")

    if isinstance(img, np.ndarray):
        img = img.astype(np.float64, copy=False)
    # MATLAB's order: the dimension with the smaller scale first; a stable sort puts H first on a tie.
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    for axis in order:
        in_len = (h, w)[axis]
        img = _apply_matrix(img, _resize_matrix(in_len, out[axis], scales[axis]), axis)
    return img


def round_uint8(img: np.ndarray) -> np.ndarray:
    """MATLAB's conversion of doubles to uint8: saturate to [0, 255], round half away from zero.

    ``img`` is on the 0-255 scale (e.g. ``imresize`` of a uint8 image); returns a uint8 array of the same
    shape. Unlike ``numpy.round`` (half to even), 2.5 becomes 3.
    """
    img = np.asarray(img, dtype=np.float64)
    if np.isnan(img).any():
        raise ValueError("round_uint8: input contains NaN")
    return np.floor(np.clip(img, 0.0, 255.0) + 0.5).astype(np.uint8)


def _gaussian_1d(kernel_size: int, sigma: float) -> np.ndarray:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")
    sigma = _check_scale(sigma, "sigma")
    r = np.arange(kernel_size, dtype=np.float64) - (kernel_size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def gaussian_kernel(kernel_size: int = 7, sigma: float = 1.6) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', kernel_size, sigma)``: a ``kernel_size x kernel_size`` float64 kernel.

    ``K(x, y) = exp(-(x^2 + y^2) / (2 sigma^2)) / sum``, on the grid ``x, y = i - (kernel_size - 1) / 2``.
    It is built as ``g g^T`` with ``g(x) = exp(-x^2 / (2 sigma^2)) / sum``, which is the same kernel.
    fspecial also zeroes entries below ``eps * max(K)``; that changes no weight by more than
    ``eps * max(K)`` (and nothing at all for 7 / 1.6), so it is left out and the blur stays separable.
    """
    g = _gaussian_1d(kernel_size, sigma)
    return np.outer(g, g)


def _check_float_image(img: Image) -> None:
    _spatial_size(img)
    if isinstance(img, np.ndarray) and img.dtype.kind != "f":
        raise ValueError(
            f"expected a float image in [0, 1], got dtype {img.dtype}; convert uint8 with img / 255"
        )


def _replicate_filter(img: Image, taps: np.ndarray) -> Image:
    """``imfilter(img, g g^T, 'replicate')``: separable correlation, edge samples repeated outside.

    The kernel centre is MATLAB's, ``floor((k + 1) / 2)`` 1-based, so even sizes reach one tap further
    right/down than left/up. numpy images run through the same torch code in float64, channels first
    (contiguous planes make the shifted adds fast).
    """
    if isinstance(img, np.ndarray):
        planes = np.moveaxis(img, -1, 0) if img.ndim == 3 else img
        out = _replicate_filter(torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float64)), taps)
        return (out.permute(1, 2, 0) if img.ndim == 3 else out).numpy()
    k = taps.size
    before = (k - 1) // 2
    for dim in (-2, -1):
        n = img.shape[dim]
        index = np.clip(np.arange(-before, n + k - 1 - before), 0, n - 1)
        padded = img.index_select(dim, torch.from_numpy(index).to(img.device))
        out = torch.zeros_like(img)
        for t, weight in enumerate(taps.tolist()):
            out.add_(padded.narrow(dim, t, n), alpha=weight)  # fused multiply-add, no temporaries
        img = out
    return img


def bicubic_degrade(hr: Image, scale: float) -> Image:
    """BI degradation: ``imresize(hr, 1 / scale)``; ``hr`` is a float image in [0, 1] (see module doc)."""
    _check_float_image(hr)
    return imresize(hr, 1.0 / _check_scale(scale))


def blur_degrade(hr: Image, scale: float = 3, sigma: float = 1.6, kernel_size: int = 7) -> Image:
    """BD degradation (RDN's ``imresize_BD.m``): Gaussian blur with replicated borders, then bicubic.

    ``LR = imresize(imfilter(hr, fspecial('gaussian', kernel_size, sigma), 'replicate'), 1 / scale)``.
    ``hr`` is a float image in [0, 1]; numpy ``HxW[xC]`` gives float64, torch ``(..., H, W)`` keeps its
    dtype. The Gaussian is separable, so the blur runs as two 1-D passes of ``kernel_size`` taps.
    """
    _check_float_image(hr)
    scale = _check_scale(scale)
    blurred = _replicate_filter(hr, _gaussian_1d(kernel_size, sigma))
    return imresize(blurred, 1.0 / scale)


def noise_degrade(
    hr: Image,
    scale: float,
    sigma: float = 30,
    generator: np.random.Generator | torch.Generator | None = None,
) -> Image:
    """DN degradation: ``imresize(hr, 1 / scale) + N(0, (sigma / 255)^2)`` noise, not clipped.

    Args:
        hr: float image in [0, 1], numpy ``HxW[xC]`` or torch ``(..., H, W)``.
        scale: downscaling factor.
        sigma: noise standard deviation on the 0-255 scale (RDN and DIN use 30); 0 gives BI.
        generator: ``numpy.random.Generator`` for numpy input, ``torch.Generator`` (on the tensor's
            device) for torch input; ``None`` draws from a fresh numpy generator / torch's global one.

    Returns:
        The noisy LR image, float64 (numpy) or the input's dtype (torch). The noise is exactly
        ``sigma / 255 * generator.standard_normal(lr.shape)`` (numpy) or
        ``sigma / 255 * torch.randn(lr.shape, generator=generator)`` (torch), one draw per LR sample.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 <= sigma < math.inf:
        raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
    lr = bicubic_degrade(hr, scale)
    std = float(sigma) / 255.0
    if isinstance(lr, torch.Tensor):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"torch input needs a torch.Generator, got {type(generator).__name__}")
        noise = torch.randn(lr.shape, generator=generator, dtype=lr.dtype, device=lr.device)
        return lr + std * noise
    if generator is None:
        generator = np.random.default_rng()
    elif not isinstance(generator, np.random.Generator):
        raise TypeError(f"numpy input needs a numpy.random.Generator, got {type(generator).__name__}")
    return lr + std * generator.standard_normal(lr.shape)
