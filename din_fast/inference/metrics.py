r"""PSNR and SSIM as the DIN and DeFiAN evaluation code computes them (MATLAB / BasicSR conventions).

Pipeline: the network output (float, nominally in [0, 1]) is quantised with ``quantize``
(``round(clamp(255 x, 0, 255))``, round half to even as ``torch.round``), then compared with the uint8
ground truth. Both metrics take uint8 ``HxWx3`` RGB (or ``HxW`` / ``HxWx1`` grey) numpy arrays and work
in float64 on the 0-255 scale.

Luma (``rgb_to_y``, MATLAB's ``rgb2ycbcr`` Y channel, unrounded)::

    Y = (65.481 R + 128.553 G + 24.966 B) / 255 + 16          R, G, B in 0..255, Y in [16, 235]

For grey input the "luma" is the grey value itself. ``crop_border = c`` removes ``c`` pixels from every
side before measuring (the official code uses ``c = scale``).

PSNR (peak 255; MSE over all pixels, and over all channels when ``y_channel=False``)::

    PSNR = 20 log10(255 / sqrt(MSE)),   MSE = mean((I1 - I2)^2);   +inf when MSE = 0

SSIM (Wang et al. 2004 with the BasicSR "MATLAB-equivalent" choices): ``w`` is the 11 x 11 Gaussian window
``g g^T``, ``g_i = exp(-(i - 5)^2 / (2 * 1.5^2))`` normalised to sum 1 (``cv2.getGaussianKernel(11, 1.5)``)::

    mu1 = w * I1, mu2 = w * I2,  s11 = w * I1^2 - mu1^2,  s22 = w * I2^2 - mu2^2,  s12 = w * (I1 I2) - mu1 mu2
    map = (2 mu1 mu2 + C1)(2 s12 + C2) / ((mu1^2 + mu2^2 + C1)(s11 + s22 + C2)),  C1 = (0.01*255)^2,
    C2 = (0.03*255)^2,  SSIM = mean(map)

``*`` is correlation. The official code filters with ``cv2.filter2D`` (reflect-101 borders) and then
keeps ``[5:-5, 5:-5]``; those are exactly the positions whose 11 x 11 window lies inside the image, so
the border mode never reaches the result and the filter here is the equivalent "valid" correlation
(separable: 11 taps down the columns, then 11 along the rows). With ``y_channel=False`` the SSIM of each
channel is computed and the three are averaged (the DIN helper meant to do this but reuses one channel).

``variant="defian"`` reproduces DeFiAN's 2020 ``test.py``: it passes float RGB on the 0-255 scale to
``skimage.color.rgb2ycbcr``, which assumes [0, 1] for floats and therefore returns
``65.481 R + 128.553 G + 24.966 B + 16``; dividing by 255 gives the luma actually fed to SSIM::

    Y_defian = (65.481 R + 128.553 G + 24.966 B + 16) / 255 = Y - 16 + 16/255  (about Y - 15.937)

SSIM's luminance term is not shift invariant, so this lowers SSIM slightly; PSNR is unaffected (DeFiAN's
PSNR path is standard), so ``psnr`` has no variant.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = ["rgb_to_y", "psnr", "ssim", "quantize"]

_LUMA_WEIGHTS = np.array([65.481, 128.553, 24.966])
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2
_SSIM_RADIUS = 5


def _gaussian_window_1d(size: int = 2 * _SSIM_RADIUS + 1, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


_SSIM_WINDOW = _gaussian_window_1d()


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """MATLAB luma ``Y = (65.481 R + 128.553 G + 24.966 B) / 255 + 16`` as unrounded float64 ``HxW``.

    ``img``: ``HxWx3`` RGB, uint8 or float already on the 0-255 scale.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an HxWx3 RGB image, got shape {img.shape}")
    if img.dtype.kind not in "uif":
        raise ValueError(f"rgb_to_y expects uint8 or float (0-255) values, got dtype {img.dtype}")
    return img.astype(np.float64) @ _LUMA_WEIGHTS / 255.0 + 16.0


def _planes(
    img1: np.ndarray, img2: np.ndarray, crop_border: int, y_channel: bool, defian: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Validate a uint8 pair and return the cropped float64 planes to compare (one, or one per channel)."""
    for name, img in (("img1", img1), ("img2", img2)):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            kind = img.dtype if isinstance(img, (np.ndarray, torch.Tensor)) else type(img).__name__
            raise ValueError(f"{name} must be a uint8 numpy image (use quantize() first), got {kind}")
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
            raise ValueError(f"{name} must be HxW, HxWx1 or HxWx3, got shape {img.shape}")
    if img1.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img1.shape} vs {img2.shape}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, numbers.Integral) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    h, w = img1.shape[:2]
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {h}x{w} image")

    rgb = img1.ndim == 3 and img1.shape[2] == 3
    if defian and not (rgb and y_channel):
        raise ValueError("variant='defian' changes the RGB->Y conversion; it needs RGB and y_channel=True")

    def planes(img: np.ndarray) -> list[np.ndarray]:
        if not rgb:
            chans = [img.reshape(h, w).astype(np.float64)]
        elif defian:
            # skimage.rgb2ycbcr on 0-255 floats, then /255 (see module doc).
            chans = [(img.astype(np.float64) @ _LUMA_WEIGHTS + 16.0) / 255.0]
        elif y_channel:
            chans = [rgb_to_y(img)]
        else:
            chans = [img[..., c].astype(np.float64) for c in range(3)]
        c = crop_border
        return [p[c : h - c, c : w - c] for p in chans]

    return planes(img1), planes(img2)


def psnr(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio, peak 255: ``20 log10(255 / sqrt(MSE))`` (formulas in the module doc).

    Args:
        img1, img2: uint8 ``HxWx3`` RGB or ``HxW`` grey images of the same shape.
        crop_border: pixels removed from every side first.
        y_channel: compare MATLAB luma (RGB input); ``False`` compares all RGB channels.

    Returns:
        PSNR in dB as a Python float; ``inf`` for identical images.
    """
    p1, p2 = _planes(img1, img2, crop_border, y_channel)
    mse = float(np.mean([np.mean((a - b) ** 2) for a, b in zip(p1, p2, strict=True)]))
    if mse == 0.0:
        return float("inf")
    return 20.0 * float(np.log10(255.0 / np.sqrt(mse)))


def _valid_filter(x: np.ndarray) -> np.ndarray:
    """Valid correlation of a 2-D plane with the separable 11x11 SSIM window: shape shrinks by 10 per axis."""
    cols = np.lib.stride_tricks.sliding_window_view(x, _SSIM_WINDOW.size, axis=0) @ _SSIM_WINDOW
    return np.lib.stride_tricks.sliding_window_view(cols, _SSIM_WINDOW.size, axis=1) @ _SSIM_WINDOW


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = _valid_filter(a), _valid_filter(b)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s11 = _valid_filter(a * a) - mu1_sq
    s22 = _valid_filter(b * b) - mu2_sq
    s12 = _valid_filter(a * b) - mu1_mu2
    ssim_map = ((2.0 * mu1_mu2 + _SSIM_C1) * (2.0 * s12 + _SSIM_C2)) / (
        (mu1_sq + mu2_sq + _SSIM_C1) * (s11 + s22 + _SSIM_C2)
    )
    return float(ssim_map.mean())


def ssim(
    img1: np.ndarray,
    img2: np.ndarray,
    crop_border: int = 0,
    y_channel: bool = True,
    variant: str = "standard",
) -> float:
    """Structural similarity, BasicSR / "MATLAB-equivalent" form (formulas in the module doc).

    Args:
        img1, img2: uint8 ``HxWx3`` RGB or ``HxW`` grey images of the same shape; after cropping both
            sides must be at least 11 pixels.
        crop_border: pixels removed from every side first.
        y_channel: compare MATLAB luma (RGB input); ``False`` averages the SSIM of the R, G, B channels.
        variant: ``"standard"``, or ``"defian"`` for DeFiAN's luma ``Y - 16 + 16/255`` (RGB, Y only).

    Returns:
        Mean of the SSIM map, a Python float (1.0 for identical images).
    """
    if variant not in ("standard", "defian"):
        raise ValueError(f"variant must be 'standard' or 'defian', got {variant!r}")
    p1, p2 = _planes(img1, img2, crop_border, y_channel, defian=variant == "defian")
    h, w = p1[0].shape
    if min(h, w) < _SSIM_WINDOW.size:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {h}x{w}")
    return float(np.mean([_ssim_plane(a, b) for a, b in zip(p1, p2, strict=True)]))


def quantize(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Quantise a float image in [0, 1] to uint8 like the official pipelines: ``round(clamp(255 x, 0, 255))``.

    The arithmetic runs in the input's own float dtype and rounds half to even (``torch.round`` /
    ``numpy.round``), like the official code.

    Args:
        x: torch tensor ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` (any device), or a numpy float array
            ``HxW`` / ``HxWxC``.

    Returns:
        uint8 numpy array, ``HxW`` or ``HxWxC`` (channels last).
    """
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise ValueError(f"quantize expects a float tensor in [0, 1], got dtype {x.dtype}")
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim not in (2, 3):
            raise ValueError(f"quantize expects (H, W), (C, H, W) or (1, C, H, W), got {tuple(x.shape)}")
        if torch.isnan(x).any():
            raise ValueError("quantize: input contains NaN")
        q = (x.detach() * 255).clamp(0, 255).round().to(torch.uint8).cpu()
        return (q.permute(1, 2, 0) if q.ndim == 3 else q).contiguous().numpy()
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise ValueError(f"quantize expects a float array in [0, 1], got dtype {x.dtype}")
        if x.ndim not in (2, 3):
            raise ValueError(f"quantize expects HxW or HxWxC, got shape {x.shape}")
        if np.isnan(x).any():
            raise ValueError("quantize: input contains NaN")
        return np.round(np.clip(x * 255, 0, 255)).astype(np.uint8)
    raise TypeError(f"quantize expects a torch tensor or numpy array, got {type(x).__name__}")
