"""CIRN: cross-layer information refining network (Zhang, Lu and Sun; poster). No official code exists;
built from the poster, with what it leaves open taken from the designs it cites (DBPN, CCNet).

    L_0 = FEB(I)                        3x3 conv 3→F, 1x1 conv F→C (PReLU each), in LR        (DBPN)
    H_0 = Up(L_0)                       the first up-projection: HR features
    for g = 1..n  (attention-based back-projection groups, ABPG):
        L_g = IDB_g(H_0, …, H_{g−1})    intensive down-sampling: 1x1 conv over the concatenated HR
                                        features (g > 1), then a DBPN down-projection unit   (D-DBPN)
        Y_g = IUB_g(L_0, …, L_g)        intensive up-sampling: 1x1 conv over the concatenated LR
                                        features, then a DBPN up-projection unit             (D-DBPN)
        H_g = ISAB_g(X = H_{g−1}, Y = Y_g)
    I_SR = conv3x3([H_0; …; H_n])       (n+1)·C → 3                                           (D-DBPN)

ISAB (poster: ``X' = Σ softmax(K_m Q_m) V_m + X_m``, two stages sharing parameters): with V = v(Y)
(1x1 conv of the current layer), each of the two stages computes ``X ← X + γ · CCA(q(G(X)), k(G(X)), V)``
with the same q, k, v, γ, where CCA is criss-cross attention (the ``criss_cross_attention`` op). After
the second stage every position has gathered from every other (CCNet's recurrence). The poster's
"dilated convolution & multi-order gradients": G(X) = [X; ∂_x X; ∂_y X; ΔX] (fixed central differences
and the 5-point Laplacian, zero padding), and q, k are 3x3 convs with dilation 2 from 4C to C/8 channels.
γ starts at 0 (CCNet).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from din_fast import ops
from din_fast.models.blocks import Conv3x3, SRModel, check_image_batch, check_scale

SCALES = (2, 3, 4, 8)
#: DBPN's (kernel, stride, padding) of the projection convs per scale; 3 is the analogous (7, 3, 2).
PROJECTION = {2: (6, 2, 2), 3: (7, 3, 2), 4: (8, 4, 2), 8: (12, 8, 2)}
#: The multi-order gradient filters of the ISAB: ∂_x, ∂_y (central differences) and the Laplacian.
GRADIENT_KERNELS = (((0.0, 0.0, 0.0), (-0.5, 0.0, 0.5), (0.0, 0.0, 0.0)),
                    ((0.0, -0.5, 0.0), (0.0, 0.0, 0.0), (0.0, 0.5, 0.0)),
                    ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)))


class UpProjection(nn.Module):
    """DBPN up-projection (LR → HR): ``h0 = up(l)``, ``e = down(h0) − l``, ``out = h0 + up2(e)`` (PReLU each)."""

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        k, s, p = PROJECTION[scale]
        self.up1 = nn.Sequential(nn.ConvTranspose2d(channels, channels, k, s, p), nn.PReLU())
        self.down = nn.Sequential(nn.Conv2d(channels, channels, k, s, p), nn.PReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(channels, channels, k, s, p), nn.PReLU())

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h0 = self.up1(lr)
        return h0 + self.up2(self.down(h0) - lr)


class DownProjection(nn.Module):
    """DBPN down-projection (HR → LR): ``l0 = down(h)``, ``e = up(l0) − h``, ``out = l0 + down2(e)``."""

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        k, s, p = PROJECTION[scale]
        self.down1 = nn.Sequential(nn.Conv2d(channels, channels, k, s, p), nn.PReLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(channels, channels, k, s, p), nn.PReLU())
        self.down2 = nn.Sequential(nn.Conv2d(channels, channels, k, s, p), nn.PReLU())

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        l0 = self.down1(hr)
        return l0 + self.down2(self.up(l0) - hr)


class Intensive(nn.Module):
    """A projection unit fed with all earlier features of the other resolution (D-DBPN's dense input):
    1x1 conv (PReLU) over their concatenation when there is more than one."""

    def __init__(self, channels: int, inputs: int, unit: nn.Module) -> None:
        super().__init__()
        self.compress = nn.Sequential(nn.Conv2d(inputs * channels, channels, 1), nn.PReLU()) if inputs > 1 else None
        self.unit = unit

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[0] if self.compress is None else self.compress(torch.cat(features, dim=1))
        return self.unit(x)


class ISAB(nn.Module):
    """Interlaced spatial attention: two criss-cross stages with shared parameters refine the previous
    layer's X with the current layer's Y (module docstring)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.query = nn.Conv2d(4 * channels, inner, 3, padding=2, dilation=2)
        self.key = nn.Conv2d(4 * channels, inner, 3, padding=2, dilation=2)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.register_buffer("gradient_kernels", torch.tensor(GRADIENT_KERNELS).unsqueeze(1), persistent=False)

    def multi_order(self, x: torch.Tensor) -> torch.Tensor:
        """[X; ∂_x X; ∂_y X; ΔX] per channel group (B, 4C, H, W)."""
        c = x.shape[1]
        kernels = self.gradient_kernels.to(x.dtype).repeat(c, 1, 1, 1)
        grads = F.conv2d(x, kernels, padding=1, groups=c)
        return torch.cat([x, grads], dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v = self.value(y)
        for _ in range(2):  # the two stages share every parameter
            g = self.multi_order(x)
            x = x + self.gamma * ops.criss_cross_attention(self.query(g), self.key(g), v)
        return x


class ABPG(nn.Module):
    """Attention-based back-projection group: IDB, IUB, ISAB."""

    def __init__(self, channels: int, scale: int, index: int, reduction: int) -> None:
        super().__init__()
        self.idb = Intensive(channels, index, DownProjection(channels, scale))
        self.iub = Intensive(channels, index + 1, UpProjection(channels, scale))
        self.isab = ISAB(channels, reduction)


class CIRN(SRModel):
    """Cross-layer information refining network.

    Args:
        scale: 2, 3, 4 or 8.
        channels: C, the projection features (64, DBPN's nr).
        features: F, the first feature-extraction conv (256, DBPN's n0).
        groups: n, attention-based back-projection groups (6: with the first up-projection, the seven
            up- and six down-projections of D-DBPN).
        reduction: C / channels of the ISAB's query and key (8, CCNet).
    """

    def __init__(self, scale: int = 4, channels: int = 64, features: int = 256, groups: int = 6,
                 reduction: int = 8) -> None:
        super().__init__()
        check_scale(scale, SCALES, "CIRN")
        for name, value in (("channels", channels), ("features", features), ("groups", groups),
                            ("reduction", reduction)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.model_name = "cirn"
        self.scale = scale
        self.config = dict(channels=channels, features=features, groups=groups, reduction=reduction)
        self.feb = nn.Sequential(Conv3x3(3, features), nn.PReLU(),
                                 nn.Conv2d(features, channels, 1), nn.PReLU())
        self.first_up = UpProjection(channels, scale)
        self.groups = nn.ModuleList(ABPG(channels, scale, g + 1, reduction) for g in range(groups))
        self.reconstruction = Conv3x3((groups + 1) * channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        lr = [self.feb(x)]
        hr = [self.first_up(lr[0])]
        for group in self.groups:
            lr.append(group.idb(hr))
            hr.append(group.isab(hr[-1], group.iub(lr)))
        return self.reconstruction(torch.cat(hr, dim=1))
