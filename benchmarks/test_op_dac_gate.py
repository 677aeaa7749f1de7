"""``dac_gate`` benchmarks: every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_dac_gate.py --benchmark-only --benchmark-json=dac_gate.json

Shapes: common.DEFIAN_SHAPES (environment, comma-separated: DIN_FAST_BENCH_CHANNELS (``32,64``),
DIN_FAST_BENCH_SIZES (``48,128``), DIN_FAST_BENCH_BATCHES (``1,4``)); rounds: DIN_FAST_BENCH_ROUNDS (default: benchmarks/common.default_rounds).
"""

from __future__ import annotations

from common import DEFIAN_SHAPES, op_benchmark

test_dac_gate = op_benchmark("dac_gate", DEFIAN_SHAPES, "B{b}-C{c}-{h}x{w}",
                             "dac_gate {mode} B{b} C{c} {h}x{w} fp32")
