"""``criss_cross_attention`` (CCNet): every implementation that runs here (cpp; triton under the interpreter)
against the float64 reference — odd and non-square sizes, batch > 1, lines of length 1, channel counts
off the kernels' register blocks, non-contiguous and channels_last inputs, gradients — the C++ kernels'
own argument checks and the public op's."""

import pytest
import torch

from impl_checks import (IMPLS, ROUTES, check_bad_arguments, check_cpp_kernel_rejects,
                         check_cpp_layouts_match_contiguous, check_forward, check_forward_and_backward,
                         gradcheck, skip_unless_runs)
from op_inputs import ARGS, GRAD_SHAPES, requiring_grad

OP = "criss_cross_attention"
# The interpreter runs Triton programs one by one in Python: its shapes stay tiny.
SHAPES = {
    "cpp": [dict(b=2, c=8, h=5, w=7, cq=3), dict(b=3, c=37, h=9, w=4, cq=8),
            dict(b=1, c=64, h=13, w=11, cq=8), dict(b=2, c=5, h=1, w=6, cq=2),
            dict(b=2, c=33, h=7, w=1, cq=1),
            # rows of whole vectors (no padded copy) and several column tiles of the forward, the last one
            # short and ending in a partial vector
            dict(b=2, c=9, h=6, w=32, cq=4), dict(b=1, c=6, h=3, w=83, cq=3)],
    "triton": [dict(b=2, c=5, h=5, w=7, cq=3), dict(b=1, c=4, h=1, w=6, cq=2),
               dict(b=2, c=3, h=6, w=1, cq=2)],
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_backward_match_float64_reference(impl, dtype):
    check_forward_and_backward(OP, impl, dtype, SHAPES[impl], seed=0)


def test_cpp_non_contiguous_and_channels_last():
    check_cpp_layouts_match_contiguous(OP)


def test_gradcheck_cpp():
    skip_unless_runs(OP, "cpp", torch.float64)
    # fast mode (random projections of the Jacobian); tests/test_every_op.py checks the full Jacobian of the
    # "auto" route, which is this kernel wherever it is built.
    assert gradcheck(OP, "cpp", requiring_grad(ARGS[OP](**GRAD_SHAPES[OP])), fast=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_criss_cross_attention_large_energies_stay_finite(impl):
    """Energies of ±80: the online softmax must neither overflow nor lose the maximum."""
    skip_unless_runs(OP, impl, torch.float32)
    q, k, v = ARGS[OP](b=1, c=4, h=6, w=5, cq=2)
    check_forward(OP, impl, [q * 8, k * 8, v], torch.float32)


def test_criss_cross_attention_triton_line_limit():
    skip_unless_runs(OP, "triton", torch.float32)
    from din_fast.kernels import criss_cross_attention as kernel

    q = torch.randn(1, 2, 1, kernel.MAX_LINE + 1)
    with pytest.raises(ValueError, match="H, W <= 256"):
        kernel.forward(q, q, q)


@pytest.mark.parametrize("mutate,message", [
    (lambda a: [a[0], a[1][:, :1], a[2]], "k must have shape"),
    (lambda a: [a[0], a[1], a[2][..., :3]], "v must have shape"),
    (lambda a: [a[0].half(), a[1].half(), a[2].half()], "float32 or float64"),
    (lambda a: [a[0][:, :, :0], a[1][:, :, :0], a[2][:, :, :0]], "q must not be empty"),
])
def test_cpp_kernels_check_their_arguments(mutate, message):
    """The private C++ ops check inputs themselves (ValueError naming the argument)."""
    check_cpp_kernel_rejects(OP, mutate, message)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("mutate,message", [
    (lambda a: [a[0], a[1][:, :2], a[2]], "k must have shape"),
    (lambda a: [a[0], a[1], a[2][:, :, :4]], "v must have shape"),
    (lambda a: [a[0], a[1], a[2][:1]], "v must have shape"),
    (lambda a: [a[0], a[1], a[2].float()], "v has dtype"),
    (lambda a: [a[0][:, :0], a[1][:, :0], a[2]], "q must not be empty"),
    (lambda a: [a[0][0], a[1][0], a[2]], r"q must have shape \(B, C, H, W\)"),
    (lambda a: [a[0], a[1], a[2].long()], "v must be a floating tensor"),
])
def test_bad_arguments(route, backend, mutate, message):
    check_bad_arguments(OP, route, backend, mutate, message)
