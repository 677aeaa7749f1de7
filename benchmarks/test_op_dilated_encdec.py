"""``dilated_encdec`` (DeFiAN's DiEnDec + gate), every implementation side by side, forward and
forward+backward, at DeFiAN's feature-map sizes (the LR image: 48² training patches to 128² tiles).

    pytest benchmarks/test_op_dilated_encdec.py --benchmark-only --benchmark-json=encdec.json
    python benchmarks/report.py encdec.json          # ratios against the reference, per group

Widen with DIN_FAST_BENCH_ENCDEC_SHAPES (``B×S`` items, comma-separated; default ``1x48,1x128,4x128``)
and DIN_FAST_BENCH_DTYPE (``float32``); DIN_FAST_BENCH_ROUNDS sets the rounds (default: benchmarks/common.default_rounds).
"""

from __future__ import annotations

import os

import torch

from common import env_tuples, op_benchmark

SHAPES = [dict(b=b, h=s, w=s) for b, s in env_tuples("DIN_FAST_BENCH_ENCDEC_SHAPES", "1x48,1x128,4x128", "x")]
DTYPE = getattr(torch, os.environ.get("DIN_FAST_BENCH_DTYPE", "float32"))

test_dilated_encdec = op_benchmark("dilated_encdec", SHAPES, "{b}x{h}x{w}",
                                   "{op} {mode} B={b} {h}x{w} {dtype}",
                                   id_order=("provider", "shape", "mode"), dtype=DTYPE)
