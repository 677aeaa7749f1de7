"""channel_attention_residual, every implementation side by side (pytest-benchmark).

    pytest benchmarks/test_op_channel_attention_residual.py --benchmark-only --benchmark-json=car.json

Shapes are DeFiAN's RCAB tails: C = 32 (DeFiAN-S) and 64 (DeFiAN-L), reduction 16, B = 1, on 32x32 to
96x96 LR feature maps (DIN_FAST_BENCH_CHANNELS, DIN_FAST_BENCH_SIZES, comma-separated); rounds:
DIN_FAST_BENCH_ROUNDS (15). 50 of these run per DeFiAN-S forward, 200 per DeFiAN-L.
"""

from __future__ import annotations

from common import env_ints, op_benchmark

SHAPES = [dict(b=1, c=c, h=s, w=s, reduction=16) for c in env_ints("DIN_FAST_BENCH_CHANNELS", "32,64")
          for s in env_ints("DIN_FAST_BENCH_SIZES", "32,48,96")]

test_channel_attention_residual = op_benchmark(
    "channel_attention_residual", SHAPES, "B{b}-C{c}-{h}x{w}", "{op} {mode} B{b} C{c} {h}x{w} fp32")
