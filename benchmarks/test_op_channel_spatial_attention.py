"""channel_spatial_attention, every implementation side by side (pytest-benchmark).

    pytest benchmarks/test_op_channel_spatial_attention.py --benchmark-only --benchmark-json=csa.json

Shapes are DRFN's residual attention groups: C = 64, reduction 16, on 64x64 and 96x96 LR feature maps
(the issue's target: forward+backward >= 2x the reference). Forward cases also record the peak memory
of one call (``extra_info["peak_mib"]``, CPU: allocations seen by the torch profiler).
"""

from __future__ import annotations

from common import op_benchmark

SHAPES = [dict(b=1, c=64, h=64, w=64), dict(b=4, c=64, h=96, w=96)]

test_channel_spatial_attention = op_benchmark(
    "channel_spatial_attention", SHAPES, "B{b}-C{c}-{h}x{w}", "{op}-{mode}-B{b}-C{c}-{h}x{w}",
    id_order=("provider", "shape", "mode"), peak_memory=True)
