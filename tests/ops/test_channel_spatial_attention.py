"""``channel_spatial_attention`` (DRFN's CAM + SAM + residual): every implementation that runs here (cpp;
triton under the interpreter) against the float64 reference — odd and non-square sizes, batch > 1, 1x1
maps, channel counts off the kernels' register blocks, non-contiguous and channels_last inputs,
gradients — the C++ kernels' own argument checks and the public op's."""

import pytest
import torch

from impl_checks import (IMPLS, ROUTES, check_bad_arguments, check_cpp_kernel_rejects,
                         check_cpp_layouts_match_contiguous, check_forward_and_backward, gradcheck,
                         skip_unless_runs)
from op_inputs import ARGS, GRAD_SHAPES, requiring_grad

OP = "channel_spatial_attention"
# The interpreter runs Triton programs one by one in Python: its shapes stay tiny (the 98-tap gate convs
# cost ~10 s per call there).
SHAPES = {
    "cpp": [dict(b=2, c=16, h=5, w=7), dict(b=3, c=32, h=9, w=4, reduction=8), dict(b=1, c=16, h=1, w=1),
            dict(b=2, c=17, h=23, w=19, reduction=4)],
    "triton": [dict(b=1, c=4, h=3, w=5, reduction=2)],
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_backward_match_float64_reference(impl, dtype):
    if impl == "triton" and dtype == torch.float32:
        pytest.skip("interpreter time: the float64 case covers the same kernels")
    check_forward_and_backward(OP, impl, dtype, SHAPES[impl], seed=0)


def test_cpp_non_contiguous_and_channels_last():
    check_cpp_layouts_match_contiguous(OP)


def test_gradcheck_cpp():
    skip_unless_runs(OP, "cpp", torch.float64)
    # fast mode (random projections of the Jacobian); tests/test_every_op.py checks the full Jacobian of the
    # "auto" route, which is this kernel wherever it is built.
    assert gradcheck(OP, "cpp", requiring_grad(ARGS[OP](**GRAD_SHAPES[OP])), fast=True)


@pytest.mark.parametrize("mutate,message", [
    (lambda a: [a[0], a[1][:1]] + a[2:], "skip must have shape"),
    (lambda a: a[:6] + [a[6][..., :5, :5], a[7]], "w_sa must have shape"),
    (lambda a: a[:2] + [a[2].float()] + a[3:], "w_ca1 has dtype"),
])
def test_cpp_kernels_check_their_arguments(mutate, message):
    """The private C++ ops check inputs themselves (ValueError naming the argument)."""
    check_cpp_kernel_rejects(OP, mutate, message)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("mutate,message", [
    (lambda a: [a[0], a[1][:, :, :3]] + a[2:], "skip must have shape"),
    (lambda a: [a[0], a[1], a[2][:, :8]] + a[3:], r"w_ca1 must have shape \(1, 16"),
    (lambda a: a[:5] + [a[5][:3]] + a[6:], "b_ca2 must have shape"),
    (lambda a: a[:6] + [a[6][:, :, :5, :5], a[7]], r"w_sa must have shape \(1, 2, 7, 7\)"),
    (lambda a: a[:7] + [a[7].float()], "b_sa has dtype"),
    (lambda a: [a[0][:, :, :0], a[1][:, :, :0]] + a[2:], "x must not be empty"),
])
def test_bad_arguments(route, backend, mutate, message):
    check_bad_arguments(OP, route, backend, mutate, message)
