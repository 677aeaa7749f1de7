"""``conv3x3`` benchmarks: every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_conv3x3.py --benchmark-only --benchmark-json=conv3x3.json

The models' 3x3 convolutions (Cin → Cout). Default: 64→64 (DIN's and DeFiAN-L's), B=1, 96² on CPU;
B=8, 256² on a GPU (where cuDNN is the implementation: no din_fast kernel). Full matrix
(DIN_FAST_BENCH_FULL=1, or one of the variables set): DIN's dense-block convs 64→32 and 224→64, 64→64
and DeFiAN-S's 32→32 (DIN_FAST_BENCH_CONVS, ``cin:cout`` pairs) × 48² (training patch) and 96²
(DIN_FAST_BENCH_SIZES) × batch 1 and 4 (DIN_FAST_BENCH_BATCHES).
"""

from __future__ import annotations

from common import env_ints, env_tuples, op_benchmark, selection

SHAPES = selection(
    cpu=dict(b=1, cin=64, cout=64, h=96, w=96), gpu=dict(b=8, cin=64, cout=64, h=256, w=256),
    matrix=lambda: [dict(b=b, cin=cin, cout=cout, h=s, w=s)
                    for cin, cout in env_tuples("DIN_FAST_BENCH_CONVS", "64:32,224:64,64:64,32:32", ":")
                    for s in env_ints("DIN_FAST_BENCH_SIZES", "48,96")
                    for b in env_ints("DIN_FAST_BENCH_BATCHES", "1,4")],
    env=("DIN_FAST_BENCH_CONVS", "DIN_FAST_BENCH_SIZES", "DIN_FAST_BENCH_BATCHES"))

test_conv3x3 = op_benchmark("conv3x3", SHAPES, "B{b} {cin}->{cout} {h}x{w}")
