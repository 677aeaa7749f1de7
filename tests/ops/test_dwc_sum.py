"""``dwc_sum`` (DIN's weighted sum of K feature maps, per channel): every implementation that can run here
against the float64 reference, forward and backward (every gradient), on awkward shapes and layouts;
gradcheck and opcheck through each implementation; bad input rejected by the kernels themselves and by
the public op."""

import pytest
import torch

from impl_checks import (ROUTES, check_bad_arguments, check_device_mismatch_is_reported, check_kernel_rejects,
                         check_kernel_rejects_unsupported_dtype_and_bad_grad, check_kernels_against_reference,
                         check_public_call_checks_arguments_once, check_router_still_checks_direct_calls,
                         gradcheck, impl_params, opcheck, with_layouts)
from op_inputs import ARGS, GRAD_SHAPES, requiring_grad

OP = "dwc_sum"

#: The implementations that run on CPU tensors here; Triton runs in the interpreter (slow, so it gets
#: its own, smaller cases below).
IMPLS = impl_params(OP, "cpp")
TRITON = impl_params(OP, "triton")

#: Shapes with odd H and W, B > 1 and C not a multiple of 8 (nor of the SIMD width).
SHAPES = [dict(k=4, b=3, c=13, h=7, w=9), dict(k=1, b=2, c=5, h=5, w=1), dict(k=6, b=1, c=3, h=33, w=37),
          # the C++ kernel's other k-specialised loops (2, 3, 5) and its any-k loops (k > 6)
          dict(k=2, b=2, c=3, h=5, w=7), dict(k=3, b=1, c=6, h=9, w=3),
          dict(k=5, b=2, c=17, h=4, w=5), dict(k=7, b=2, c=5, h=3, w=11)]
#: Interpreter-sized cases: odd sizes, B > 1, C not a power of two; k = 7 > 6 runs in two chunks.
TRITON_SHAPES = [dict(k=3, b=2, c=5, h=3, w=5), dict(k=7, b=1, c=3, h=2, w=3)]

LAYOUTS = [("contiguous",), ("channels_last",), ("non_contiguous",), ("channels_last", "contiguous")]


def _terms(shape):
    """Length of the longest reduction in the forward/backward (bounds the rounding error)."""
    return shape["b"] * shape["h"] * shape["w"] * shape["k"]


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


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck(impl, layout):
    assert gradcheck(OP, impl, requiring_grad(with_layouts(ARGS[OP](**GRAD_SHAPES[OP]), (layout,))))


@pytest.mark.parametrize("impl", IMPLS + TRITON)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(impl, layout):
    opcheck(OP, impl, requiring_grad(with_layouts(ARGS[OP](**GRAD_SHAPES[OP]), (layout,))))


# -- bad input -------------------------------------------------------------------------------------------

#: Rejected by the kernels themselves (called directly, forward and backward).
KERNEL_BAD = [
    (lambda a: [[], a[1][:0], a[2]], "non-empty list"),
    (lambda a: [a[0], a[1][:2], a[2]], r"weight must have shape [(\[]3, 8"),
    (lambda a: [a[0][:2] + [a[0][2][:1]], a[1], a[2]], r"inputs\[2\] must have shape"),
    (lambda a: [a[0][:1] + [a[0][1].float()] + a[0][2:], a[1], a[2]], r"inputs\[1\] has dtype"),
    (lambda a: [a[0], a[1], a[2][:3]], "bias must have shape"),
    (lambda a: [[t[:, :, :, :0] for t in a[0]], a[1], a[2]], r"inputs\[0\] must not be empty"),
]

#: Rejected by the public op, on every route and backend (its message has the Python check's parentheses).
BAD_ARGUMENTS = [KERNEL_BAD[0], (KERNEL_BAD[1][0], r"weight must have shape \(3, 8\)"), KERNEL_BAD[2],
                 KERNEL_BAD[4]]


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


@pytest.mark.parametrize("mutate,message", KERNEL_BAD[2:3])
def test_router_still_checks_direct_calls(mutate, message):
    check_router_still_checks_direct_calls(OP, mutate, message)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("mutate,message", BAD_ARGUMENTS)
def test_bad_arguments(route, backend, mutate, message):
    check_bad_arguments(OP, route, backend, mutate, message)
