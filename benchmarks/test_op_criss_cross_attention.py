"""criss_cross_attention, every implementation side by side (pytest-benchmark).

    pytest benchmarks/test_op_criss_cross_attention.py --benchmark-only --benchmark-json=cca.json

Shapes are CIRN's ISAB: C = 64 value channels, C/8 = 8 query/key channels. Default: B=1, 64² on CPU (the
issue's target: forward >= 3x the reference, forward memory <= 1/4); B=8, 128² on a GPU. Full matrix
(DIN_FAST_BENCH_FULL=1): B1 64² and B2 32x48. Each forward case also records the peak memory of one call
(``extra_info["peak_mib"]``, CPU: allocations seen by the torch profiler; the C++ kernel's per-thread
scratch of 4·(H + W + C + 1)·64 values is not among them).
"""

from __future__ import annotations

from common import op_benchmark, selection

SHAPES = selection(cpu=dict(b=1, c=64, cq=8, h=64, w=64), gpu=dict(b=8, c=64, cq=8, h=128, w=128),
                   matrix=lambda: [dict(b=1, c=64, cq=8, h=64, w=64), dict(b=2, c=64, cq=8, h=32, w=48)],
                   env=())

test_criss_cross_attention = op_benchmark("criss_cross_attention", SHAPES, "B{b} C{c} {h}x{w}",
                                          peak_memory=True)
