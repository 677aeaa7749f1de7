"""DIN: deep interleaved network with asymmetric co-attention (IJCAI 2020 and the journal version).

Faithful to the official code (lifengshiwo/DIN), not to the papers where they differ; see the
README's Fidelity section. Structure for the defaults (F=64, G=32, 4 branches × 5 WRDBs × 3 RDBs):

    F0      = head(I)                                    3x3 conv, no activation
    B[1][d] = WRDB(F0 if d = 1 else B[1][d−1])
    B[m][d] = WRDB(AsyCA(B[m−1][d], B[m−1][1] if d = 1 else B[m][d−1]))        m ≥ 2
    journal: SR = up(gff1(lrelu(cat B[·][D])) + gff2(lrelu(cat[B[M][1..D−1], F0]))) + bilinear_s(I)
    ijcai:   SR = up(F0 + gff1(lrelu(cat B[·][D])))

The first AsyCA of each branch fuses a block with itself, as in the official code (an identity up
to rounding). A WRDB is ``s0 = lrelu(conv0(x))``, ``s_k = RDB_k(s_{k−1}) + Σ_{j<k} dw_jk(s_j)`` and
``x + 0.1·s_n``, where ``RDB(t) = t + 0.1·conv6(...)`` and dw_jk are 1x1 depthwise convs; the
residuals and depthwise terms are folded into one ``dwc_sum`` per state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from din_fast import ops
from din_fast.models.blocks import Conv3x3, SRModel, check_image_batch, check_scale, pixel_shuffle_layers
from din_fast.ops.reference import DENSE_SLOPE

VARIANTS = {"journal": (2, 3, 4, 8), "ijcai": (2, 3, 4)}
#: The LeakyReLU slope used everywhere in DIN.
SLOPE = DENSE_SLOPE
#: Residual scaling of the RDB and the WRDB (applied to the branch, as in the code).
RES_SCALE = 0.1


class RDB(nn.Module):
    """Residual dense block body: five 3x3 convs growing by G with LeakyReLU, then a 3x3 conv back
    to C. Returns conv6's output y6; the residual ``x + 0.1·y6`` is folded by the WRDB.

    The body is the ``dense_block`` op (the official ``torch.cat`` graph under the reference backend;
    one channel buffer on the fused implementations).
    """

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(Conv3x3(channels + i * growth, growth) for i in range(5))
        self.convs.append(Conv3x3(channels + 5 * growth, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.dense_block(x, [conv.weight for conv in self.convs], [conv.bias for conv in self.convs])


class WRDB(nn.Module):
    """Weighted residual dense block: conv0, n RDBs and n(n+1)/2 depthwise 1x1 connections.

    ``dw_weight[i]``, ``dw_bias[i]`` hold the connection from state j to state k for the i-th pair in
    the order k = 1..n, j = 0..k−1 (the official ``conv{j+1}_{k−j}``).
    """

    def __init__(self, channels: int, growth: int, rdbs: int) -> None:
        super().__init__()
        self.conv0 = Conv3x3(channels, channels)
        self.rdbs = nn.ModuleList(RDB(channels, growth) for _ in range(rdbs))
        pairs = rdbs * (rdbs + 1) // 2
        # nn.Conv2d(C, C, 1, groups=C) initialisation: fan_in = 1, so weight and bias ~ U(−1, 1).
        self.dw_weight = nn.Parameter(torch.empty(pairs, channels).uniform_(-1, 1))
        self.dw_bias = nn.Parameter(torch.empty(pairs, channels).uniform_(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.rdbs)
        states = [F.leaky_relu(self.conv0(x), SLOPE)]
        for k, rdb in enumerate(self.rdbs, start=1):
            y6 = rdb(states[-1])
            w = self.dw_weight[k * (k - 1) // 2: k * (k + 1) // 2]  # connections j → k, j = 0..k−1
            bias = self.dw_bias[k * (k - 1) // 2: k * (k + 1) // 2].sum(0)
            # The RDB's own input s_{k−1} enters with weight 1 + w_{k−1,k}, its conv6 with 0.1.
            own = (w[-1] + 1).unsqueeze(0)
            terms, weight = states + [y6], torch.cat([w[:-1], own, torch.full_like(own, RES_SCALE)])
            if k == n:  # fold the WRDB residual x + 0.1·s_n
                terms, weight, bias = [x] + terms, torch.cat([torch.ones_like(own), RES_SCALE * weight]), RES_SCALE * bias
            states.append(ops.dwc_sum(terms, weight, bias))
        return states[-1]


class AsyCA(nn.Module):
    """Asymmetric co-attention node; holds the official 1x1 convs and calls the fused ``asyca`` op."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.conv_init = nn.Conv2d(2 * channels, channels, 1)
        self.conv_dc = nn.Conv2d(channels, channels // reduction, 1)
        self.conv_ic = nn.Conv2d(channels // reduction, 2 * channels, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return ops.asyca(x1, x2, self.conv_init.weight, self.conv_init.bias, self.conv_dc.weight,
                         self.conv_dc.bias, self.conv_ic.weight, self.conv_ic.bias)


def _check_body_args(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if values["num_features"] % values["reduction"]:
        raise ValueError(f"num_features ({values['num_features']}) must be divisible by reduction "
                         f"({values['reduction']})")


class _InterleavedNet(SRModel):
    """The interleaved multi-branch body shared by DIN and the restoration models (journal eqs. 13-16):
    M branches of D WRDBs, AsyCA at the interleaved nodes, and global feature fusion (one 1x1 conv, or
    two with ``two_gff``). Subclasses add ``head`` and the reconstruction."""

    def _build_body(self, f: int, growth_rate: int, branches: int, blocks: int, rdbs: int, reduction: int,
                    two_gff: bool) -> None:
        self.branches = nn.ModuleList(
            nn.ModuleList(WRDB(f, growth_rate, rdbs) for _ in range(blocks)) for _ in range(branches))
        self.fusions = nn.ModuleList(
            nn.ModuleList(AsyCA(f, reduction) for _ in range(blocks)) for _ in range(branches - 1))
        self.gff1 = nn.Conv2d(branches * f, f, 1)
        self.gff2 = nn.Conv2d(blocks * f, f, 1) if two_gff else None

    def _interleave(self, f0: torch.Tensor) -> torch.Tensor:
        """Fused global feature of the body for shallow features ``f0`` (without the ``f0`` skip)."""
        branch_ends = []
        prev: list[torch.Tensor] = []
        for m, wrdbs in enumerate(self.branches):
            cur: list[torch.Tensor] = []
            for d, wrdb in enumerate(wrdbs):
                if m == 0:
                    inp = f0 if d == 0 else cur[-1]
                else:  # the official code fuses B[m−1][1] with itself at d = 0
                    inp = self.fusions[m - 1][d](prev[d], prev[0] if d == 0 else cur[-1])
                cur.append(wrdb(inp))
            branch_ends.append(cur[-1])
            prev = cur
        g = self.gff1(F.leaky_relu(torch.cat(branch_ends, dim=1), SLOPE))
        if self.gff2 is not None:
            g = g + self.gff2(F.leaky_relu(torch.cat(prev[:-1] + [f0], dim=1), SLOPE))
        return g


class DIN(_InterleavedNet):
    """Deep interleaved network.

    Args:
        scale: upscaling factor (journal: 2, 3, 4, 8; ijcai: 2, 3, 4).
        num_features: F, channels of every WRDB (64).
        growth_rate: G, growth of the RDB convs (32).
        branches: M (4). blocks: D, WRDBs per branch (5). rdbs: B, RDBs per WRDB (3).
        reduction: AsyCA bottleneck ratio r (journal code 4, conference code 8).
        variant: ``"journal"`` (the official "Enhanced" code) or ``"ijcai"`` (conference code).
    """

    def __init__(self, scale: int = 4, num_features: int = 64, growth_rate: int = 32, branches: int = 4,
                 blocks: int = 5, rdbs: int = 3, reduction: int = 4, variant: str = "journal") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        check_scale(scale, VARIANTS[variant], f"DIN ({variant})")
        _check_body_args(num_features=num_features, growth_rate=growth_rate, branches=branches, blocks=blocks,
                         rdbs=rdbs, reduction=reduction)
        self.model_name = "din" if variant == "journal" else "din-ijcai"
        self.scale = scale
        self.config = dict(num_features=num_features, growth_rate=growth_rate, branches=branches, blocks=blocks,
                           rdbs=rdbs, reduction=reduction, variant=variant)
        f = num_features
        self.head = Conv3x3(3, f)
        self._build_body(f, growth_rate, branches, blocks, rdbs, reduction, two_gff=variant == "journal")
        self.upsampler = nn.Sequential(*pixel_shuffle_layers(f, scale, bias=True), Conv3x3(f, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        f0 = self.head(x)
        g = self._interleave(f0)
        if self.gff2 is None:
            return self.upsampler(f0 + g)
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.upsampler(g) + base

    def official_key_map(self) -> list[tuple[str, list[str], tuple[int, ...]]]:
        """Map to the official ``din_arch.DIN`` keys (``WRDB{m}_{d}``, ``AsyCA{m}_{d}``, ``up_recon.UPNet``)."""
        entries: list[tuple[str, list[str], tuple[int, ...]]] = []
        params = dict(self.named_parameters())

        def same(ours: str, theirs: str) -> None:
            entries.append((ours, [theirs], tuple(params[ours].shape)))

        for suffix in ("weight", "bias"):
            same(f"head.{suffix}", f"feat_conv.{suffix}")
            same(f"gff1.{suffix}", f"{'conv_out1' if self.gff2 is not None else 'conv_out'}.{suffix}")
            if self.gff2 is not None:
                same(f"gff2.{suffix}", f"conv_out2.{suffix}")
            for i, layer in enumerate(self.upsampler):
                if isinstance(layer, nn.Conv2d):
                    same(f"upsampler.{i}.{suffix}", f"up_recon.UPNet.{i}.{suffix}")
        f = self.config["num_features"]
        n = self.config["rdbs"]
        pairs = [(j, k) for k in range(1, n + 1) for j in range(k)]
        for m, wrdbs in enumerate(self.branches):
            for d, wrdb in enumerate(wrdbs):
                ours, theirs = f"branches.{m}.{d}", f"WRDB{m + 1}_{d + 1}"
                for suffix in ("weight", "bias"):
                    same(f"{ours}.conv0.{suffix}", f"{theirs}.conv0.{suffix}")
                    for i, rdb in enumerate(wrdb.rdbs):
                        for j in range(len(rdb.convs)):
                            same(f"{ours}.rdbs.{i}.convs.{j}.{suffix}", f"{theirs}.RDB{i + 1}.conv{j + 1}.{suffix}")
                    shape = (f, 1, 1, 1) if suffix == "weight" else (f,)
                    entries.append((f"{ours}.dw_{suffix}",
                                    [f"{theirs}.conv{j + 1}_{k - j}.{suffix}" for j, k in pairs], shape))
                if m > 0:
                    for conv in ("conv_init", "conv_dc", "conv_ic"):
                        for suffix in ("weight", "bias"):
                            same(f"fusions.{m - 1}.{d}.{conv}.{suffix}", f"AsyCA{m + 1}_{d + 1}.{conv}.{suffix}")
        return entries


#: DIN's restoration tasks (journal §3.5): the head and reconstruction of each.
RESTORATION_TASKS = ("deblur", "dehaze", "derain")


class DINRestoration(_InterleavedNet):
    """DIN for same-size image restoration (journal §3.4-3.5): motion deblurring, dehazing, deraining.

    The interleaved body and its two GFF convs are DIN's (journal variant); only the ends differ::

        deblur, dehaze:  F0 = conv8x8/4(conv3x3(I))     (features at 1/4 resolution)
                         out = conv3x3(PS2(conv(PS2(conv(G))))) + I      (4x sub-pixel reconstruction)
        derain:          F0 = conv3x3(I),   out = conv3x3(G) + I

    with ``G = IMBF(F0)`` and the global residual ``+ I`` of journal eq. 19. The strided head needs sides
    divisible by 4: other sizes are padded by edge replication to the next multiple of 4 and the
    output is cropped back, so any (B, 3, H, W) in gives (B, 3, H, W) out. There are no official
    restoration checkpoints (the authors' repository has SR code only).

    Args:
        task: ``"deblur"``, ``"dehaze"`` or ``"derain"``.
        scale: must be 1 (restoration keeps the size).
        num_features, growth_rate, branches, blocks, rdbs, reduction: as for ``DIN``.
    """

    def __init__(self, task: str = "derain", scale: int = 1, num_features: int = 64, growth_rate: int = 32,
                 branches: int = 4, blocks: int = 5, rdbs: int = 3, reduction: int = 4) -> None:
        super().__init__()
        if task not in RESTORATION_TASKS:
            raise ValueError(f"task must be one of {', '.join(RESTORATION_TASKS)}; got {task!r}")
        check_scale(scale, (1,), f"DIN {task}")
        _check_body_args(num_features=num_features, growth_rate=growth_rate, branches=branches, blocks=blocks,
                         rdbs=rdbs, reduction=reduction)
        self.model_name = f"din-{task}"
        self.scale = 1
        self.config = dict(task=task, num_features=num_features, growth_rate=growth_rate, branches=branches,
                           blocks=blocks, rdbs=rdbs, reduction=reduction)
        f = num_features
        self.strided = task in ("deblur", "dehaze")
        if self.strided:  # padding 2: an 8x8 window at stride 4 maps H to H / 4 exactly
            self.head = nn.Sequential(Conv3x3(3, f), nn.Conv2d(f, f, 8, stride=4, padding=2))
        else:
            self.head = Conv3x3(3, f)
        self._build_body(f, growth_rate, branches, blocks, rdbs, reduction, two_gff=True)
        tail: list[nn.Module] = pixel_shuffle_layers(f, 4, bias=True) if self.strided else []
        self.tail = nn.Sequential(*tail, Conv3x3(f, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        if not self.strided:
            return self.tail(self._interleave(self.head(x))) + x
        # Pad and crop whatever the size (a zero pad is a copy): no branch on the size, and the crop as a
        # negative pad rather than a slice, so torch.export keeps height and width symbolic (the slice's
        # contiguity check would tie the padded size to the input's).
        h, w = x.shape[-2:]
        hp, wp = (h + 3) // 4 * 4, (w + 3) // 4 * 4
        inp = F.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
        out = self.tail(self._interleave(self.head(inp))) + inp
        return F.pad(out, (0, w - wp, 0, h - hp))
