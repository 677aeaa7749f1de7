"""``mshf`` benchmarks: every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_mshf.py --benchmark-only --benchmark-json=mshf.json

Shapes: common.DEFIAN_SHAPES (environment, comma-separated: DIN_FAST_BENCH_CHANNELS (``32,64``),
DIN_FAST_BENCH_SIZES (``48,128``), DIN_FAST_BENCH_BATCHES (``1,4``)); rounds: DIN_FAST_BENCH_ROUNDS (default: benchmarks/common.default_rounds).
"""

from __future__ import annotations

from common import DEFIAN_SHAPES, op_benchmark

test_mshf = op_benchmark("mshf", DEFIAN_SHAPES, "B{b}-C{c}-{h}x{w}",
                         "mshf {mode} B{b} C{c} {h}x{w} fp32")
