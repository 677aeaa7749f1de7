"""Pieces shared by the models: the base class, input checks and the pixel-shuffle upsampler."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from din_fast import ops


def check_image_batch(x: Any) -> None:
    """Raise ValueError unless ``x`` is a non-empty floating (B, 3, H, W) RGB batch."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor of shape (B, 3, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"expected a 4-D (B, 3, H, W) tensor, got {x.dim()}-D shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point tensor with RGB values in [0, 1], got dtype {x.dtype} "
                         "(for 8-bit images use x.float() / 255)")
    if x.shape[1] != 3:
        raise ValueError(f"expected 3 (RGB) channels, got {x.shape[1]} in shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"expected a non-empty batch and spatial size, got shape {tuple(x.shape)}")


class SRModel(nn.Module):
    """Base of every din_fast model: RGB in [0, 1], (B, 3, H, W) → (B, 3, s·H, s·W), not clamped.

    Attributes:
        model_name: the registry name that rebuilds this model (``create_model(model_name, ...)``).
        scale: the upscaling factor.
        config: the constructor's keyword arguments other than ``scale``.
    """

    model_name: str
    scale: int
    config: dict[str, Any]

    def save(self, path: str) -> None:
        """Write the weights and the model's description to a safetensors file (see ``load_model``)."""
        from din_fast.models.native import save_model

        save_model(self, path)

    def official_key_map(self) -> list[tuple[str, list[str], tuple[int, ...]]]:
        """(our parameter, official checkpoint keys, shape of each official tensor) for every parameter."""
        raise NotImplementedError(f"{type(self).__name__} has no official checkpoint format")

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, scale={self.scale}"


class Conv3x3(nn.Conv2d):
    """``nn.Conv2d(in_channels, out_channels, 3, padding=1)`` that runs the fused ``conv3x3`` op.

    Same parameters, initialisation and state-dict keys as the nn.Conv2d it replaces (checkpoints load
    unchanged). Where the op resolves to its reference (the reference backend, GPUs, half precision on
    CPU) that is nn.Conv2d's convolution; on CPU the Winograd F(4x4, 3x3) kernel (see
    din_fast/ops/conv3x3.py). x (B, Cin, H, W) → (B, Cout, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)
        # The op takes a bias: a bias-free conv passes zeros (a buffer: follows .to(), not saved).
        self.register_buffer("zero_bias", None if bias else torch.zeros(out_channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.conv3x3(x, self.weight, self.bias if self.bias is not None else self.zero_bias)


class PixelShuffle(nn.PixelShuffle):
    """``nn.PixelShuffle(r)`` that runs ``din_fast.ops.pixel_shuffle`` (strided copies on CPU, the same
    values bit for bit): x (B, C·r², H, W) → (B, C, r·H, r·W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.pixel_shuffle(x, self.upscale_factor)


def check_scale(scale: int, supported: tuple[int, ...], what: str) -> None:
    if scale not in supported:
        raise ValueError(f"{what} supports scales {', '.join(map(str, supported))}; got scale={scale!r}")


def pixel_shuffle_layers(channels: int, scale: int, bias: bool) -> list[nn.Module]:
    """Sub-pixel upsampling as in ESPCN: conv C→C·s² + PixelShuffle(s) for s = 2 or 3, and
    log2(s) times conv C→4C + PixelShuffle(2) for s = 4, 8. All convs 3x3, padding 1."""
    if scale in (2, 3):
        steps = [scale]
    elif scale in (4, 8):
        steps = [2] * int(math.log2(scale))
    else:
        raise ValueError(f"the pixel-shuffle upsampler supports scales 2, 3, 4, 8; got {scale}")
    layers: list[nn.Module] = []
    for s in steps:
        layers += [Conv3x3(channels, channels * s * s, bias=bias), PixelShuffle(s)]
    return layers
