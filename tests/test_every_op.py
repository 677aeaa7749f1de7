"""Tables over every op of tests/op_inputs.ARGS (tests/ops/ has one file per op; what is here runs the same
check on each op, so an op added to ARGS is covered without further ado): the eager references against
independent formulations; the op machinery (routing, autograd, fake kernels) through the reference
implementation, in float64; the kernels that check their own arguments (``_KERNEL_CHECKED``) against
the Python checks; and every op has its own test file."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import din_fast
from din_fast import ops
from din_fast.ops._library import _KERNEL_CHECKED
from din_fast.ops._library import OPS as FUSED_OPS
from impl_checks import opcheck, relayout, runs_here
from op_inputs import ARGS, GRAD_SHAPES, flat, rebuild, requiring_grad

OPS = sorted(ARGS)


# -- independent formulations -------------------------------------------------------------------------

def asyca_independent(x1, x2, w_init, b_init, w_dc, b_dc, w_ic, b_ic):
    """Through the channel means only (conv_init of the mean), with explicit matrix products."""
    c = x1.shape[1]
    means = torch.cat([x1.mean((2, 3)), x2.mean((2, 3))], 1)            # (B, 2C)
    z = means @ w_init.view(c, 2 * c).T + b_init
    s = torch.clamp(z @ w_dc.flatten(1).T + b_dc, min=0) @ w_ic.flatten(1).T + b_ic
    a = 1 / (1 + torch.exp(s[:, c:] - s[:, :c]))                          # two-way softmax
    return a[:, :, None, None] * x1 + (1 - a)[:, :, None, None] * x2


def dwc_sum_independent(inputs, weight, bias):
    return torch.einsum("kbchw,kc->bchw", torch.stack(inputs), weight) + bias[:, None, None]


def _shifted(x, d, p, q):
    """x[..., h + (p−1)d, w + (q−1)d] with zeros outside the image."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (d, d, d, d))
    return xp[..., p * d:p * d + h, q * d:q * d + w]


def mshf_independent(x, weight, bias):
    """Taps gathered by slicing; the largest eigenvalue of [[gxx, gxy], [gxy, gyy]] from eigvalsh."""
    out = []
    for k, d in enumerate((1, 2, 3)):
        g = []
        for j in range(3):
            acc = bias[k, j][None, :, None, None].expand_as(x).clone()
            for p in range(3):
                for q in range(3):
                    acc = acc + weight[k, j, :, p, q][None, :, None, None] * _shifted(x, d, p, q)
            g.append(acc)
        hess = torch.stack([torch.stack([g[0], g[2]], -1), torch.stack([g[2], g[1]], -1)], -2)
        out.append(torch.linalg.eigvalsh(hess)[..., -1].mean(1))
    return torch.stack(out, 1)


def _conv_unfold(x, weight, bias, d):
    """3x3 conv with dilation d and padding d via unfold + matmul."""
    b, _, h, w = x.shape
    cols = F.unfold(x, 3, dilation=d, padding=d)                        # (B, Cin*9, H*W)
    return (weight.flatten(1) @ cols).view(b, -1, h, w) + bias[None, :, None, None]


def channel_attention_residual_independent(u, t, w1, b1, w2, b2):
    """Matrix products on the channel sums; the logistic function written out."""
    b, c, h, w = t.shape
    mean = t.reshape(b, c, -1).sum(2) / (h * w)
    z = torch.clamp(mean @ w1.flatten(1).T + b1, min=0) @ w2.flatten(1).T + b2
    return u + t / (1 + torch.exp(-z))[:, :, None, None]


def conv3x3_independent(x, weight, bias):
    return _conv_unfold(x, weight, bias, 1)


def dilated_encdec_independent(h, weights, biases):
    """Each stride-1 transposed conv as a conv with the transposed, spatially flipped weight."""
    t = h
    for i, d in enumerate((1, 2, 4)):
        t = torch.relu(_conv_unfold(t, weights[i], biases[i], d))
    for i, d in enumerate((4, 2, 1)):
        w = weights[3 + i].transpose(0, 1).flip(2, 3)
        t = torch.relu(_conv_unfold(t, w, biases[3 + i], d))
    return torch.einsum("oc,bchw->bohw", weights[6].flatten(1), t) + biases[6][None, :, None, None]


def dac_gate_independent(x, r, v, w_mean1, w_mean2, w_std1, w_std2):
    """One-channel normalisation of v broadcast over channels; explicit unbiased variance."""
    n = x.shape[2] * x.shape[3]

    def stats(t):
        mu = t.sum((2, 3)) / n
        var = ((t - mu[:, :, None, None]) ** 2).sum((2, 3)) / (n - 1)
        return mu, torch.sqrt(var + 1e-5)

    mu_v, sd_v = stats(v)
    mu_x, sd_x = stats(x)
    shift = torch.relu(mu_x @ w_mean1.flatten(1).T) @ w_mean2.flatten(1).T
    scale = torch.relu(sd_x @ w_std1.flatten(1).T) @ w_std2.flatten(1).T
    norm = (v - mu_v[:, :, None, None]) / sd_v[:, :, None, None]
    return x + r * torch.sigmoid(norm * scale[:, :, None, None] + shift[:, :, None, None])


def criss_cross_attention_independent(q, k, v):
    """Dense attention over all H·W positions with a mask that keeps the row and column of each one."""
    b, cq, h, w = q.shape
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    keep = (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])    # (HW, HW), self once
    energy = torch.einsum("bcp,bcs->bps", q.reshape(b, cq, -1), k.reshape(b, cq, -1))
    energy = torch.where(keep, energy, torch.full_like(energy, float("-inf")))
    att = torch.exp(energy - energy.amax(2, keepdim=True))
    att = att / att.sum(2, keepdim=True)
    return torch.einsum("bps,bcs->bcp", att, v.reshape(b, v.shape[1], -1)).view_as(v)


def channel_spatial_attention_independent(x, skip, w_ca1, b_ca1, w_ca2, b_ca2, w_sa, b_sa):
    """Matrix products for the MLP, sorting for the maxima, slicing for the 7x7 conv."""
    def mlp(t):
        return torch.clamp(t @ w_ca1.flatten(1).T + b_ca1, min=0) @ w_ca2.flatten(1).T + b_ca2

    b, c, h, w = x.shape
    flat_x = x.reshape(b, c, -1)
    logits = mlp(flat_x.sum(2) / (h * w)) + mlp(flat_x.sort(2).values[..., -1])
    xc = x / (1 + torch.exp(-logits))[:, :, None, None]
    maps = torch.stack([xc.sum(1) / c, xc.sort(1).values[:, -1]], 1)           # (B, 2, H, W)
    padded = F.pad(maps, (3, 3, 3, 3))
    logit = b_sa.view(1, 1, 1).expand(b, h, w).clone()
    for p in range(7):
        for q in range(7):
            logit = logit + (w_sa[0, :, p, q][None, :, None, None] * padded[..., p:p + h, q:q + w]).sum(1)
    return xc / (1 + torch.exp(-logit))[:, None] + skip


INDEPENDENT = {"asyca": asyca_independent, "channel_attention_residual": channel_attention_residual_independent,
               "conv3x3": conv3x3_independent, "dwc_sum": dwc_sum_independent, "mshf": mshf_independent,
               "dilated_encdec": dilated_encdec_independent, "dac_gate": dac_gate_independent,
               "criss_cross_attention": criss_cross_attention_independent,
               "channel_spatial_attention": channel_spatial_attention_independent}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_matches_independent_formulation(op, seed):
    g = torch.Generator().manual_seed(seed)
    args = ARGS[op](generator=g, b=3, h=9, w=6)
    expected = INDEPENDENT[op](*args)
    got = getattr(ops.reference, op)(*args)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


# -- the op machinery through the reference implementation -------------------------------------------

@pytest.mark.parametrize("op", OPS)
def test_fused_op_with_reference_kernel_matches_reference(op):
    args = ARGS[op]()
    with din_fast.use_backend("reference"):
        got = getattr(torch.ops.din_fast, op)(*args)
    torch.testing.assert_close(got, getattr(ops.reference, op)(*args), rtol=0, atol=0)


@pytest.mark.parametrize("op", OPS)
def test_gradcheck_reference(op):
    args = requiring_grad(ARGS[op](**GRAD_SHAPES[op]))
    fn = getattr(torch.ops.din_fast, op)
    # dilated_encdec has 6,871 weights, channel_spatial_attention a 98-tap conv and two full-size inputs:
    # fast mode checks random projections of the full Jacobian.
    fast = op in ("dilated_encdec", "channel_spatial_attention")
    with din_fast.use_backend("reference"):
        assert torch.autograd.gradcheck(lambda *t: fn(*rebuild(args, t)), flat(args), fast_mode=fast)
    assert torch.autograd.gradcheck(lambda *t: getattr(ops, op)(*rebuild(args, t)), flat(args), fast_mode=fast)


@pytest.mark.parametrize("op", OPS)
def test_opcheck(op):
    args = requiring_grad(ARGS[op](**GRAD_SHAPES[op]))
    for backend in ("reference", "auto"):
        opcheck(op, backend, args)


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_and_channels_last_inputs(op):
    args = ARGS[op](b=2, h=6, w=5)
    expected = getattr(ops.reference, op)(*args)
    first = args[0][0] if isinstance(args[0], list) else args[0]
    for layout in ("channels_last", "non_contiguous"):
        def moves(t):  # the feature maps and every one-channel 4-D tensor (dac_gate's v)
            return t.dim() == 4 and (t.shape == first.shape or t.shape[1] == 1)
        moved = rebuild(args, [relayout(t, layout) if moves(t) else t for t in flat(args)])
        got = getattr(torch.ops.din_fast, op)(*moved)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        if layout == "channels_last" and got.shape[1] > 1:
            assert got.is_contiguous(memory_format=torch.channels_last)


# -- argument checks ---------------------------------------------------------------------------------------

def _mutations(args):
    """Systematic bad variants of a valid argument list: each tensor in turn with the other float dtype,
    one element fewer along each dim, an extra or a missing leading dim, a non-tensor in its place; each
    list argument one element shorter and one longer."""
    tensors = flat(args)
    for i, t in enumerate(tensors):
        variants = [t.to(torch.float32 if t.dtype == torch.float64 else torch.float64), t[None], t[0], 1.0]
        variants += [t.narrow(d, 0, t.shape[d] - 1) for d in range(t.dim())]
        for v in variants:
            yield rebuild(args, tensors[:i] + [v] + tensors[i + 1:])
    for j, a in enumerate(args):
        if isinstance(a, list):
            yield args[:j] + [a[:-1]] + args[j + 1:]
            yield args[:j] + [a + a[:1]] + args[j + 1:]


@pytest.mark.parametrize("op", OPS)
def test_kernel_checks_cover_python_checks(op):
    """The eager fast path skips the Python check for kernels in ``_KERNEL_CHECKED`` (FusedOp.__call__):
    on every argument list the Python check rejects, those kernels (forward and backward) must raise
    too, and the public op must raise the Python check's own ValueError."""
    fused = FUSED_OPS[op]
    args = ARGS[op]()
    grad = torch.ones(fused.output_shape(*args), dtype=torch.float64)
    impls = [impl for impl in _KERNEL_CHECKED if runs_here(op, impl, dtype=torch.float64)]
    if not impls:
        pytest.skip("no kernel-checked implementation is built for this op")
    rejected = 0
    for bad in _mutations(args):
        try:
            fused.check(*bad)
            continue
        except ValueError as e:
            message = str(e)
        rejected += 1
        for impl in impls:
            with pytest.raises(Exception):
                fused.implementation(impl, backward=False)(*bad)
            with pytest.raises(Exception):
                fused.implementation(impl, backward=True)(grad, *bad)
        with pytest.raises(ValueError) as raised:
            getattr(din_fast.ops, op)(*bad)
        assert str(raised.value) == message
    assert rejected >= len(flat(args))  # the mutations did exercise the check


def test_every_op_has_its_own_test_file():
    """Each op's own cases (shapes, layouts, errors of the kernels and of the public op) live in
    tests/ops/test_<op>.py."""
    ops_dir = Path(__file__).parent / "ops"
    missing = [op for op in sorted(FUSED_OPS) if not (ops_dir / f"test_{op}.py").is_file()]
    assert not missing, f"ops without tests/ops/test_<op>.py: {missing}"
