"""Every CUDA kernel of csrc/cuda/, run on CPU tensors by the emulation of the CUDA execution model
(tests/cuda_emulation.py, csrc/cuda_emulation/runtime.h), against the float64 reference.

For each op: the CUDA op's forward and backward (its launcher and kernels, the source the GPU build
compiles) in float32, float64, float16 and bfloat16, on inputs rounded to that dtype, against
``ops.reference`` in float64 on the same rounded values (and its autograd for the gradients), with the
dtype-derived tolerances of tests/impl_checks.py. The shapes are odd, B = 2, and large enough for
several blocks along every grid dimension with tiles straddling the border, for H·W split over several
reduction blocks, and for both the 16-byte vector and the scalar paths; the kernels with a
channels_last path run it too. Outputs are allocated NaN-filled (deterministic mode), so an element a
kernel forgets to write fails. Run them alone with ``python -m pytest tests -m cuda_emulation``.
"""

from __future__ import annotations

import pytest
import torch

import cuda_emulation
from din_fast import ops
from impl_checks import FORWARD_EPS, GRAD_EPS, assert_close_to
from op_inputs import ARGS, flat, rebuild, requiring_grad

pytestmark = pytest.mark.cuda_emulation

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

#: (op, case id, shape kwargs, channels_last). Grids: channel_sums / dwc_sum backward split H·W into
#: 2048+-element parts (H·W > 2048 gives two splits per (b, c) or b); mshf tiles 16×16 (x 3, y 2, z = B);
#: dilated_encdec tiles 32×8 (forward) and 32×4 (weight gradients): x 2, y 3 / 5, z = B. "vec": the
#: contiguous axis a multiple of 8 (every dtype's 16-byte vector); "odd": scalar path. channels_last with
#: C = 8 keeps each thread on one channel group (registers), C = 5 adds through shared-memory atomics.
CASES = [
    ("asyca", "odd", dict(b=2, c=5, h=37, w=61, reduction=2), False),
    ("asyca", "vec", dict(b=2, c=8, h=32, w=72, reduction=4), False),
    ("asyca", "channels_last-vec", dict(b=2, c=8, h=37, w=61, reduction=4), True),
    ("asyca", "channels_last-odd", dict(b=2, c=5, h=37, w=61, reduction=2), True),
    ("channel_attention_residual", "odd", dict(b=2, c=5, h=37, w=61, reduction=2), False),
    ("channel_attention_residual", "vec", dict(b=2, c=8, h=32, w=72, reduction=4), False),
    ("channel_attention_residual", "channels_last-vec", dict(b=2, c=8, h=37, w=61, reduction=4), True),
    ("channel_attention_residual", "channels_last-odd", dict(b=2, c=5, h=37, w=61, reduction=2), True),
    ("dwc_sum", "odd", dict(k=3, b=2, c=5, h=37, w=61), False),
    ("dwc_sum", "vec-7-inputs", dict(k=7, b=2, c=3, h=32, w=72), False),
    ("dwc_sum", "channels_last-vec", dict(k=3, b=2, c=8, h=37, w=61), True),
    ("dwc_sum", "channels_last-odd", dict(k=3, b=2, c=5, h=37, w=61), True),
    ("mshf", "odd", dict(b=2, c=2, h=19, w=37), False),
    # channels_last reductions past a launch's 48 KiB of shared memory (launch.cuh kMaxDynamicShared):
    # channel_sums keeps ns·C accumulators per block (ns = 2 forward, 4 backward) and sums NCHW copies
    # beyond; dwc_sum's backward keeps (k + 1)·C and takes fewer inputs per launch (C = 1000: 5 in
    # float64), or NCHW copies when not even one fits (C = 3100 in float64).
    ("channel_attention_residual", "channels_last-wide", dict(b=1, c=3100, h=3, w=5, reduction=1550), True),
    ("dwc_sum", "channels_last-wide", dict(k=7, b=1, c=1000, h=3, w=5), True),
    ("dwc_sum", "channels_last-wider", dict(k=2, b=1, c=3100, h=3, w=5), True),
    ("dilated_encdec", "odd", dict(b=2, h=19, w=37), False),
]


@pytest.fixture(scope="module")
def emulated():
    return cuda_emulation.load()


def _case_id(case: tuple) -> str:
    return f"{case[0]}-{case[1]}"


def _inputs(op: str, shape: dict, channels_last: bool, dtype: torch.dtype) -> tuple[list, list]:
    """The op's arguments rounded to ``dtype`` and the same values in float64."""
    args64 = ARGS[op](**shape, generator=torch.Generator().manual_seed(0))
    if channels_last:
        args64 = rebuild(args64, [t.contiguous(memory_format=torch.channels_last)
                                  if t.dim() == 4 and t.shape[2] > 1 else t for t in flat(args64)])
    args = rebuild(args64, [t.to(dtype) for t in flat(args64)])
    return args, rebuild(args64, [t.to(torch.float64) for t in flat(args)])


def _emulate(fn, *args):
    """Runs an emulated op with uninitialised tensors filled with NaN."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return fn(*args)
    finally:
        torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_forward(emulated, case, dtype):
    op, _, shape, channels_last = case
    args, exact = _inputs(op, shape, channels_last, dtype)
    got = _emulate(getattr(emulated, f"_{op}_cuda"), *args)
    expected = getattr(ops.reference, op)(*exact)
    assert got.dtype == dtype and got.shape == expected.shape
    assert_close_to(got, expected, dtype, FORWARD_EPS)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_backward(emulated, case, dtype):
    op, _, shape, channels_last = case
    args, exact = _inputs(op, shape, channels_last, dtype)
    ref_args = requiring_grad(exact)
    out = getattr(ops.reference, op)(*ref_args)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = torch.autograd.grad(out, flat(ref_args), grad.to(torch.float64))
    got = flat(list(_emulate(getattr(emulated, f"_{op}_backward_cuda"), grad, *args)))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == dtype and g.shape == e.shape
        assert_close_to(g, e, dtype, GRAD_EPS)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
@pytest.mark.parametrize("case", [c for c in CASES if c[1] in ("odd", "channels_last-odd")], ids=_case_id)
def test_nonfinite_input(emulated, case, dtype):
    """A NaN and an infinity in the first input propagate as in the reference: NaN and inf in the same
    places of the output and of every gradient (ReLU keeps NaN; its derivative passes the gradient)."""
    op, _, shape, channels_last = case
    args, exact = _inputs(op, shape, channels_last, dtype)
    for a in (args, exact):
        x = flat(a)[0]
        x[0, 0, 1, 2] = float("nan")
        x[-1, -1, -2, -3] = float("inf")
    got = _emulate(getattr(emulated, f"_{op}_cuda"), *args)
    assert_close_to(got, getattr(ops.reference, op)(*exact), dtype, FORWARD_EPS)
    ref_args = requiring_grad(exact)
    out = getattr(ops.reference, op)(*ref_args)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = torch.autograd.grad(out, flat(ref_args), grad.to(torch.float64))
    got = flat(list(_emulate(getattr(emulated, f"_{op}_backward_cuda"), grad, *args)))
    for g, e in zip(got, expected):
        assert_close_to(g, e, dtype, GRAD_EPS)


def test_every_cuda_op_is_emulated(emulated):
    """Each csrc/cuda/<op>.cu has an emulated forward and backward, and every op with a cuda kernel
    is among the cases above."""
    assert {case[0] for case in CASES} == set(cuda_emulation.OPS)
    for op in cuda_emulation.OPS:
        for name in (f"_{op}_cuda", f"_{op}_backward_cuda"):
            key = f"{cuda_emulation.NAMESPACE}::{name}"
            assert torch._C._dispatch_has_kernel_for_dispatch_key(key, "CPU")
