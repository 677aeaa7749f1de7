"""``asyca`` at DIN's shapes, every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_asyca.py --benchmark-only --benchmark-json=asyca.json

Shapes: C = 64 (DIN's F), r = 4 (journal code). Default: B=1, 96² on CPU; B=8, 256² on a GPU (issue 3's
point). Full matrix (DIN_FAST_BENCH_FULL=1, or either variable set): LR sizes from
DIN_FAST_BENCH_OP_SIZES (``48,128``) × batches from DIN_FAST_BENCH_OP_BATCHES (``1,4``).
"""

from __future__ import annotations

from common import env_ints, op_benchmark, selection

SHAPES = selection(
    cpu=dict(b=1, c=64, h=96, w=96, reduction=4), gpu=dict(b=8, c=64, h=256, w=256, reduction=4),
    matrix=lambda: [dict(b=b, c=64, h=s, w=s, reduction=4)
                    for b in env_ints("DIN_FAST_BENCH_OP_BATCHES", "1,4")
                    for s in env_ints("DIN_FAST_BENCH_OP_SIZES", "48,128")],
    env=("DIN_FAST_BENCH_OP_BATCHES", "DIN_FAST_BENCH_OP_SIZES"))

test_asyca = op_benchmark("asyca", SHAPES, "B{b} C{c} {h}x{w}")
