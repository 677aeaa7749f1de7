"""``dwc_sum`` at DIN's shapes, every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_dwc_sum.py --benchmark-only --benchmark-json=dwc_sum.json

Shapes: C = 64 (DIN's F). Default: k = 5 inputs (a WRDB's last state: x, s0, s1, s2, y6), B=1, 96² on
CPU; B=8, 256² on a GPU (issue 3's point). Full matrix (DIN_FAST_BENCH_FULL=1, or one of the variables
set): k from DIN_FAST_BENCH_OP_KS (``2,5``; k = 2 is where per-call overhead shows most) × batches from
DIN_FAST_BENCH_OP_BATCHES (``1,4``) × LR sizes from DIN_FAST_BENCH_OP_SIZES (``48,128``).
"""

from __future__ import annotations

from common import env_ints, op_benchmark, selection

SHAPES = selection(
    cpu=dict(k=5, b=1, c=64, h=96, w=96), gpu=dict(k=5, b=8, c=64, h=256, w=256),
    matrix=lambda: [dict(k=k, b=b, c=64, h=s, w=s) for k in env_ints("DIN_FAST_BENCH_OP_KS", "2,5")
                    for b in env_ints("DIN_FAST_BENCH_OP_BATCHES", "1,4")
                    for s in env_ints("DIN_FAST_BENCH_OP_SIZES", "48,128")],
    env=("DIN_FAST_BENCH_OP_KS", "DIN_FAST_BENCH_OP_BATCHES", "DIN_FAST_BENCH_OP_SIZES"))

test_dwc_sum = op_benchmark("dwc_sum", SHAPES, "k{k} B{b} C{c} {h}x{w}")
