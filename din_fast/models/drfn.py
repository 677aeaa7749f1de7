"""DRFN: deep residual fusion network (Wang, Lan and Gao 2020). No official code exists; built from the text.

    F_0 = head(I)                                   3x3 conv 3→C                         (eq. 1)
    F_g = RAG_g(F_{g−1}),  g = 1..G                 residual attention groups
    RAG(u):  t = RB_M(…RB_1(u));  F = SA(CA(t) t) · CA(t) t + u                          (eq. 5)
    F_FF = Σ_{g=1}^{G−1} SA_g(fuse_g([F_g; F_{g+1}]))   adjacent RAG outputs: concat → 1x1 conv → SAM (eq. 6)
    F_DF = F_G + F_FF + F_0                         nested long residual                   (eq. 2)
    I_SR = tail(ESPCN(F_DF))                        pixel shuffle, then 3x3 conv C→3       (eq. 3)

CA and SA are CBAM's channel attention (avg- and max-pooled descriptors through one 1x1-conv MLP with
reduction 16) and spatial attention (channel mean and max → 7x7 conv → sigmoid); inside a RAG they and
the group residual are one fused op (``channel_spatial_attention``). A residual block (RB) is a
pre-activation unit ``u + conv(relu(u))`` with ``block_convs`` such (relu, conv) pairs; the default of one
conv per block is the reading in which the text's G = 16, M = 8, 64 channels and 5.2M parameters all hold
(README, "CIRN and DRFN").
"""

from __future__ import annotations

import torch
from torch import nn

from din_fast import ops
from din_fast.models.blocks import Conv3x3, SRModel, check_image_batch, check_scale, pixel_shuffle_layers
from din_fast.ops.reference import SAM_PADDING

SCALES = (2, 3, 4)


class ResidualBlock(nn.Module):
    """Pre-activation residual unit: ``u + conv(relu(…conv(relu(u))))`` with ``convs`` 3x3 convs C→C."""

    def __init__(self, channels: int, convs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(convs):
            layers += [nn.ReLU(), Conv3x3(channels, channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.body(u)


class ChannelSpatialAttention(nn.Module):
    """CAM (1x1 convs C→C/r→C on the avg- and max-pooled descriptors) then SAM (7x7 conv 2→1), and the
    residual: ``forward(x, skip) = SA(CA(x) x) · CA(x) x + skip`` as one fused op."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.ca_down = nn.Conv2d(channels, max(channels // reduction, 1), 1)
        self.ca_up = nn.Conv2d(max(channels // reduction, 1), channels, 1)
        self.sa = nn.Conv2d(2, 1, 7, padding=SAM_PADDING)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return ops.channel_spatial_attention(x, skip, self.ca_down.weight, self.ca_down.bias, self.ca_up.weight,
                                             self.ca_up.bias, self.sa.weight, self.sa.bias)


class SpatialAttention(nn.Module):
    """CBAM's spatial attention alone (the feature-fusion refinement): ``x ⊙ sigmoid(conv7x7([mean_C x; max_C x]))``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=SAM_PADDING)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class RAG(nn.Module):
    """Residual attention group: M residual blocks, then CAM, SAM and the group residual (eq. 5)."""

    def __init__(self, channels: int, blocks: int, block_convs: int, reduction: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualBlock(channels, block_convs) for _ in range(blocks)))
        self.attention = ChannelSpatialAttention(channels, reduction)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.attention(self.blocks(u), u)


class FeatureFusion(nn.Module):
    """Adjacent RAG outputs: concatenate, 1x1 conv 2C→C, spatial attention."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 1)
        self.sa = SpatialAttention()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.sa(self.conv(torch.cat([a, b], dim=1)))


class DRFN(SRModel):
    """Deep residual fusion network.

    Args:
        scale: 2, 3 or 4.
        channels: C (64).
        groups: G, residual attention groups (16).
        blocks: M, residual blocks per group (8).
        block_convs: 3x3 convs per residual block (1: the reading that gives the paper's 5.2M parameters;
            2: EDSR-style blocks, 9.9M at ×4).
        reduction: of the channel attention (16: 64 → 4 filters, as the text says).
    """

    def __init__(self, scale: int = 4, channels: int = 64, groups: int = 16, blocks: int = 8, block_convs: int = 1,
                 reduction: int = 16) -> None:
        super().__init__()
        check_scale(scale, SCALES, "DRFN")
        for name, value in (("channels", channels), ("groups", groups), ("blocks", blocks),
                            ("block_convs", block_convs), ("reduction", reduction)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.model_name = "drfn"
        self.scale = scale
        self.config = dict(channels=channels, groups=groups, blocks=blocks, block_convs=block_convs,
                           reduction=reduction)
        self.head = Conv3x3(3, channels)
        self.groups = nn.ModuleList(RAG(channels, blocks, block_convs, reduction) for _ in range(groups))
        self.fusion = nn.ModuleList(FeatureFusion(channels) for _ in range(groups - 1))
        self.upscale = nn.Sequential(*pixel_shuffle_layers(channels, scale, bias=True))
        self.tail = Conv3x3(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        f0 = self.head(x)
        feats = []
        t = f0
        for group in self.groups:
            t = group(t)
            feats.append(t)
        deep = t + f0
        for g, fuse in enumerate(self.fusion):
            deep = deep + fuse(feats[g], feats[g + 1])
        return self.tail(self.upscale(deep))
