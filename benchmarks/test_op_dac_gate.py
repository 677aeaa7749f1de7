"""``dac_gate`` benchmarks: every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_dac_gate.py --benchmark-only --benchmark-json=dac_gate.json

DeFiAN shapes: C = 32 (DeFiAN-S) and 64 (-L) on 48² to 128² feature maps, batch 1 and 4 (the LR
patch of training is 48², whole-image inference is larger). Environment (comma-separated) narrows or
widens them: DIN_FAST_BENCH_CHANNELS, DIN_FAST_BENCH_SIZES, DIN_FAST_BENCH_BATCHES; rounds:
DIN_FAST_BENCH_ROUNDS (15).
"""

from __future__ import annotations

import os

import pytest
import torch

from common import MODES, PROVIDERS, bench, skip_unavailable
from op_inputs import dac_gate_args

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _ints(name: str, default: str) -> list[int]:
    return [int(v) for v in os.environ.get(name, default).split(",") if v]


SHAPES = [(b, c, s) for c in _ints("DIN_FAST_BENCH_CHANNELS", "32,64")
          for s in _ints("DIN_FAST_BENCH_SIZES", "48,128") for b in _ints("DIN_FAST_BENCH_BATCHES", "1,4")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-C{s[1]}-{s[2]}x{s[2]}")
def test_dac_gate(benchmark, provider, mode, shape):
    b, c, s = shape
    dtype = torch.float32
    skip_unavailable(provider, "dac_gate", DEVICE, dtype)
    args = dac_gate_args(b=b, c=c, h=s, w=s, dtype=dtype, device=DEVICE)
    bench(benchmark, provider, "dac_gate", args, mode, group=f"dac_gate {mode} B{b} C{c} {s}x{s} fp32")
