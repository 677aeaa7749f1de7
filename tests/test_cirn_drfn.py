"""CIRN and DRFN: parameter counts from the layer formulas of the text, the 5.2M reading of DRFN, the
criss-cross ISAB, and short training runs."""

import pytest
import torch
import torch.nn.functional as F

import din_fast
from din_fast import create_model
from din_fast.models.cirn import ISAB


def conv(cin, cout, k):
    """Parameters of a k×k conv (or transposed conv) with bias."""
    return cin * cout * k * k + cout


def drfn_count(scale, channels=64, groups=16, blocks=8, block_convs=1, reduction=16):
    c, r = channels, max(channels // reduction, 1)
    rag = blocks * block_convs * conv(c, c, 3) + conv(c, r, 1) + conv(r, c, 1) + conv(2, 1, 7)
    fusion = conv(2 * c, c, 1) + conv(2, 1, 7)
    up = conv(c, c * scale * scale, 3) if scale in (2, 3) else 2 * conv(c, 4 * c, 3)
    return conv(3, c, 3) + groups * rag + (groups - 1) * fusion + up + conv(c, 3, 3)


def cirn_count(scale, channels=64, features=256, groups=6, reduction=8):
    c = channels
    k = {2: 6, 3: 7, 4: 8, 8: 12}[scale]
    unit = 3 * (conv(c, c, k) + 1)                                    # three (de)convs, one PReLU each
    feb = conv(3, features, 3) + 1 + conv(features, c, 1) + 1
    isab = 2 * conv(4 * c, c // reduction, 3) + conv(c, c, 1) + 1     # query, key, value, gamma
    total = feb + unit + conv((groups + 1) * c, 3, 3)
    for g in range(1, groups + 1):
        total += (conv(g * c, c, 1) + 1 if g > 1 else 0) + unit        # IDB
        total += conv((g + 1) * c, c, 1) + 1 + unit                    # IUB
        total += isab
    return total


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_drfn_parameter_count(scale):
    assert n_params(create_model("drfn", scale)) == drfn_count(scale)
    assert n_params(create_model("drfn", scale, block_convs=2, channels=16, groups=3, blocks=2)) == \
        drfn_count(scale, block_convs=2, channels=16, groups=3, blocks=2)


def test_drfn_default_matches_the_stated_size():
    """G = 16, M = 8, 64 channels: one conv per residual block gives the paper's 5.2M at ×4; EDSR's two
    convs per block would give 9.9M."""
    assert round(drfn_count(4) / 1e6, 1) == 5.2
    assert round(drfn_count(4, block_convs=2) / 1e6, 1) == 9.9
    model = create_model("drfn", 4)
    assert model.config == dict(channels=64, groups=16, blocks=8, block_convs=1, reduction=16)
    assert model.groups[0].attention.ca_down.out_channels == 4                # "channel-downscaling has 4 filters"


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_cirn_parameter_count(scale):
    assert n_params(create_model("cirn", scale)) == cirn_count(scale)
    tiny = dict(channels=8, features=8, groups=3, reduction=4)
    assert n_params(create_model("cirn", scale, **tiny)) == cirn_count(scale, **tiny)


def test_classes_are_exported():
    assert isinstance(create_model("cirn", 2, channels=8, features=8, groups=1, reduction=4), din_fast.CIRN)
    assert isinstance(create_model("drfn", 2, channels=16, groups=1, blocks=1), din_fast.DRFN)


def test_bad_arguments():
    with pytest.raises(ValueError, match="supports scales 2, 3, 4; got scale=8"):
        create_model("drfn", 8)
    with pytest.raises(ValueError, match="supports scales 2, 3, 4, 8; got scale=5"):
        din_fast.CIRN(scale=5)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        create_model("cirn", 2, groups=0)
    with pytest.raises(ValueError, match="block_convs must be a positive integer"):
        create_model("drfn", 2, block_convs=0)


def test_isab_is_two_shared_criss_cross_stages():
    """ISAB(X, Y) = X2 with X_{s+1} = X_s + γ · cca(q(G(X_s)), k(G(X_s)), v(Y)); written out here with
    the dense-mask attention of the op tests, and checked on a non-square map."""
    from test_every_op import criss_cross_attention_independent as cca

    torch.manual_seed(0)
    isab = ISAB(8, 4).double()
    with torch.no_grad():
        isab.gamma.fill_(0.7)
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    y = torch.randn(2, 8, 5, 7, dtype=torch.float64)

    def grads(t):
        pw, ph = F.pad(t, (1, 1, 0, 0)), F.pad(t, (0, 0, 1, 1))
        gx = (pw[..., 2:] - pw[..., :-2]) / 2
        gy = (ph[..., 2:, :] - ph[..., :-2, :]) / 2
        lap = pw[..., 2:] + pw[..., :-2] + ph[..., 2:, :] + ph[..., :-2, :] - 4 * t
        return torch.stack([gx, gy, lap], 2).flatten(1, 2)             # per channel: ∂x, ∂y, Δ

    v = isab.value(y)
    expected = x
    for _ in range(2):
        g = torch.cat([expected, grads(expected)], 1)
        expected = expected + 0.7 * cca(isab.query(g), isab.key(g), v)
    with din_fast.use_backend("reference"):
        torch.testing.assert_close(isab(x, y), expected, rtol=1e-10, atol=1e-10)


def test_isab_second_stage_reaches_every_position():
    """After two stages a change of Y at one position reaches every output position (one stage reaches
    only its row and column)."""
    torch.manual_seed(1)
    isab = ISAB(4, 2).double()
    with torch.no_grad():
        isab.gamma.fill_(1.0)
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    y = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    isab(x, y)[0, :, 0, 0].sum().backward()
    assert (y.grad.abs().sum(1)[0] > 0).all()


@pytest.mark.parametrize("name,config", [
    ("cirn", dict(channels=8, features=8, groups=2, reduction=4)),
    ("drfn", dict(channels=16, groups=2, blocks=2)),
])
def test_short_training_run_lowers_the_loss(name, config):
    torch.manual_seed(0)
    model = create_model(name, 2, **config)
    hr = F.avg_pool2d(torch.rand(2, 3, 32, 32), 2)                        # smooth-ish 16x16 targets
    lr = F.interpolate(hr, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = F.l1_loss(model(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]
