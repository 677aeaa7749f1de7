"""criss_cross_attention, every implementation side by side (pytest-benchmark).

    pytest benchmarks/test_op_criss_cross_attention.py --benchmark-only --benchmark-json=cca.json

Shapes are CIRN's ISAB: C = 64 value channels, C/8 = 8 query/key channels, on 64x64 (the issue's target:
forward >= 3x the reference, forward memory <= 1/4) and 32x48 maps. Each forward case also records the
peak memory of one call (``extra_info["peak_mib"]``, CPU: allocations seen by the torch profiler; the
C++ kernel's per-thread scratch of 4·(H + W + C + 1)·64 values is not among them).
"""

from __future__ import annotations

import pytest
import torch

from common import MODES, PROVIDERS, bench, op_callable, skip_unavailable
from din_fast.bench import _cpu_peak_mib
from op_inputs import criss_cross_attention_args

OP = "criss_cross_attention"
SHAPES = [dict(b=1, c=64, cq=8, h=64, w=64), dict(b=2, c=64, cq=8, h=32, w=48)]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s['b']}-C{s['c']}-{s['h']}x{s['w']}")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_criss_cross_attention(benchmark, provider, shape, mode):
    skip_unavailable(provider, OP, DEVICE, torch.float32)
    args = criss_cross_attention_args(**shape, dtype=torch.float32, device=DEVICE)
    group = f"{OP}-{mode}-B{shape['b']}-C{shape['c']}-{shape['h']}x{shape['w']}"
    bench(benchmark, provider, OP, args, mode, group)
    if DEVICE.type == "cpu" and mode == "forward":
        benchmark.extra_info["peak_mib"] = _cpu_peak_mib(op_callable(provider, OP, args, mode))
