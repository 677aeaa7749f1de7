"""criss_cross_attention and channel_spatial_attention: every implementation that runs here (cpp; triton
under the interpreter) against the float64 reference — odd and non-square sizes, batch > 1, lines of
length 1, channel counts off the kernels' register blocks, non-contiguous and channels_last inputs,
gradients — and the C++ kernels' own argument checks."""

import pytest
import torch

import din_fast
from din_fast.ops import reference
from impl_checks import IMPLS, check_backward, check_forward, relayouts, run, skip_unless_runs
from op_inputs import ARGS, flat, rebuild, requiring_grad

OPS = ("criss_cross_attention", "channel_spatial_attention")
# The interpreter runs Triton programs one by one in Python: its shapes stay tiny (the 98-tap gate convs
# of channel_spatial_attention cost ~10 s per call there).
SHAPES = {
    ("criss_cross_attention", "cpp"): [dict(b=2, c=8, h=5, w=7, cq=3), dict(b=3, c=37, h=9, w=4, cq=8),
                                       dict(b=1, c=64, h=13, w=11, cq=8), dict(b=2, c=5, h=1, w=6, cq=2),
                                       dict(b=2, c=33, h=7, w=1, cq=1),
                                       # rows of whole vectors (no padded copy) and several column tiles of the
                                       # forward, the last one short and ending in a partial vector
                                       dict(b=2, c=9, h=6, w=32, cq=4), dict(b=1, c=6, h=3, w=83, cq=3)],
    ("criss_cross_attention", "triton"): [dict(b=2, c=5, h=5, w=7, cq=3), dict(b=1, c=4, h=1, w=6, cq=2),
                                          dict(b=2, c=3, h=6, w=1, cq=2)],
    ("channel_spatial_attention", "cpp"): [dict(b=2, c=16, h=5, w=7), dict(b=3, c=32, h=9, w=4, reduction=8),
                                           dict(b=1, c=16, h=1, w=1), dict(b=2, c=17, h=23, w=19, reduction=4)],
    ("channel_spatial_attention", "triton"): [dict(b=1, c=4, h=3, w=5, reduction=2)],
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_backward_match_float64_reference(op, impl, dtype):
    if impl == "triton" and op == "channel_spatial_attention" and dtype == torch.float32:
        pytest.skip("interpreter time: the float64 case covers the same kernels")
    skip_unless_runs(op, impl, dtype)
    g = torch.Generator().manual_seed(0)
    for shape in SHAPES[op, impl]:
        args = ARGS[op](generator=g, **shape)
        check_forward(op, impl, args, dtype)
        check_backward(op, impl, args, dtype, g)


@pytest.mark.parametrize("op", OPS)
def test_cpp_non_contiguous_and_channels_last(op):
    skip_unless_runs(op, "cpp", torch.float32)
    args = ARGS[op](b=2, h=6, w=5, dtype=torch.float32)
    expected = run(op, "cpp", args)
    plain = requiring_grad(args)
    want = torch.autograd.grad(run(op, "cpp", plain), flat(plain), torch.ones_like(expected))
    for layout in ("channels_last", "non_contiguous"):
        moved = rebuild(args, [relayouts(t)[layout] if t.dim() == 4 and t.shape[2:] == expected.shape[2:] else t
                               for t in flat(args)])
        got = run(op, "cpp", moved)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        if layout == "channels_last":
            assert got.is_contiguous(memory_format=torch.channels_last)
        inputs = requiring_grad(moved)
        grads = torch.autograd.grad(run(op, "cpp", inputs), flat(inputs), torch.ones_like(expected))
        for got_grad, want_grad in zip(grads, want):
            torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=0)


@pytest.mark.parametrize("op", OPS)
def test_gradcheck_cpp(op):
    skip_unless_runs(op, "cpp", torch.float64)
    shape = {"criss_cross_attention": dict(b=2, c=3, h=3, w=4, cq=2),
             "channel_spatial_attention": dict(b=2, c=4, h=3, w=4, reduction=2)}[op]
    args = requiring_grad(ARGS[op](**shape))
    fn = getattr(din_fast.ops, op)
    with din_fast.use_backend("cpp"):
        # fast mode (random projections of the Jacobian); test_ops_reference checks the full Jacobian of
        # the "auto" route, which is this kernel wherever it is built.
        assert torch.autograd.gradcheck(lambda *t: fn(*rebuild(args, t)), flat(args), fast_mode=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_criss_cross_attention_large_energies_stay_finite(impl):
    """Energies of ±80: the online softmax must neither overflow nor lose the maximum."""
    skip_unless_runs("criss_cross_attention", impl, torch.float32)
    q, k, v = ARGS["criss_cross_attention"](b=1, c=4, h=6, w=5, cq=2)
    check_forward("criss_cross_attention", impl, [q * 8, k * 8, v], torch.float32)


def test_criss_cross_attention_triton_line_limit():
    skip_unless_runs("criss_cross_attention", "triton", torch.float32)
    from din_fast.kernels import criss_cross_attention as kernel

    q = torch.randn(1, 2, 1, kernel.MAX_LINE + 1)
    with pytest.raises(ValueError, match="H, W <= 256"):
        kernel.forward(q, q, q)


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
    skip_unless_runs(op, "cpp", torch.float64)
    args = mutate(ARGS[op]())
    with pytest.raises(ValueError, match=message):
        getattr(torch.ops.din_fast, f"_{op}_cpp")(*args)
