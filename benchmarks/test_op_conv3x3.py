"""``conv3x3`` benchmarks: every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_conv3x3.py --benchmark-only --benchmark-json=conv3x3.json

The models' 3x3 convolutions (Cin → Cout): DIN's dense-block convs 64→32 and 224→64 and its 64→64,
DeFiAN-S's 32→32 (DeFiAN-L's 64→64), on 48² (training patch) and 96² feature maps, batch 1 and 4.
Environment (comma-separated) narrows or widens them: DIN_FAST_BENCH_CONVS (``cin:cout`` pairs),
DIN_FAST_BENCH_SIZES, DIN_FAST_BENCH_BATCHES; rounds: DIN_FAST_BENCH_ROUNDS (15).
"""

from __future__ import annotations

import os

import pytest
import torch

from common import MODES, PROVIDERS, bench, skip_unavailable
from op_inputs import conv3x3_args

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _ints(name: str, default: str) -> list[int]:
    return [int(v) for v in os.environ.get(name, default).split(",") if v]


CONVS = [tuple(int(v) for v in pair.split(":"))
         for pair in os.environ.get("DIN_FAST_BENCH_CONVS", "64:32,224:64,64:64,32:32").split(",") if pair]
SHAPES = [(b, cin, cout, s) for cin, cout in CONVS for s in _ints("DIN_FAST_BENCH_SIZES", "48,96")
          for b in _ints("DIN_FAST_BENCH_BATCHES", "1,4")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-{s[1]}to{s[2]}-{s[3]}x{s[3]}")
def test_conv3x3(benchmark, provider, mode, shape):
    b, cin, cout, s = shape
    dtype = torch.float32
    skip_unavailable(provider, "conv3x3", DEVICE, dtype)
    args = conv3x3_args(b=b, cin=cin, cout=cout, h=s, w=s, dtype=dtype, device=DEVICE)
    bench(benchmark, provider, "conv3x3", args, mode, group=f"conv3x3 {mode} B{b} {cin}->{cout} {s}x{s} fp32")
