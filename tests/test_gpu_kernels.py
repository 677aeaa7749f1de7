"""Every GPU implementation (cuda, triton) of every op, run on a CUDA device, against float64.

Runs only where CUDA is available (``scripts/gpu_check.sh`` runs it on a lent GPU machine); without a
GPU the Triton kernels are checked under the interpreter by the op tests and the CUDA kernels by the
emulation tests. For each op, implementation and dtype: forward and every input/parameter gradient at
odd multi-block shapes (tests/op_inputs.GPU_SHAPES), measured as ‖out − ref‖ / ‖ref‖ against the
reference computed in float64 on the CPU from the same rounded inputs and upstream gradient. Fresh random
inputs each run (the seed is in the failure message); freed cached device memory is filled with NaN
before each call, so an output element a kernel forgets to write fails instead of passing on zeros.
"""

from __future__ import annotations

import math

import pytest
import torch

import din_fast
from din_fast import backends, ops
from op_inputs import ARGS, GPU_SHAPES, flat, rebuild, requiring_grad

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

#: ‖error‖ / ‖reference‖ bounds (forward, gradients). float32 arithmetic lands far under 1e-5 here;
#: a bfloat16 / float16 result carries its own rounding (2^-9 / 2^-12 relative) plus a few roundings of
#: intermediates; gradients of parameters sum B·H·W products.
TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.float16: (3e-3, 1e-2), torch.bfloat16: (2e-2, 5e-2)}
#: Triton kernels compile per dtype (seconds each); float16 shares bfloat16's code path there.
DTYPES = {"cuda": (torch.float32, torch.float16, torch.bfloat16), "triton": (torch.float32, torch.bfloat16)}
CASES = [(op, impl, dtype) for op in backends.op_names() for impl in DTYPES for dtype in DTYPES[impl]]


def poison_cached_memory() -> None:
    """Fill free blocks of the caching allocator with NaN (small-pool and large-pool sizes), so tensors
    allocated next start as NaN."""
    blocks = [torch.full((2**17,), math.nan, device="cuda") for _ in range(16)]  # 512 KiB: small pool
    blocks.append(torch.full((2**23,), math.nan, device="cuda"))  # 32 MiB: large pool
    del blocks


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """‖got − expected‖ / ‖expected‖ in float64; inf when ``got`` has a non-finite element."""
    got64 = got.detach().to("cpu", torch.float64)
    if not torch.isfinite(got64).all():
        return math.inf
    return float((got64 - expected).norm() / expected.norm().clamp_min(1e-300))


def _case_id(case: tuple) -> str:
    op, impl, dtype = case
    return f"{op}-{impl}-{str(dtype).removeprefix('torch.')}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_forward_and_gradients_against_float64(case):
    op, impl, dtype = case
    reason = backends.unavailable_reason(op, impl, "cuda", dtype)
    if reason is not None:
        pytest.skip(reason)
    seed = torch.seed()
    gen = torch.Generator().manual_seed(seed)
    args64 = ARGS[op](**GPU_SHAPES[op], generator=gen)
    rounded = [t.to(dtype) for t in flat(args64)]
    ref_args = requiring_grad(rebuild(args64, [t.double() for t in rounded]))
    expected = getattr(ops.reference, op)(*ref_args)
    grad = torch.randn(expected.shape, dtype=torch.float64, generator=gen).to(dtype)
    expected_grads = torch.autograd.grad(expected, flat(ref_args), grad.double())

    args = requiring_grad(rebuild(args64, [t.cuda() for t in rounded]))
    with din_fast.use_backend(impl):
        poison_cached_memory()
        out = getattr(ops, op)(*args)
        poison_cached_memory()
        grads = torch.autograd.grad(out, flat(args), grad.cuda())
    assert out.dtype == dtype and out.device == flat(args)[0].device and out.shape == expected.shape
    forward_tol, grad_tol = TOLERANCE[dtype]
    where = f"{op} {impl} {dtype} at {GPU_SHAPES[op]} (seed {seed})"
    err = relative_error(out, expected.detach())
    assert err <= forward_tol, f"{where}: forward ‖error‖/‖ref‖ = {err:.2e} > {forward_tol:.0e}"
    for i, (g, e) in enumerate(zip(grads, expected_grads)):
        err = relative_error(g, e)
        assert err <= grad_tol, f"{where}: gradient {i} ‖error‖/‖ref‖ = {err:.2e} > {grad_tol:.0e}"


@pytest.mark.parametrize("impl", tuple(DTYPES))
@pytest.mark.parametrize("op", backends.op_names())
def test_channels_last_and_strided_inputs_give_the_contiguous_result(op, impl):
    """The kernels' layout handling on the device: every 4-D argument channels_last, or a strided view."""
    reason = backends.unavailable_reason(op, impl, "cuda", torch.float32)
    if reason is not None:
        pytest.skip(reason)
    args = ARGS[op](**GPU_SHAPES[op])
    args = rebuild(args, [t.float().cuda() for t in flat(args)])
    with din_fast.use_backend(impl), torch.no_grad():
        plain = getattr(ops, op)(*args)
        for relayout in (lambda t: t.contiguous(memory_format=torch.channels_last), strided):
            moved = rebuild(args, [relayout(t) if t.dim() == 4 else t for t in flat(args)])
            torch.testing.assert_close(getattr(ops, op)(*moved), plain, rtol=1e-5, atol=1e-5)


def strided(t: torch.Tensor) -> torch.Tensor:
    """The values of ``t`` in a view whose last dimension has stride 2."""
    wide = t.new_full((*t.shape[:-1], 2 * t.shape[-1]), math.nan)
    wide[..., ::2] = t
    return wide[..., ::2]
