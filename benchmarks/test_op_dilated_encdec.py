"""``dilated_encdec`` (DeFiAN's DiEnDec + gate), every implementation side by side, forward and
forward+backward, at DeFiAN's feature-map sizes.

    pytest benchmarks/test_op_dilated_encdec.py --benchmark-only --benchmark-json=encdec.json

Default: B=1, 96² on CPU; B=16, 256² on a GPU (DeFiAN's GPU point of issue 4). Full matrix
(DIN_FAST_BENCH_FULL=1, or DIN_FAST_BENCH_ENCDEC_SHAPES set): ``B×S`` items, default
``1x48,1x128,4x128`` (the LR image: 48² training patches to 128² tiles).
"""

from __future__ import annotations

from common import env_tuples, op_benchmark, selection

SHAPES = selection(
    cpu=dict(b=1, h=96, w=96), gpu=dict(b=16, h=256, w=256),
    matrix=lambda: [dict(b=b, h=s, w=s)
                    for b, s in env_tuples("DIN_FAST_BENCH_ENCDEC_SHAPES", "1x48,1x128,4x128", "x")],
    env=("DIN_FAST_BENCH_ENCDEC_SHAPES",))

test_dilated_encdec = op_benchmark("dilated_encdec", SHAPES, "B{b} {h}x{w}")
