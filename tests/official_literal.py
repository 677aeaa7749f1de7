"""Literal re-implementations of the authors' DIN and DeFiAN graphs, written from
shared/reference/official-code.md for tests only: official attribute names (so ``state_dict()`` has
the official keys), official addition orders, unfused ops. They are the independent oracle for
``from_official`` and for the fidelity of din_fast's models; ``official_case`` builds the small,
perturbed official-format models that the checkpoint tests (from_official, spandrel) save and load.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _lrelu(t):
    return F.leaky_relu(t, 0.2)


class LitRDB(nn.Module):
    def __init__(self, f, g):
        super().__init__()
        for i in range(5):
            setattr(self, f"conv{i + 1}", nn.Conv2d(f + i * g, g, 3, padding=1))
        self.conv6 = nn.Conv2d(f + 5 * g, f, 3, padding=1)

    def forward(self, x):
        feats = [x]
        for i in range(5):
            feats.append(_lrelu(getattr(self, f"conv{i + 1}")(torch.cat(feats, 1))))
        return 0.1 * self.conv6(torch.cat(feats, 1)) + x


class LitWRDB(nn.Module):
    def __init__(self, f, g):
        super().__init__()
        self.conv0 = nn.Conv2d(f, f, 3, padding=1)
        for i in range(3):
            setattr(self, f"RDB{i + 1}", LitRDB(f, g))
        for name in ("1_1", "1_2", "1_3", "2_1", "2_2", "3_1"):
            setattr(self, f"conv{name}", nn.Conv2d(f, f, 1, groups=f))

    def forward(self, x):
        s0 = _lrelu(self.conv0(x))
        s1 = self.RDB1(s0) + self.conv1_1(s0)
        s2 = (self.conv2_1(s1) + self.conv1_2(s0)) + self.RDB2(s1)
        s3 = ((self.conv1_3(s0) + self.conv2_2(s1)) + self.conv3_1(s2)) + self.RDB3(s2)
        return 0.1 * s3 + x


class LitAsyCA(nn.Module):
    def __init__(self, f, r):
        super().__init__()
        self.conv_init = nn.Conv2d(2 * f, f, 1)
        self.conv_dc = nn.Conv2d(f, f // r, 1)
        self.conv_ic = nn.Conv2d(f // r, 2 * f, 1)

    def forward(self, x1, x2):
        b, f = x1.shape[:2]
        s = F.adaptive_avg_pool2d(self.conv_init(torch.cat([x1, x2], 1)), 1)
        s = self.conv_ic(F.relu(self.conv_dc(s)))
        w = torch.softmax(s.view(b, 2, f, 1), dim=1)
        return x1 * w[:, 0].unsqueeze(-1) + x2 * w[:, 1].unsqueeze(-1)


class LitDIN(nn.Module):
    """Official DIN: 4 branches x 5 WRDBs x 3 RDBs; ``enhanced`` selects the journal code."""

    def __init__(self, f, g, scale, enhanced):
        super().__init__()
        self.enhanced, self.scale = enhanced, scale
        self.feat_conv = nn.Conv2d(3, f, 3, padding=1)
        for m in range(1, 5):
            for d in range(1, 6):
                setattr(self, f"WRDB{m}_{d}", LitWRDB(f, g))
                if m > 1:
                    setattr(self, f"AsyCA{m}_{d}", LitAsyCA(f, 4 if enhanced else 8))
        if enhanced:
            self.conv_out1 = nn.Conv2d(4 * f, f, 1)
            self.conv_out2 = nn.Conv2d(5 * f, f, 1)
        else:
            self.conv_out = nn.Conv2d(4 * f, f, 1)
        layers = []
        for s in ([scale] if scale in (2, 3) else [2] * {4: 2, 8: 3}[scale]):
            layers += [nn.Conv2d(f, f * s * s, 3, padding=1), nn.PixelShuffle(s)]
        self.up_recon = nn.Module()
        self.up_recon.UPNet = nn.Sequential(*layers, nn.Conv2d(f, 3, 3, padding=1))

    def forward(self, x):
        f0 = self.feat_conv(x)
        b = {}
        for d in range(1, 6):
            b[1, d] = getattr(self, f"WRDB1_{d}")(f0 if d == 1 else b[1, d - 1])
        for m in range(2, 5):
            b[m, 1] = getattr(self, f"WRDB{m}_1")(getattr(self, f"AsyCA{m}_1")(b[m - 1, 1], b[m - 1, 1]))
            for d in range(2, 6):
                fused = getattr(self, f"AsyCA{m}_{d}")(b[m - 1, d], b[m, d - 1])
                b[m, d] = getattr(self, f"WRDB{m}_{d}")(fused)
        ends = _lrelu(torch.cat([b[m, 5] for m in range(1, 5)], 1))
        if not self.enhanced:
            return self.up_recon.UPNet(f0 + self.conv_out(ends))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        g = self.conv_out1(ends) + self.conv_out2(_lrelu(torch.cat([b[4, d] for d in range(1, 5)] + [f0], 1)))
        return self.up_recon.UPNet(g) + base


class LitRCAB(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.ReLU(),
                                   nn.Conv2d(c, c, 3, padding=1, bias=False))
        self.calayer = nn.Sequential(nn.Conv2d(c, c // 16, 1), nn.ReLU(), nn.Conv2d(c // 16, c, 1), nn.Sigmoid())

    def forward(self, u):
        t = self.block(u)
        return u + t * self.calayer(F.adaptive_avg_pool2d(t, 1))


class LitMSHF(nn.Module):
    def __init__(self, c, d):
        super().__init__()
        for kind in ("xx", "yy", "xy"):
            setattr(self, f"grad_{kind}", nn.Conv2d(c, c, 3, padding=d, dilation=d, groups=c))

    def forward(self, x):
        gxx, gyy, gxy = self.grad_xx(x), self.grad_yy(x), self.grad_xy(x)
        return ((gxx + gyy) + torch.sqrt((gxx - gyy) ** 2 + 4 * gxy ** 2)) / 2


class LitDiEnDec(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, dilation=1), nn.ReLU(),
                                     nn.Conv2d(6, 12, 3, padding=2, dilation=2), nn.ReLU(),
                                     nn.Conv2d(12, 24, 3, padding=4, dilation=4), nn.ReLU())
        self.decoder = nn.Sequential(nn.ConvTranspose2d(24, 12, 3, padding=4, dilation=4), nn.ReLU(),
                                     nn.ConvTranspose2d(12, 6, 3, padding=2, dilation=2), nn.ReLU(),
                                     nn.ConvTranspose2d(6, 3, 3, padding=1, dilation=1), nn.ReLU())
        self.gate = nn.Conv2d(3, 1, 1)

    def forward(self, h):
        return self.gate(self.decoder(self.encoder(h)))


class LitDAC(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.mean = nn.Sequential(nn.Conv2d(c, c // 16, 1, bias=False), nn.ReLU(), nn.Conv2d(c // 16, c, 1, bias=False))
        self.std = nn.Sequential(nn.Conv2d(c, c // 16, 1, bias=False), nn.ReLU(), nn.Conv2d(c // 16, c, 1, bias=False))

    @staticmethod
    def stats(t):
        b, c = t.shape[:2]
        flat = t.view(b, c, -1)
        return flat.mean(2).view(b, c, 1, 1), (flat.var(2) + 1e-5).sqrt().view(b, c, 1, 1)

    def forward(self, observed, referred):
        mo, so = self.stats(observed)
        mr, sr = self.stats(referred)
        return (observed - mo) / so * self.std(sr) + self.mean(mr)


class LitDeFiAM(nn.Module):
    def __init__(self, c, m):
        super().__init__()
        self.body_block = nn.Sequential(*[LitRCAB(c) for _ in range(m)])
        for size, d in ((3, 1), (5, 2), (7, 3)):
            setattr(self, f"hessian{size}", nn.Sequential(LitMSHF(c, d)))
        self.coder = nn.Sequential(LitDiEnDec())
        self.dac = nn.Sequential(LitDAC(c))

    def forward(self, x):
        r = self.body_block(x)
        h = torch.cat([getattr(self, f"hessian{s}")(r).mean(1, keepdim=True) for s in (3, 5, 7)], 1)
        v = self.coder(h).expand_as(x)
        return r * torch.sigmoid(self.dac[0](v, x)) + x


class LitDeFiAN(nn.Module):
    """Official ``Generator(C, M, N, scale=[s])`` with the validation normalisation around it."""

    def __init__(self, c, m, n, scale):
        super().__init__()
        self.input = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*[LitDeFiAM(c, m) for _ in range(n)])
        self.tail = nn.Conv2d(c, c, 3, padding=1)
        layers = []
        for s in ([scale] if scale in (2, 3) else [2, 2]):
            layers += [nn.Conv2d(c, c * s * s, 3, padding=1, bias=False), nn.PixelShuffle(s)]
        self.upscale = nn.ModuleList([nn.Sequential(*layers)])
        self.output = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, image):
        mean = torch.tensor([0.485, 0.456, 0.406], dtype=image.dtype).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], dtype=image.dtype).view(1, 3, 1, 1)
        f0 = self.input((image - mean) / std)
        out = self.output(self.upscale[0](self.tail(self.body(f0)) + f0))
        shift = torch.tensor([2.118, 2.036, 1.804], dtype=image.dtype).view(1, 3, 1, 1)
        div = torch.tensor([4.367, 4.464, 4.444], dtype=image.dtype).view(1, 3, 1, 1)
        return (out + shift) / div


def perturb(module):
    """Random, non-analytic weights everywhere (the Hessian convs included)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    return module


def official_case(name, scale):
    """(literal official model in float64, eval mode, perturbed; the din_fast overrides of its sizes) for
    registry model ``name`` ("din", "din-ijcai", "defian-s", "defian-l") at ``scale``: DIN with F=8, G=4
    (4 branches x 5 WRDBs x 3 RDBs), DeFiAN with C=16, 2 RCABs, 2 modules."""
    if name.startswith("din"):
        lit, overrides = LitDIN(8, 4, scale, enhanced=(name == "din")), dict(num_features=8, growth_rate=4)
    else:
        lit, overrides = LitDeFiAN(16, 2, 2, scale), dict(channels=16, rcabs=2, modules=2)
    return perturb(lit).double().eval(), overrides
