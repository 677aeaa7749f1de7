"""Pieces shared by the models: the base class, input checks and the pixel-shuffle upsampler."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from din_fast import backends, ops


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
    unchanged). When the backend resolves ``conv3x3`` to the reference (the reference backend, GPUs,
    half precision on CPU) the forward is exactly nn.Conv2d's; otherwise it is the fused op
    (Winograd F(4x4, 3x3) on CPU, see din_fast/ops/conv3x3.py). x (B, Cin, H, W) → (B, Cout, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)
        # The op takes a bias: a bias-free conv passes zeros (a buffer: follows .to(), not saved).
        self.register_buffer("zero_bias", None if bias else torch.zeros(out_channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if backends.resolve("conv3x3", x.device, x.dtype) == "reference":
            return super().forward(x)
        return ops.conv3x3(x, self.weight, self.bias if self.bias is not None else self.zero_bias)


class PixelShuffle(nn.PixelShuffle):
    """``nn.PixelShuffle(r)``: ``out[b, c, r·h + i, r·w + j] = x[b, c·r² + i·r + j, h, w]``,
    x (B, C·r², H, W) → (B, C, r·H, r·W).

    Off the reference backend on CPU it runs as r² strided copies into the output, 2.3–2.6× faster than
    torch's pixel_shuffle kernel (one core, 128 channels at 96² and 192²); the same values bit for bit, and
    gradients through autograd of the copies. The reference backend and other devices run nn.PixelShuffle.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.upscale_factor
        if (x.device.type != "cpu" or backends.get_backend() == "reference" or x.dim() != 4
                or x.shape[1] % (r * r)):  # (bad shapes get nn.PixelShuffle's errors)
            return super().forward(x)
        b, c, h, w = x.shape
        blocks = x.unflatten(1, (c // (r * r), r, r))
        out = x.new_empty(b, c // (r * r), h, r, w, r)
        for i in range(r):
            for j in range(r):
                out[:, :, :, i, :, j] = blocks[:, :, i, j]
        return out.view(b, c // (r * r), h * r, w * r)


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
