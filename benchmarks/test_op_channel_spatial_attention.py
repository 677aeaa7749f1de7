"""channel_spatial_attention, every implementation side by side (pytest-benchmark).

    pytest benchmarks/test_op_channel_spatial_attention.py --benchmark-only --benchmark-json=csa.json

Shapes are DRFN's residual attention groups: C = 64, reduction 16, on 64x64 and 96x96 LR feature maps
(the issue's target: forward+backward >= 2x the reference). Forward cases also record the peak memory
of one call (``extra_info["peak_mib"]``, CPU: allocations seen by the torch profiler).
"""

from __future__ import annotations

import pytest
import torch

from common import MODES, PROVIDERS, bench, op_callable, skip_unavailable
from din_fast.bench import _cpu_peak_mib
from op_inputs import channel_spatial_attention_args

OP = "channel_spatial_attention"
SHAPES = [dict(b=1, c=64, h=64, w=64), dict(b=4, c=64, h=96, w=96)]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s['b']}-C{s['c']}-{s['h']}x{s['w']}")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_channel_spatial_attention(benchmark, provider, shape, mode):
    skip_unavailable(provider, OP, DEVICE, torch.float32)
    args = channel_spatial_attention_args(**shape, dtype=torch.float32, device=DEVICE)
    group = f"{OP}-{mode}-B{shape['b']}-C{shape['c']}-{shape['h']}x{shape['w']}"
    bench(benchmark, provider, OP, args, mode, group)
    if DEVICE.type == "cpu" and mode == "forward":
        benchmark.extra_info["peak_mib"] = _cpu_peak_mib(op_callable(provider, OP, args, mode))
