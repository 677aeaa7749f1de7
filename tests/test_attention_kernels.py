"""C++ CPU kernels of criss_cross_attention and channel_spatial_attention against the float64 reference:
odd and non-square sizes, batch > 1, degenerate lines (H or W = 1), channel counts off the kernels'
register blocks, non-contiguous and channels_last inputs, gradients, and the C++ argument checks."""

import pytest
import torch

import din_fast
from din_fast import backends
from din_fast.ops import reference
from op_inputs import ARGS, flat, rebuild, requiring_grad

OPS = ("criss_cross_attention", "channel_spatial_attention")
SHAPES = {
    "criss_cross_attention": [dict(b=2, c=8, h=5, w=7, cq=3), dict(b=3, c=37, h=9, w=4, cq=8),
                              dict(b=1, c=64, h=13, w=11, cq=8), dict(b=2, c=5, h=1, w=6, cq=2),
                              dict(b=2, c=33, h=7, w=1, cq=1)],
    "channel_spatial_attention": [dict(b=2, c=16, h=5, w=7), dict(b=3, c=32, h=9, w=4, reduction=8),
                                  dict(b=1, c=16, h=1, w=1), dict(b=2, c=17, h=23, w=19, reduction=4)],
}

pytestmark = pytest.mark.skipif(any(backends.unavailable_reason(op, "cpp", "cpu", torch.float32) for op in OPS),
                                reason="din_fast._C was built without these kernels")


def _tol(dtype, ref):
    """k ulps of the dtype, relative and scaled by the reference's magnitude (sums of up to ~100 terms)."""
    eps = torch.finfo(dtype).eps
    return dict(rtol=64 * eps, atol=64 * eps * max(ref.abs().max().item(), 1.0))


def _run(op, args):
    with din_fast.use_backend("cpp"):
        return getattr(din_fast.ops, op)(*args)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_backward_match_float64_reference(op, dtype):
    g = torch.Generator().manual_seed(0)
    for shape in SHAPES[op]:
        args = ARGS[op](generator=g, **shape)
        expected = getattr(reference, op)(*args)
        grad = torch.randn(expected.shape, generator=g, dtype=torch.float64)
        ref_inputs = requiring_grad(args)
        ref_grads = torch.autograd.grad(getattr(reference, op)(*ref_inputs), flat(ref_inputs), grad)
        inputs = requiring_grad(rebuild(args, [t.to(dtype) for t in flat(args)]))
        out = _run(op, inputs)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), expected, **_tol(dtype, expected))
        grads = torch.autograd.grad(out, flat(inputs), grad.to(dtype))
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got.double(), want, **_tol(dtype, want))


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_and_channels_last(op):
    args = ARGS[op](b=2, h=6, w=5, dtype=torch.float32)
    expected = _run(op, args)
    for layout in ("channels_last", "transposed"):
        def relayout(t):
            if t.dim() != 4 or t.shape[2:] != expected.shape[2:]:
                return t
            if layout == "channels_last":
                return t.contiguous(memory_format=torch.channels_last)
            return t.transpose(2, 3).contiguous().transpose(2, 3)
        moved = rebuild(args, [relayout(t) for t in flat(args)])
        got = _run(op, moved)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        if layout == "channels_last":
            assert got.is_contiguous(memory_format=torch.channels_last)
        inputs = requiring_grad(moved)
        grads = torch.autograd.grad(_run(op, inputs), flat(inputs), torch.ones_like(expected))
        plain = requiring_grad(args)
        want = torch.autograd.grad(_run(op, plain), flat(plain), torch.ones_like(expected))
        for gg, ww in zip(grads, want):
            torch.testing.assert_close(gg, ww, rtol=0, atol=0)


@pytest.mark.parametrize("op", OPS)
def test_gradcheck_cpp(op):
    shape = {"criss_cross_attention": dict(b=2, c=3, h=3, w=4, cq=2),
             "channel_spatial_attention": dict(b=2, c=4, h=3, w=4, reduction=2)}[op]
    args = requiring_grad(ARGS[op](**shape))
    fn = getattr(din_fast.ops, op)
    with din_fast.use_backend("cpp"):
        # fast mode (random projections of the Jacobian); test_ops_reference checks the full Jacobian of
        # the "auto" route, which is this kernel wherever it is built.
        assert torch.autograd.gradcheck(lambda *t: fn(*rebuild(args, t)), flat(args), fast_mode=True)


def test_criss_cross_attention_large_energies_stay_finite():
    """Energies of ±80: the online softmax must neither overflow nor lose the maximum."""
    q, k, v = ARGS["criss_cross_attention"](b=1, c=4, h=6, w=5, cq=2, dtype=torch.float32)
    q, k = q * 8, k * 8
    expected = reference.criss_cross_attention(q.double(), k.double(), v.double())
    got = _run("criss_cross_attention", [q, k, v])
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, **_tol(torch.float32, expected))


@pytest.mark.parametrize("op,mutate,message", [
    ("criss_cross_attention", lambda a: [a[0], a[1][:, :1], a[2]], "k must have shape"),
    ("criss_cross_attention", lambda a: [a[0], a[1], a[2][..., :3]], "v must have shape"),
    ("criss_cross_attention", lambda a: [a[0].half(), a[1].half(), a[2].half()], "float32 or float64"),
    ("criss_cross_attention", lambda a: [a[0][:, :, :0], a[1][:, :, :0], a[2][:, :, :0]], "q must not be empty"),
    ("channel_spatial_attention", lambda a: [a[0], a[1][:1]] + a[2:], "skip must have shape"),
    ("channel_spatial_attention", lambda a: a[:6] + [a[6][..., :5, :5], a[7]], "w_sa must have shape"),
    ("channel_spatial_attention", lambda a: a[:2] + [a[2].float()] + a[3:], "w_ca1 has dtype"),
])
def test_cpp_kernels_check_their_arguments(op, mutate, message):
    """The private C++ ops check inputs themselves (ValueError naming the argument)."""
    args = mutate(ARGS[op]())
    with pytest.raises(ValueError, match=message):
        getattr(torch.ops.din_fast, f"_{op}_cpp")(*args)
