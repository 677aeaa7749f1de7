"""Pieces shared by the models: the base class, input checks and the pixel-shuffle upsampler."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


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
        layers += [nn.Conv2d(channels, channels * s * s, 3, padding=1, bias=bias), nn.PixelShuffle(s)]
    return layers
