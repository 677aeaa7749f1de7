"""``dac_gate`` implementations (cpp; triton under the interpreter) against the float64 reference."""

import pytest
import torch

from din_fast import ops
from impl_checks import (IMPLS, ROUTES, assert_close_to, check_backward, check_bad_arguments, check_forward,
                         gradcheck, opcheck, relayouts, run, skip_unless_runs)
from op_inputs import GRAD_SHAPES, dac_gate_args, requiring_grad

OP = "dac_gate"

# Odd sizes, B > 1, C = 16 and 33 (hidden widths 1 and 2); 1×2 is the smallest image with a variance;
# 70×65 spans two backward chunks of pixels.
SHAPES = [dict(b=2, c=16, h=5, w=7), dict(b=3, c=33, h=9, w=4), dict(b=2, c=16, h=1, w=2),
          dict(b=2, c=33, h=70, w=65)]
TRITON_SHAPES = [dict(b=2, c=16, h=5, w=7)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_backward_match_reference(impl, dtype):
    skip_unless_runs("dac_gate", impl, dtype)
    g = torch.Generator().manual_seed(2)
    for shape in TRITON_SHAPES if impl == "triton" else SHAPES:
        args = dac_gate_args(generator=g, **shape)
        args[3:] = [w * 3 for w in args[3:]]  # larger FC weights: some ReLUs open, some closed
        check_forward("dac_gate", impl, args, dtype)
        check_backward("dac_gate", impl, args, dtype, g)


@pytest.mark.parametrize("impl", IMPLS)
def test_constant_maps(impl):
    """Constant v (σ_v = sqrt(1e-5), nv = 0) and constant x (σ_x = sqrt(1e-5)): finite, as the reference."""
    skip_unless_runs("dac_gate", impl, torch.float64)
    x, r, v, *w = dac_gate_args(b=2, c=16, h=4, w=5)
    x, v = torch.full_like(x, 0.25), torch.full_like(v, -1.5)
    check_forward("dac_gate", impl, [x, r, v, *w], torch.float64)
    check_backward("dac_gate", impl, [x, r, v, *w], torch.float64, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", ["channels_last", "non_contiguous"])
def test_layouts(impl, layout):
    skip_unless_runs("dac_gate", impl, torch.float64)
    x, r, v, *w = dac_gate_args(b=2, c=16, h=6, w=7)
    expected = ops.reference.dac_gate(x, r, v, *w)
    moved = [relayouts(t)[layout] for t in (x, r, v)]
    got = run("dac_gate", impl, [*moved, *w])
    assert_close_to(got, expected, torch.float64, 64)
    assert got.is_contiguous(memory_format=torch.channels_last if layout == "channels_last"
                             else torch.contiguous_format)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck(impl):
    skip_unless_runs("dac_gate", impl, torch.float64)
    assert gradcheck("dac_gate", impl, requiring_grad(dac_gate_args(**GRAD_SHAPES["dac_gate"])))


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    skip_unless_runs("dac_gate", impl, torch.float64)
    opcheck("dac_gate", impl, requiring_grad(dac_gate_args(**GRAD_SHAPES["dac_gate"])))


@pytest.mark.parametrize("impl", ["cpp"])
def test_private_kernels_check_their_arguments(impl):
    skip_unless_runs("dac_gate", impl, torch.float64)
    x, r, v, *w = dac_gate_args()
    fwd = getattr(torch.ops.din_fast, f"_dac_gate_{impl}")
    bwd = getattr(torch.ops.din_fast, f"_dac_gate_backward_{impl}")
    one = [t[:, :, :1, :1] for t in (x, r, v)]
    with pytest.raises(ValueError, match=r"H\*W > 1"):
        fwd(*one, *w)
    with pytest.raises(ValueError, match=r"H\*W > 1"):
        bwd(one[0], *one, *w)
    with pytest.raises(ValueError, match="v must have shape"):
        fwd(x, r, x, *w)
    with pytest.raises(ValueError, match="r has dtype"):
        fwd(x, r.float(), v, *w)
    with pytest.raises(ValueError, match="float32 or float64"):
        fwd(*(t.half() for t in (x, r, v, *w)))
    with pytest.raises(ValueError, match="w_std1 must have shape"):
        fwd(x, r, v, w[0], w[1], w[2][:, :3], w[3])
    with pytest.raises(ValueError, match="x must not be empty"):
        fwd(x[:0], r[:0], v[:0], *w)
    with pytest.raises(ValueError, match="grad must have shape"):
        bwd(x[:1], x, r, v, *w)


BAD_ARGUMENTS = [
    (lambda a: [a[0], a[1], a[2].expand(-1, 16, -1, -1)] + a[3:], "v must have shape"),
    (lambda a: [a[0][:, :, :1, :1], a[1][:, :, :1, :1], a[2][:, :, :1, :1]] + a[3:], "H\\*W > 1"),
    (lambda a: [a[0], a[1][:1]] + a[2:], "r must have shape"),
    (lambda a: a[:6] + [a[6][:, :, :, :0]], "w_std2 must have shape"),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("mutate,message", BAD_ARGUMENTS)
def test_bad_arguments(route, backend, mutate, message):
    """Rejected by the public op, on every route and backend, with a ValueError naming the argument."""
    check_bad_arguments(OP, route, backend, mutate, message)
