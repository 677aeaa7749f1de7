"""``dwc_sum`` at DIN's shapes, every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_dwc_sum.py --benchmark-only --benchmark-json=dwc_sum.json

Shapes: C = 64 (DIN's F), k = 2 and 5 inputs (DIN_FAST_BENCH_OP_KS; k = 5 is a WRDB's last state: x, s0,
s1, s2, y6; k = 2 the smallest, where per-call overhead shows most), LR sizes from
DIN_FAST_BENCH_OP_SIZES (default ``48,128``) and batches from DIN_FAST_BENCH_OP_BATCHES (default
``1,4``; the issue's GPU point is B=8, 256²). float32.
"""

from __future__ import annotations

from common import env_ints, op_benchmark

SHAPES = [dict(k=k, b=b, c=64, h=s, w=s) for k in env_ints("DIN_FAST_BENCH_OP_KS", "2,5")
          for b in env_ints("DIN_FAST_BENCH_OP_BATCHES", "1,4") for s in env_ints("DIN_FAST_BENCH_OP_SIZES", "48,128")]

test_dwc_sum = op_benchmark("dwc_sum", SHAPES, "k{k}-{b}-{h}", "dwc_sum {mode} B={b} C={c} k={k} {h}x{w}",
                            id_order=("shape", "mode", "provider"))
