"""``channel_attention_residual`` implementations (cpp; triton under the interpreter) against the float64
reference: odd sizes, B > 1, hidden widths 1 to 4, one-pixel planes, parallel and inline plane loops,
non-contiguous and channels_last inputs, gradients (gradcheck, opcheck), and the C++ kernels' own
argument checks."""

import pytest
import torch

import din_fast
from din_fast import ops
from impl_checks import (IMPLS, ROUTES, assert_close_to, check_backward, check_bad_arguments, check_forward,
                         check_forward_and_backward, gradcheck, opcheck, relayouts, run, skip_unless_runs)
from op_inputs import GRAD_SHAPES, channel_attention_residual_args, requiring_grad

OP = "channel_attention_residual"
# C = 32, R = 2 is DeFiAN-S's RCAB; 1×1 planes; 70×65 at C = 33 is large enough for the plane loops to be
# split over threads (about 32K elements per task).
SHAPES = [dict(b=2, c=16, h=5, w=7), dict(b=3, c=32, h=9, w=4, reduction=16),
          dict(b=2, c=17, h=1, w=1, reduction=4), dict(b=2, c=33, h=70, w=65, reduction=16)]
TRITON_SHAPES = [dict(b=2, c=6, h=5, w=3, reduction=3)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_backward_match_reference(impl, dtype):
    check_forward_and_backward(OP, impl, dtype, TRITON_SHAPES if impl == "triton" else SHAPES, seed=1)


@pytest.mark.parametrize("impl", IMPLS)
def test_closed_and_open_relus(impl):
    """Hidden units with large positive and negative biases: the gradient passes the open ReLUs only."""
    skip_unless_runs(OP, impl, torch.float64)
    u, t, w1, b1, w2, b2 = channel_attention_residual_args(b=2, c=8, h=3, w=5, reduction=2)
    b1 = torch.tensor([3.0, -3.0, 2.0, -2.0], dtype=torch.float64)
    check_forward(OP, impl, [u, t, w1, b1, w2, b2], torch.float64)
    check_backward(OP, impl, [u, t, w1, b1, w2, b2], torch.float64, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", ["channels_last", "non_contiguous"])
def test_layouts(impl, layout):
    skip_unless_runs(OP, impl, torch.float64)
    u, t, *w = channel_attention_residual_args(b=2, c=8, h=6, w=5, reduction=4)
    expected = ops.reference.channel_attention_residual(u, t, *w)
    moved = [relayouts(x)[layout] for x in (u, t)]
    got = run(OP, impl, [*moved, *w])
    assert_close_to(got, expected, torch.float64, 64)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert got.is_contiguous(memory_format=fmt)
    inputs = requiring_grad([*moved, *w])
    with din_fast.use_backend(impl):
        out = ops.channel_attention_residual(*inputs)
        grads = torch.autograd.grad(out, inputs, torch.ones_like(expected))
    ref_inputs = requiring_grad([u, t, *w])
    want = torch.autograd.grad(ops.reference.channel_attention_residual(*ref_inputs), ref_inputs,
                               torch.ones_like(expected))
    for got_grad, want_grad in zip(grads, want):
        assert_close_to(got_grad, want_grad, torch.float64, 512)
    assert all(d.is_contiguous(memory_format=fmt) for d in grads[:2])  # du, dt in their inputs' format


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck(impl):
    skip_unless_runs(OP, impl, torch.float64)
    assert gradcheck(OP, impl, requiring_grad(channel_attention_residual_args(**GRAD_SHAPES[OP])))


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    skip_unless_runs(OP, impl, torch.float64)
    opcheck(OP, impl, requiring_grad(channel_attention_residual_args(**GRAD_SHAPES[OP])))


def test_private_cpp_kernels_check_their_arguments():
    skip_unless_runs(OP, "cpp", torch.float64)
    u, t, w1, b1, w2, b2 = channel_attention_residual_args()
    fwd = torch.ops.din_fast._channel_attention_residual_cpp
    bwd = torch.ops.din_fast._channel_attention_residual_backward_cpp
    with pytest.raises(ValueError, match="t must have shape"):
        fwd(u, t[:1], w1, b1, w2, b2)
    with pytest.raises(ValueError, match="w1 has dtype"):
        fwd(u, t, w1.float(), b1, w2, b2)
    with pytest.raises(ValueError, match=r"w2 must have shape \[16, 2, 1, 1\]"):
        fwd(u, t, w1, b1, w2[:, :1], b2)
    with pytest.raises(ValueError, match="float32 or float64"):
        fwd(*(x.half() for x in (u, t, w1, b1, w2, b2)))
    with pytest.raises(ValueError, match="u must not be empty"):
        fwd(u[:0], t[:0], w1, b1, w2, b2)
    with pytest.raises(ValueError, match="grad must have shape"):
        bwd(u[:1], u, t, w1, b1, w2, b2)


BAD_ARGUMENTS = [
    (lambda a: [a[0], a[1][:, :, :3]] + a[2:], "t must have shape"),
    (lambda a: [a[0], a[1].float()] + a[2:], "t has dtype"),
    (lambda a: a[:2] + [a[2][:, :8]] + a[3:], r"w1 must have shape \(2, 16"),
    (lambda a: a[:4] + [a[4][:, :1]] + a[5:], r"w2 must have shape \(16, 2, 1, 1\)"),
    (lambda a: a[:5] + [a[5][:3]], "b2 must have shape"),
    (lambda a: [a[0][:, :, :0], a[1][:, :, :0]] + a[2:], "u must not be empty"),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("mutate,message", BAD_ARGUMENTS)
def test_bad_arguments(route, backend, mutate, message):
    """Rejected by the public op, on every route and backend, with a ValueError naming the argument."""
    check_bad_arguments(OP, route, backend, mutate, message)
