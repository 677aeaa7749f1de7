"""channel_spatial_attention, every implementation side by side (pytest-benchmark).

    pytest benchmarks/test_op_channel_spatial_attention.py --benchmark-only --benchmark-json=csa.json

Shapes are DRFN's residual attention groups: C = 64, reduction 16. Default: B=1, 64² on CPU (the
issue's target: forward+backward >= 2x the reference); B=8, 128² on a GPU. Full matrix
(DIN_FAST_BENCH_FULL=1): B1 64² and B4 96². Forward cases also record the peak memory of one call
(``extra_info["peak_mib"]``, CPU: allocations seen by the torch profiler).
"""

from __future__ import annotations

from common import op_benchmark, selection

SHAPES = selection(cpu=dict(b=1, c=64, h=64, w=64), gpu=dict(b=8, c=64, h=128, w=128),
                   matrix=lambda: [dict(b=1, c=64, h=64, w=64), dict(b=4, c=64, h=96, w=96)], env=())

test_channel_spatial_attention = op_benchmark("channel_spatial_attention", SHAPES, "B{b} C{c} {h}x{w}",
                                              peak_memory=True)
