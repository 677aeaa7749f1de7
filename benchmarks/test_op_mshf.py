"""``mshf`` benchmarks: every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_mshf.py --benchmark-only --benchmark-json=mshf.json

Shapes: common.DEFIAN_CPU / DEFIAN_GPU by default (C = 64; B=1, 96² on CPU; B=16, 256² on a GPU, issue
4's point); the full matrix common.defian_matrix (DIN_FAST_BENCH_FULL=1, or DIN_FAST_BENCH_CHANNELS
(``32,64``), DIN_FAST_BENCH_SIZES (``48,128``), DIN_FAST_BENCH_BATCHES (``1,4``)).
"""

from __future__ import annotations

from common import DEFIAN_CPU, DEFIAN_ENV, DEFIAN_GPU, defian_matrix, op_benchmark, selection

test_mshf = op_benchmark("mshf", selection(DEFIAN_CPU, DEFIAN_GPU, defian_matrix, DEFIAN_ENV),
                         "B{b} C{c} {h}x{w}")
