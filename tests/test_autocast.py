"""Every op under autocast: inputs and parameters are cast to the autocast dtype, so mixing float32
parameters with the half-precision activations autocast's convolutions produce works."""

from __future__ import annotations

import pytest
import torch

import din_fast
from din_fast.ops import _library
from op_inputs import ARGS, flat, rebuild


def _as(args, dtype):
    return rebuild(args, [t.to(dtype) for t in flat(args)])


@pytest.mark.parametrize("entry", ["wrapper", "torch.ops"])
@pytest.mark.parametrize("op", sorted(_library.OPS))  # FusedOp ops; dense_block: its own tests
def test_op_runs_in_autocast_dtype(op, entry):
    args32 = _as(ARGS[op](), torch.float32)
    fn = getattr(din_fast.ops, op) if entry == "wrapper" else getattr(torch.ops.din_fast, op)
    ref = getattr(din_fast.ops.reference, op)(*_as(args32, torch.bfloat16)).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(*args32)
    assert out.dtype == torch.bfloat16
    # same bf16 inputs, so only the implementations' rounding differs: a few bf16 ulps (2^-8 relative)
    torch.testing.assert_close(out.float(), ref, atol=4 * 2**-8, rtol=4 * 2**-8)


def test_float64_inputs_are_not_downcast():
    args = ARGS["dwc_sum"]()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert din_fast.ops.dwc_sum(*args).dtype == torch.float64
