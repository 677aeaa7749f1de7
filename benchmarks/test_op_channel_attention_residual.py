"""channel_attention_residual, every implementation side by side (pytest-benchmark).

    pytest benchmarks/test_op_channel_attention_residual.py --benchmark-only --benchmark-json=car.json

Shapes are DeFiAN's RCAB tails (reduction 16; 50 of these run per DeFiAN-S forward, 200 per DeFiAN-L).
Default: C = 64, B=1, 96² on CPU; B=16, 256² on a GPU. Full matrix (DIN_FAST_BENCH_FULL=1, or one of
the variables set): C from DIN_FAST_BENCH_CHANNELS (``32,64``) × LR sizes from DIN_FAST_BENCH_SIZES
(``32,48,96``), B = 1.
"""

from __future__ import annotations

from common import env_ints, op_benchmark, selection

SHAPES = selection(
    cpu=dict(b=1, c=64, h=96, w=96, reduction=16), gpu=dict(b=16, c=64, h=256, w=256, reduction=16),
    matrix=lambda: [dict(b=1, c=c, h=s, w=s, reduction=16)
                    for c in env_ints("DIN_FAST_BENCH_CHANNELS", "32,64")
                    for s in env_ints("DIN_FAST_BENCH_SIZES", "32,48,96")],
    env=("DIN_FAST_BENCH_CHANNELS", "DIN_FAST_BENCH_SIZES"))

test_channel_attention_residual = op_benchmark("channel_attention_residual", SHAPES, "B{b} C{c} {h}x{w}")
