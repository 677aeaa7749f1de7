"""``asyca`` (DIN's asymmetric co-attention): every implementation that can run here against the float64
reference, forward and backward (every gradient), on awkward shapes and layouts; gradcheck and opcheck
through each implementation; bad input rejected by the kernels themselves and by the public op."""

import pytest
import torch

import din_fast
from din_fast import ops
from din_fast.ops._library import OPS
from impl_checks import (ROUTES, check_bad_arguments, check_device_mismatch_is_reported, check_kernel_rejects,
                         check_kernel_rejects_unsupported_dtype_and_bad_grad, check_kernels_against_reference,
                         check_public_call_checks_arguments_once, check_router_still_checks_direct_calls,
                         gradcheck, impl_params, opcheck, relayout, with_layouts)
from op_inputs import ARGS, GRAD_SHAPES, requiring_grad

OP = "asyca"

#: The implementations that run on CPU tensors here; Triton runs in the interpreter (slow, so it gets
#: its own, smaller cases below).
IMPLS = impl_params(OP, "cpp")
TRITON = impl_params(OP, "triton")

#: Shapes with odd H and W, B > 1 and C not a multiple of 8 (nor of the SIMD width).
SHAPES = [dict(b=3, c=12, h=7, w=9, reduction=4), dict(b=2, c=5, h=1, w=13, reduction=5)]
#: Interpreter-sized cases: odd sizes, B > 1, C not a power of two.
TRITON_SHAPES = [dict(b=2, c=5, h=3, w=5, reduction=5)]

LAYOUTS = [("contiguous",), ("channels_last",), ("non_contiguous",), ("channels_last", "contiguous")]


def _terms(shape):
    """Length of the longest reduction in the forward/backward (bounds the rounding error)."""
    return shape["b"] * shape["h"] * shape["w"] * 4 * shape["c"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape_index,layouts",
                         [(i, layouts) for i in range(len(SHAPES)) for layouts in LAYOUTS])
def test_forward_and_backward_match_float64_reference(impl, dtype, shape_index, layouts):
    shape = SHAPES[shape_index]
    check_kernels_against_reference(OP, impl, dtype, shape, layouts, _terms(shape))


@pytest.mark.triton
@pytest.mark.parametrize("impl", TRITON)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layouts", [("contiguous",), ("channels_last", "non_contiguous")])
@pytest.mark.parametrize("shape_index", range(len(TRITON_SHAPES)))
def test_triton_matches_float64_reference(impl, dtype, layouts, shape_index):
    shape = TRITON_SHAPES[shape_index]
    check_kernels_against_reference(OP, impl, dtype, shape, layouts, _terms(shape))


@pytest.mark.parametrize("impl", IMPLS + TRITON)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_asyca_same_tensor_twice(impl, layout):
    """DIN's first node of each branch: x1 is x2, the output is x1 and gradients flow to it twice."""
    x, _, *params = ARGS[OP](b=2, c=6, h=3, w=5)
    x = relayout(x, layout)
    fused = OPS[OP]
    out = fused.implementation(impl, backward=False)(x, x, *params)
    torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(x)
    expected = fused.reference_backward(g, x, x, *params)
    got = fused.implementation(impl, backward=True)(g, x, x, *params)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_asyca_same_input_is_identity():
    x, _, *params = ARGS[OP]()
    torch.testing.assert_close(ops.reference.asyca(x, x, *params), x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck(impl, layout):
    assert gradcheck(OP, impl, requiring_grad(with_layouts(ARGS[OP](**GRAD_SHAPES[OP]), (layout,))))


@pytest.mark.parametrize("impl", IMPLS + TRITON)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(impl, layout):
    opcheck(OP, impl, requiring_grad(with_layouts(ARGS[OP](**GRAD_SHAPES[OP]), (layout,))))


def test_compile_fullgraph_over_the_ops():
    args = ARGS[OP]()

    def fn(*a):
        return ops.asyca(*a) * 2

    for backend in ("reference", "auto"):
        with din_fast.use_backend(backend):
            compiled = torch.compile(fn, fullgraph=True, backend="eager")
            torch.testing.assert_close(compiled(*args), fn(*args))


# -- bad input -------------------------------------------------------------------------------------------

#: Rejected by the kernels themselves (called directly, forward and backward).
KERNEL_BAD = [
    (lambda a: [a[0], a[1][:, :, :4]] + a[2:], "x2 must have shape"),
    (lambda a: [a[0], a[1].float()] + a[2:], "x2 has dtype"),
    (lambda a: [a[0], a[1], a[2][:, :-1]] + a[3:], "w_init must have shape"),
    (lambda a: a[:4] + [a[4][:, :-1]] + a[5:], "w_dc must have shape"),
    (lambda a: a[:5] + [a[5][:-1]] + a[6:], "b_dc must have shape"),
    (lambda a: a[:6] + [a[6][:-1]] + a[7:], "w_ic must have shape"),
    (lambda a: a[:7] + [a[7][:-1]], "b_ic must have shape"),
    (lambda a: [a[0][:, :, :0], a[1][:, :, :0]] + a[2:], "x1 must not be empty"),
    (lambda a: [a[0][0], a[1][0]] + a[2:], r"x1 must have shape \(B, C, H, W\)"),
]

#: Rejected by the public op, on every route and backend.
BAD_ARGUMENTS = KERNEL_BAD[:3] + KERNEL_BAD[6:] + [
    (lambda a: [a[0].long(), a[1].long()] + a[2:], "x1 must be a floating tensor"),
]


@pytest.mark.parametrize("impl", IMPLS + TRITON)
@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("mutate,message", KERNEL_BAD)
def test_kernels_reject_bad_input(impl, backward, mutate, message):
    """Called directly (no Python check in front), each implementation names the bad argument."""
    check_kernel_rejects(OP, impl, backward, mutate, message)


@pytest.mark.parametrize("impl", IMPLS + TRITON)
def test_kernels_reject_unsupported_dtype_and_bad_grad(impl):
    check_kernel_rejects_unsupported_dtype_and_bad_grad(OP, impl)


def test_device_mismatch_is_reported():
    check_device_mismatch_is_reported(OP)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_public_call_checks_arguments_once(backend, monkeypatch):
    check_public_call_checks_arguments_once(OP, backend, monkeypatch)


@pytest.mark.parametrize("mutate,message", KERNEL_BAD[:1])
def test_router_still_checks_direct_calls(mutate, message):
    check_router_still_checks_direct_calls(OP, mutate, message)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("mutate,message", BAD_ARGUMENTS)
def test_bad_arguments(route, backend, mutate, message):
    check_bad_arguments(OP, route, backend, mutate, message)
