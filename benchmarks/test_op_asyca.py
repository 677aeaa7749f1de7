"""``asyca`` at DIN's shapes, every implementation side by side, forward and forward+backward.

    pytest benchmarks/test_op_asyca.py --benchmark-only --benchmark-json=asyca.json

Shapes: C = 64 (DIN's F), r = 4 (journal code), LR sizes from DIN_FAST_BENCH_OP_SIZES (default
``48,128``) and batches from DIN_FAST_BENCH_OP_BATCHES (default ``1,4``; the issue's GPU point is
B=8, 256²). float32.
"""

from __future__ import annotations

import os

import pytest
import torch

from common import MODES, PROVIDERS, bench, skip_unavailable
from op_inputs import asyca_args

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SIZES = [int(s) for s in os.environ.get("DIN_FAST_BENCH_OP_SIZES", "48,128").split(",")]
BATCHES = [int(b) for b in os.environ.get("DIN_FAST_BENCH_OP_BATCHES", "1,4").split(",")]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("batch", BATCHES)
def test_asyca(benchmark, provider, mode, size, batch):
    skip_unavailable(provider, "asyca", DEVICE, torch.float32)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    args = asyca_args(b=batch, c=64, h=size, w=size, reduction=4, dtype=torch.float32, device=DEVICE, generator=g)
    bench(benchmark, provider, "asyca", args, mode, group=f"asyca {mode} B={batch} C=64 {size}x{size}")
