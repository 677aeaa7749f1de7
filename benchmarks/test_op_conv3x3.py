"""``conv3x3`` benchmarks: every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_conv3x3.py --benchmark-only --benchmark-json=conv3x3.json

The models' 3x3 convolutions (Cin → Cout): DIN's dense-block convs 64→32 and 224→64 and its 64→64,
DeFiAN-S's 32→32 (DeFiAN-L's 64→64), on 48² (training patch) and 96² feature maps, batch 1 and 4.
Environment (comma-separated) narrows or widens them: DIN_FAST_BENCH_CONVS (``cin:cout`` pairs),
DIN_FAST_BENCH_SIZES, DIN_FAST_BENCH_BATCHES; rounds: DIN_FAST_BENCH_ROUNDS (default: benchmarks/common.default_rounds).
"""

from __future__ import annotations

from common import env_ints, env_tuples, op_benchmark

SHAPES = [dict(b=b, cin=cin, cout=cout, h=s, w=s)
          for cin, cout in env_tuples("DIN_FAST_BENCH_CONVS", "64:32,224:64,64:64,32:32", ":")
          for s in env_ints("DIN_FAST_BENCH_SIZES", "48,96")
          for b in env_ints("DIN_FAST_BENCH_BATCHES", "1,4")]

test_conv3x3 = op_benchmark("conv3x3", SHAPES, "B{b}-{cin}to{cout}-{h}x{w}",
                            "conv3x3 {mode} B{b} {cin}->{cout} {h}x{w} fp32")
