"""Shared machinery of the op benchmarks: every implementation of an op side by side.

Providers: ``reference`` (eager PyTorch, what the authors' code costs), ``compiled`` (``torch.compile``
of the same reference, what users get for free), ``cpp``, ``triton``, ``cuda`` (din_fast's kernels).
Modes: ``forward`` (under no_grad) and ``forward+backward`` (forward, then the gradients of every
input and parameter for a fixed upstream gradient). Each ``benchmarks/test_op_<op>.py`` states only its
shapes, test ids and group names and gets its test from :func:`op_benchmark`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

import din_fast
from din_fast import backends
from din_fast.bench import _cpu_peak_mib
from din_fast.ops import reference
from op_inputs import ARGS, flat, requiring_grad

PROVIDERS = ("reference", "compiled", "cpp", "triton", "cuda")
MODES = ("forward", "forward+backward")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def env_list(name: str, default: str) -> list[str]:
    """The comma-separated items of environment variable ``name`` (``default`` when it is unset)."""
    return [v for v in os.environ.get(name, default).split(",") if v]


def env_ints(name: str, default: str) -> list[int]:
    """:func:`env_list` as integers."""
    return [int(v) for v in env_list(name, default)]


def env_tuples(name: str, default: str, sep: str) -> list[tuple[int, ...]]:
    """:func:`env_list` items of integers joined by ``sep`` (``64:32``, ``1x48``) as tuples."""
    return [tuple(int(v) for v in item.split(sep)) for item in env_list(name, default)]


# DeFiAN's feature maps: C = 32 (DeFiAN-S) and 64 (-L) on 48² to 128² maps, batch 1 and 4 (the LR patch
# of training is 48², whole-image inference is larger); the environment narrows or widens them.
DEFIAN_SHAPES = [dict(b=b, c=c, h=s, w=s) for c in env_ints("DIN_FAST_BENCH_CHANNELS", "32,64")
                 for s in env_ints("DIN_FAST_BENCH_SIZES", "48,128")
                 for b in env_ints("DIN_FAST_BENCH_BATCHES", "1,4")]


def skip_unavailable(provider: str, op: str, device: torch.device, dtype: torch.dtype) -> None:
    """pytest.skip when ``provider`` cannot run ``op`` here (the reason is shown in the report)."""
    if provider in ("reference", "compiled"):
        return
    if provider == "triton" and device.type == "cpu":
        pytest.skip("Triton on CPU only runs in the interpreter; its timings mean nothing")
    reason = backends.unavailable_reason(op, provider, device.type, dtype)
    if reason is not None:
        pytest.skip(reason)


def _forward_fn(provider: str, op: str) -> Callable[..., torch.Tensor]:
    if provider == "reference":
        return getattr(reference, op)
    if provider == "compiled":
        # Every benchmark case compiles afresh: dynamo specialises the reference per shape and grad mode,
        # and past torch._dynamo.config.recompile_limit (8) variants of one function it silently runs
        # the function eagerly, so a suite of more cases would time the eager reference as "compiled".
        torch._dynamo.reset()
        return torch.compile(getattr(reference, op), dynamic=False)
    fn = getattr(din_fast.ops, op)

    def run(*args: Any) -> torch.Tensor:
        with din_fast.use_backend(provider):
            return fn(*args)

    return run


def op_callable(provider: str, op: str, args: list[Any], mode: str) -> Callable[[], Any]:
    """A no-argument callable that runs ``op`` once with ``provider`` in ``mode``."""
    fn = _forward_fn(provider, op)
    if mode == "forward":
        def forward() -> torch.Tensor:
            with torch.no_grad():
                return fn(*args)

        return forward
    if mode == "forward+backward":
        args = requiring_grad(args)
        inputs = flat(args)
        with torch.no_grad():
            grad_out = torch.randn_like(_forward_fn("reference", op)(*args))

        def forward_backward() -> tuple[torch.Tensor, ...]:
            return torch.autograd.grad(fn(*args), inputs, grad_out)

        return forward_backward
    raise ValueError(f"unknown mode {mode!r}")


# Default rounds per case: enough calls for ~0.5 s of timing, within these bounds. A median of 15 calls of a
# 20 µs op swung by 2x between runs on the 2-core VM; 500 calls of it take 10 ms.
MIN_ROUNDS, MAX_ROUNDS, TIMED_SECONDS = 15, 500, 0.5


def default_rounds(fn: Callable[[], Any]) -> int:
    """Rounds for ``fn`` (already warmed up): DIN_FAST_BENCH_ROUNDS when set, else as many calls as fit in
    ~TIMED_SECONDS (judged from the fastest of five calls: a preempted call would cut the rounds), between
    MIN_ROUNDS and MAX_ROUNDS."""
    if "DIN_FAST_BENCH_ROUNDS" in os.environ:
        return int(os.environ["DIN_FAST_BENCH_ROUNDS"])
    per_call = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        fn()
        per_call = min(per_call, time.perf_counter() - start)
    return max(MIN_ROUNDS, min(MAX_ROUNDS, int(TIMED_SECONDS / max(per_call, 1e-9))))


def bench(benchmark: Any, provider: str, op: str, args: list[Any], mode: str, group: str,
          rounds: int | None = None) -> None:
    """Time ``op`` with pytest-benchmark (median over rounds, after warm-up) under ``group``."""
    fn = op_callable(provider, op, args, mode)
    fn()  # warm-up outside the timing: compilation, allocator, first-touch
    benchmark.group = group
    benchmark.extra_info.update(provider=provider, op=op, mode=mode, threads=torch.get_num_threads(),
                                device=str(flat(args)[0].device))
    rounds = rounds or default_rounds(fn)
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=2, iterations=1)


def op_benchmark(op: str, shapes: Sequence[dict[str, int]], case_id: str, group: str,
                 id_order: Sequence[str] = ("shape", "provider", "mode"), dtype: torch.dtype = torch.float32,
                 peak_memory: bool = False) -> Callable[..., None]:
    """The pytest-benchmark test of ``op``: every provider × mode × shape, timed by :func:`bench`.

    ``shapes`` are keyword arguments of the op's builder in tests/op_inputs.py (inputs drawn from a
    generator seeded with 0, ``dtype`` on :data:`DEVICE`). ``case_id`` formats a shape's part of the
    test id, ``group`` the pytest-benchmark group (fields: the shape's, ``op``, ``mode`` and ``dtype``
    without ``torch.``). ``id_order`` orders the parts of the test ids (each suite keeps the ids its
    stored results carry). ``peak_memory``: CPU forward cases also record the peak memory of one call
    (``extra_info["peak_mib"]``, allocations seen by the torch profiler).
    """
    def test(benchmark: Any, provider: str, mode: str, shape: dict[str, int]) -> None:
        skip_unavailable(provider, op, DEVICE, dtype)
        generator = torch.Generator(device=DEVICE).manual_seed(0)
        args = ARGS[op](**shape, dtype=dtype, device=DEVICE, generator=generator)
        fields = dict(shape, op=op, mode=mode, dtype=str(dtype).removeprefix("torch."))
        bench(benchmark, provider, op, args, mode, group=group.format(**fields))
        if peak_memory and DEVICE.type == "cpu" and mode == "forward":
            benchmark.extra_info["peak_mib"] = _cpu_peak_mib(op_callable(provider, op, args, mode))

    ids = [case_id.format(**s) for s in shapes]
    parametrize = {"shape": pytest.mark.parametrize("shape", shapes, ids=ids),
                   "provider": pytest.mark.parametrize("provider", PROVIDERS),
                   "mode": pytest.mark.parametrize("mode", MODES)}
    for axis in id_order:  # the first mark applied is the first part of the id
        test = parametrize[axis](test)
    test.__name__ = test.__qualname__ = f"test_{op}"
    return test
