"""Whole models, every implementation side by side: inference and one training step (pytest-benchmark).

    pytest benchmarks/test_models.py --benchmark-only --benchmark-json=models.json

The default selection is small enough for a laptop CPU; widen it with environment variables
(comma-separated): DIN_FAST_BENCH_MODELS (default ``defian-s,din,cirn,drfn``), DIN_FAST_BENCH_SCALES (``4``),
DIN_FAST_BENCH_SIZES (LR sizes, ``48``), DIN_FAST_BENCH_MODES (``inference,train``),
DIN_FAST_BENCH_PROVIDERS (all of din_fast.bench.PROVIDERS), DIN_FAST_BENCH_BATCH (``1``),
DIN_FAST_BENCH_MEMORY=1 to also record each call's peak memory. Compiling a whole model takes about
a minute per case on a 2-core CPU (done in the warm-up, not timed).
"""

from __future__ import annotations

import os

import pytest
import torch

from common import env_list
from din_fast import bench, list_models

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = [bench.Case(m, int(s), int(z), mode, p, int(os.environ.get("DIN_FAST_BENCH_BATCH", "1")), DEVICE)
         for m in env_list("DIN_FAST_BENCH_MODELS", "defian-s,din,cirn,drfn")
         for s in env_list("DIN_FAST_BENCH_SCALES", "4")
         for mode in env_list("DIN_FAST_BENCH_MODES", "inference,train")
         for z in env_list("DIN_FAST_BENCH_SIZES", "48")
         for p in env_list("DIN_FAST_BENCH_PROVIDERS", ",".join(bench.PROVIDERS))
         if not (p == "optimized" and mode != "inference")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.group}-{c.provider}".replace(" ", "-"))
def test_model(benchmark, case: bench.Case) -> None:
    if case.model not in list_models():
        pytest.skip(f"model {case.model!r} is not registered in this build")
    fn = bench.build(case)
    fn()  # warm-up: compilation, oneDNN primitives, Adam state
    benchmark.group = case.group
    benchmark.extra_info.update(provider=case.provider, model=case.model, scale=case.scale, size=case.size,
                                mode=case.mode, batch=case.batch, megapixels=case.megapixels,
                                threads=torch.get_num_threads())
    if os.environ.get("DIN_FAST_BENCH_MEMORY") == "1":
        benchmark.extra_info["peak_mib"] = bench.peak_memory_mib(case)
    rounds = int(os.environ.get("DIN_FAST_BENCH_ROUNDS", "5"))
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)
