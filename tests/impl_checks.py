"""Shared checks of one op implementation (cpp, triton, cuda) against the float64 reference.

``IMPLS`` are pytest params that skip with the backend's own reason where an implementation cannot run
here (e.g. triton without the interpreter). Tolerances are derived from the dtype: ``k`` machine
epsilons relative to the magnitude of the float64 reference result (``assert_close_to``).
"""

import pytest
import torch

import din_fast
from din_fast import backends, ops
from op_inputs import flat, rebuild, requiring_grad

#: Implementations checked on CPU tensors (triton runs under TRITON_INTERPRET=1, set by conftest).
IMPLS = ("cpp", pytest.param("triton", marks=pytest.mark.triton))
#: Epsilons of forward error (a few dozen rounding steps per output) and of gradients, which sum
#: B·H·W terms per parameter.
FORWARD_EPS, GRAD_EPS = 64, 512


def skip_unless_runs(op: str, impl: str, dtype: torch.dtype) -> None:
    reason = backends.unavailable_reason(op, impl, "cpu", dtype)
    if reason is not None:
        pytest.skip(reason)


def assert_close_to(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, k: int) -> None:
    """|got − expected| ≤ k·eps(dtype)·(|expected| + max(1, max|expected|)), NaNs in the same places.

    The inputs are O(1) (tests/op_inputs.py), so the terms summed into a result are O(1) even where
    they cancel to a tiny value (e.g. a weight gradient summed over a batch): the absolute part of the
    tolerance is relative to at least 1."""
    eps = torch.finfo(dtype).eps
    scale = max(float(expected.detach().nan_to_num().abs().max()), 1.0)
    torch.testing.assert_close(got.to(expected.dtype), expected, rtol=k * eps, atol=k * eps * scale,
                               equal_nan=True)


def gradcheck(op: str, impl: str, args: list) -> bool:
    """float64 gradcheck of the public op with backend ``impl``. Under the Triton interpreter every call
    costs seconds, so there it checks random projections of the Jacobian (fast mode)."""
    fast = impl == "triton" and not torch.cuda.is_available()
    with din_fast.use_backend(impl):
        return torch.autograd.gradcheck(lambda *t: getattr(ops, op)(*rebuild(args, t)), flat(args),
                                        fast_mode=fast)


def run(op: str, impl: str, args: list) -> torch.Tensor:
    """The public op with backend ``impl`` (routing, checks and memory-format handling included)."""
    with din_fast.use_backend(impl):
        return getattr(torch.ops.din_fast, op)(*args)


def check_forward(op: str, impl: str, args64: list, dtype: torch.dtype) -> torch.Tensor:
    """The implementation on ``args64`` cast to ``dtype`` against the float64 reference."""
    expected = getattr(ops.reference, op)(*args64)
    args = rebuild(args64, [t.to(dtype) for t in flat(args64)])
    got = run(op, impl, args)
    assert got.dtype == dtype and got.shape == expected.shape
    assert_close_to(got, expected, dtype, FORWARD_EPS)
    return got


def check_backward(op: str, impl: str, args64: list, dtype: torch.dtype, generator: torch.Generator) -> None:
    """Every gradient of the implementation (through autograd of the public op) against the
    reference's, for one random upstream gradient."""
    ref_args = requiring_grad(args64)
    out = getattr(ops.reference, op)(*ref_args)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=generator)
    expected = torch.autograd.grad(out, flat(ref_args), grad)
    args = requiring_grad(rebuild(args64, [t.to(dtype) for t in flat(args64)]))
    with din_fast.use_backend(impl):
        got = torch.autograd.grad(getattr(ops, op)(*args), flat(args), grad.to(dtype))
    for g, e in zip(got, expected):
        assert g.dtype == dtype
        assert_close_to(g, e, dtype, GRAD_EPS)


def relayouts(t: torch.Tensor) -> dict:
    """The same values as channels_last and as a non-contiguous (W-major) view."""
    return {"channels_last": t.contiguous(memory_format=torch.channels_last),
            "non_contiguous": t.transpose(2, 3).contiguous().transpose(2, 3)}
