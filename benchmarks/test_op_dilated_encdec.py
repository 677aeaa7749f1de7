"""``dilated_encdec`` (DeFiAN's DiEnDec + gate), every implementation side by side, forward and
forward+backward, at DeFiAN's feature-map sizes (the LR image: 48² training patches to 128² tiles).

    pytest benchmarks/test_op_dilated_encdec.py --benchmark-only --benchmark-json=encdec.json
    python benchmarks/report.py encdec.json          # ratios against the reference, per group

Widen with DIN_FAST_BENCH_ENCDEC_SHAPES (``B×S`` items, comma-separated; default ``1x48,1x128,4x128``)
and DIN_FAST_BENCH_DTYPE (``float32``); DIN_FAST_BENCH_ROUNDS sets the rounds (default 15).
"""

from __future__ import annotations

import os

import pytest
import torch

from common import MODES, PROVIDERS, bench, skip_unavailable
from op_inputs import dilated_encdec_args

OP = "dilated_encdec"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = getattr(torch, os.environ.get("DIN_FAST_BENCH_DTYPE", "float32"))
SHAPES = [tuple(int(v) for v in item.split("x"))
          for item in os.environ.get("DIN_FAST_BENCH_ENCDEC_SHAPES", "1x48,1x128,4x128").split(",") if item]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[1]}")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_dilated_encdec(benchmark, provider: str, shape: tuple[int, int], mode: str) -> None:
    skip_unavailable(provider, OP, DEVICE, DTYPE)
    b, s = shape
    args = dilated_encdec_args(b=b, h=s, w=s, dtype=DTYPE, device=DEVICE,
                               generator=torch.Generator(device=DEVICE).manual_seed(0))
    group = f"{OP} {mode} B={b} {s}x{s} {DTYPE}".replace("torch.", "")
    bench(benchmark, provider, OP, args, mode, group=group)
