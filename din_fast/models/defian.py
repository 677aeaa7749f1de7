"""DeFiAN: detail-fidelity attention network with the multi-scale Hessian filter (YuanfeiHuang/DeFiAN).

Faithful to the official code, not to the paper where they differ (README, Fidelity):

    x̃  = (I − mean) / std                                ImageNet normalisation (torchvision Normalize)
    F0 = input(x̃)                                        3x3 conv 3→C
    T  = tail(body(F0)) + F0                              N DeFiAMs; (N = 1: T = body(F0), no tail)
    out = output(upscale(T))                              bias-free pixel-shuffle convs, then 3x3 C→3
    Î  = (out + (2.118, 2.036, 1.804)) / (4.367, 4.464, 4.444)    the official rounded inverse

A DeFiAM with input x: ``r = RCAB_M(…RCAB_1(x))``; ``h = mshf(r)`` (B, 3, H, W); ``v = gate(DiEnDec(h))``
(B, 1, H, W); ``y = x + r ⊙ sigmoid(DAC(v, x))`` — the DAC references the module *input* x.
The Hessian convs have biases and learned weights (the analytic kernels are only their initialisation).
"""

from __future__ import annotations

import torch
from torch import nn

from din_fast import ops
from din_fast.models.blocks import Conv3x3, SRModel, check_image_batch, check_scale, pixel_shuffle_layers
from din_fast.ops.reference import ENCDEC_DILATIONS

SCALES = (2, 3, 4)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The official de-normalisation: the ImageNet inverse rounded to 3 decimals (reproduced on purpose).
OUTPUT_SHIFT = (2.118, 2.036, 1.804)
OUTPUT_DIVISOR = (4.367, 4.464, 4.444)
KINDS = ("xx", "yy", "xy")
HESSIAN_SIZES = (3, 5, 7)  # the official hessian3/5/7 modules: dilation 1, 2, 3


def _rgb(values: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    """Per-channel constants as a (1, 3, 1, 1) tensor in like's dtype (exact in float64, unlike a
    float32 buffer converted later)."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


class RCAB(nn.Module):
    """Residual channel-attention block: ``u + t ⊙ ca(mean_HW(t))``, t = conv(relu(conv(u))) (no biases).

    ``calayer`` holds the official channel attention's parameters (1x1 convs with biases C→R→C, ReLU,
    sigmoid; same keys); its forward with the residual is one fused op (``channel_attention_residual``),
    which on the reference backend is the official graph.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.block = nn.Sequential(Conv3x3(channels, channels, bias=False), nn.ReLU(inplace=True),
                                   Conv3x3(channels, channels, bias=False))
        self.calayer = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        t = self.block(u)
        down, up = self.calayer[0], self.calayer[2]
        return ops.channel_attention_residual(u, t, down.weight, down.bias, up.weight, up.bias)


class MSHF(nn.Module):
    """The nine depthwise Hessian convs (3 scales × xx, yy, xy), stacked as the ``mshf`` op takes them.

    weight (3, 3, C, 3, 3), bias (3, 3, C). Initialised as the official code: analytic second-derivative
    kernels, biases from PyTorch's default U(−1/3, 1/3) (fan_in = 9).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        w = torch.zeros(3, 3, channels, 3, 3)
        second = torch.tensor([1.0, -2.0, 1.0])
        w[:, 0, :, 1, :] = second
        w[:, 1, :, :, 1] = second
        w[:, 2] = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]])
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.empty(3, 3, channels).uniform_(-1 / 3, 1 / 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.mshf(x, self.weight, self.bias)


class DiEnDec(nn.Module):
    """Dilated encoder-decoder 3→6→12→24→12→6→3 with ReLUs, and the linear 1x1 ``gate`` 3→1.

    The modules hold the parameters under the official names; the forward is the fused op.
    """

    def __init__(self) -> None:
        super().__init__()
        enc, dec = [], []
        for i, d in enumerate(ENCDEC_DILATIONS):
            enc += [nn.Conv2d(3 * 2 ** i, 6 * 2 ** i, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
        for i, d in enumerate(reversed(ENCDEC_DILATIONS)):
            dec += [nn.ConvTranspose2d(24 // 2 ** i, 12 // 2 ** i, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.gate = nn.Conv2d(3, 1, 1)

    def layers(self) -> list[nn.Module]:
        return [*self.encoder[::2], *self.decoder[::2], self.gate]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        layers = self.layers()
        return ops.dilated_encdec(h, [m.weight for m in layers], [m.bias for m in layers])


class DAC(nn.Module):
    """Distribution alignment: bias-free 1x1 FCs C→C/16→C for the mean and the std (official ``dac.0``)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()

        def fc() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(channels, channels // reduction, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels // reduction, channels, 1, bias=False))

        self.mean = fc()
        self.std = fc()


class DeFiAM(nn.Module):
    """Detail-fidelity attention module: RCAB chain, MSHF, DiEnDec and the DAC gate with residual."""

    def __init__(self, channels: int, rcabs: int, reduction: int) -> None:
        super().__init__()
        self.body_block = nn.Sequential(*(RCAB(channels, reduction) for _ in range(rcabs)))
        self.mshf = MSHF(channels)
        self.coder = DiEnDec()
        self.dac = DAC(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.body_block(x)
        v = self.coder(self.mshf(r))
        return ops.dac_gate(x, r, v, self.dac.mean[0].weight, self.dac.mean[2].weight, self.dac.std[0].weight,
                            self.dac.std[2].weight)


class DeFiAN(SRModel):
    """Detail-fidelity attention network.

    Args:
        scale: 2, 3 or 4.
        channels: C (DeFiAN-S 32, DeFiAN-L 64).
        rcabs: M, RCABs per module (S 10, L 20).
        modules: N, DeFiAMs (S 5, L 10).
        reduction: of the channel attention and the DAC FCs (16).
    """

    def __init__(self, scale: int = 4, channels: int = 32, rcabs: int = 10, modules: int = 5,
                 reduction: int = 16) -> None:
        super().__init__()
        check_scale(scale, SCALES, "DeFiAN")
        for name, value in (("channels", channels), ("rcabs", rcabs), ("modules", modules),
                            ("reduction", reduction)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if channels < reduction:
            raise ValueError(f"channels ({channels}) must be at least reduction ({reduction})")
        self.model_name = "defian-s"
        self.scale = scale
        self.config = dict(channels=channels, rcabs=rcabs, modules=modules, reduction=reduction)
        self.input = Conv3x3(3, channels)
        self.body = nn.Sequential(*(DeFiAM(channels, rcabs, reduction) for _ in range(modules)))
        self.tail = Conv3x3(channels, channels) if modules > 1 else None
        self.upscale = nn.Sequential(*pixel_shuffle_layers(channels, scale, bias=False))
        self.output = Conv3x3(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        f0 = self.input((x - _rgb(IMAGENET_MEAN, x)) / _rgb(IMAGENET_STD, x))
        t = self.body(f0)
        if self.tail is not None:
            t = self.tail(t) + f0
        out = self.output(self.upscale(t))
        return (out + _rgb(OUTPUT_SHIFT, out)) / _rgb(OUTPUT_DIVISOR, out)

    def official_key_map(self) -> list[tuple[str, list[str], tuple[int, ...]]]:
        """Map to the official ``model.Generator`` keys (``.0.`` nesting of coder, dac, hessian, upscale)."""
        c = self.config["channels"]
        entries = []
        for ours, p in self.named_parameters():
            parts = ours.split(".")
            if parts[0] == "body" and parts[2] == "mshf":
                n, suffix = parts[1], parts[3]
                keys = [f"body.{n}.hessian{size}.0.grad_{kind}.{suffix}" for size in HESSIAN_SIZES for kind in KINDS]
                entries.append((ours, keys, (c, 1, 3, 3) if suffix == "weight" else (c,)))
                continue
            if parts[0] == "body" and parts[2] in ("coder", "dac"):
                theirs = ".".join(parts[:3] + ["0"] + parts[3:])
            elif parts[0] == "upscale":
                theirs = ".".join(["upscale", "0"] + parts[1:])
            else:
                theirs = ours
            entries.append((ours, [theirs], tuple(p.shape)))
        return entries
