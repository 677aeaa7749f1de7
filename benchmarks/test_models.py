"""Whole models, every implementation side by side: inference and one training step (pytest-benchmark).

    pytest benchmarks/test_models.py --benchmark-only --benchmark-json=models.json

Default selection, each model once: on CPU ``defian-s``, ``din``, ``cirn`` and ``drfn`` at x4, inference
on a 48² LR input, with the ``reference``, ``compiled`` and ``default`` providers; on a GPU ``din`` and
``defian-l`` at x4 on a 256² LR input, float32 ``reference`` against bfloat16 ``compiled``, ``default``
and ``optimized`` (issue 8's GPU targets). ``DIN_FAST_BENCH_FULL=1`` widens the defaults to inference and
training with every provider. Each item can be set (comma-separated): DIN_FAST_BENCH_MODELS,
DIN_FAST_BENCH_SCALES, DIN_FAST_BENCH_SIZES (LR sizes), DIN_FAST_BENCH_MODES (``inference,train``),
DIN_FAST_BENCH_PROVIDERS (from din_fast.bench.PROVIDERS, ``name:dtype`` for bfloat16 / float16 under
autocast), DIN_FAST_BENCH_BATCH (``1``); DIN_FAST_BENCH_MEMORY=1 also records each call's peak memory.
Compiling a whole model takes about a minute per case on a 2-core CPU (done in the warm-up, not timed).
"""

from __future__ import annotations

import os

import pytest
import torch

from common import FULL, GPU, TINY, env_list, model_defaults
from din_fast import bench, list_models

DEVICE = "cuda" if GPU else "cpu"
DEFAULTS = model_defaults(full=FULL, gpu=GPU, tiny=TINY)
PROVIDERS = [bench.parse_provider(p) for p in env_list("DIN_FAST_BENCH_PROVIDERS", DEFAULTS["providers"])]
CASES = [bench.Case(m, int(s), int(z), mode, p, int(os.environ.get("DIN_FAST_BENCH_BATCH", "1")), DEVICE, dtype)
         for m in env_list("DIN_FAST_BENCH_MODELS", DEFAULTS["models"])
         for s in env_list("DIN_FAST_BENCH_SCALES", "4")
         for mode in env_list("DIN_FAST_BENCH_MODES", DEFAULTS["modes"])
         for z in env_list("DIN_FAST_BENCH_SIZES", DEFAULTS["sizes"])
         for p, dtype in PROVIDERS if not (p == "optimized" and mode != "inference")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.group}-{c.label}".replace(" ", "-"))
def test_model(benchmark, case: bench.Case) -> None:
    if case.model not in list_models():
        pytest.skip(f"model {case.model!r} is not registered in this build")
    fn = bench.build(case)
    fn()  # warm-up: compilation, oneDNN primitives, Adam state
    benchmark.group = case.group
    benchmark.extra_info.update(provider=case.provider, dtype=case.dtype, model=case.model, scale=case.scale,
                                size=case.size, mode=case.mode, batch=case.batch, megapixels=case.megapixels,
                                threads=torch.get_num_threads())
    if os.environ.get("DIN_FAST_BENCH_MEMORY") == "1":
        benchmark.extra_info["peak_mib"] = bench.peak_memory_mib(case, fn)
    rounds = int(os.environ.get("DIN_FAST_BENCH_ROUNDS", "5"))
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)
