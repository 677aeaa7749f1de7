"""``asyca`` at DIN's shapes, every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_asyca.py --benchmark-only --benchmark-json=asyca.json

Shapes: C = 64 (DIN's F), r = 4 (journal code), LR sizes from DIN_FAST_BENCH_OP_SIZES (default
``48,128``) and batches from DIN_FAST_BENCH_OP_BATCHES (default ``1,4``; the issue's GPU point is
B=8, 256²). float32.
"""

from __future__ import annotations

from common import env_ints, op_benchmark

SHAPES = [dict(b=b, c=64, h=s, w=s, reduction=4) for b in env_ints("DIN_FAST_BENCH_OP_BATCHES", "1,4")
          for s in env_ints("DIN_FAST_BENCH_OP_SIZES", "48,128")]

test_asyca = op_benchmark("asyca", SHAPES, "{b}-{h}", "asyca {mode} B={b} C={c} {h}x{w}",
                          id_order=("shape", "mode", "provider"))
