"""Shared machinery of the op benchmarks: every implementation of an op side by side.

Providers: ``reference`` (eager PyTorch, what the authors' code costs), ``compiled`` (``torch.compile``
of the same reference, what users get for free), ``cpp``, ``triton``, ``cuda`` (din_fast's kernels).
Modes: ``forward`` (under no_grad) and ``forward+backward`` (forward, then the gradients of every
input and parameter for a fixed upstream gradient). Each ``benchmarks/test_op_<op>.py`` states only its
shapes (:func:`selection`) and gets its test from :func:`op_benchmark`.

Selection: by default one representative shape per op — on CPU the size DIN and DeFiAN infer whole
images at (B=1, 96²), on a GPU the targets of the kernel issues (C=64, 256², B=8 for DIN's ops and 16
for DeFiAN's) in float32 and bfloat16. ``DIN_FAST_BENCH_FULL=1`` (or any of a suite's own
environment variables) selects the full matrix instead; ``DIN_FAST_BENCH_DTYPES`` and
``DIN_FAST_BENCH_OP_PROVIDERS`` (comma-separated) narrow the dtypes and providers;
``DIN_FAST_BENCH_TINY=1`` shrinks the representative shapes to 8x8 (a smoke run, used by
``scripts/gpu_check.sh --dry-run``).
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
from din_fast.bench import PROVIDERS as MODEL_PROVIDERS
from din_fast.bench import _cpu_peak_mib, allow_recompiles, short_dtype
from din_fast.ops import reference
from op_inputs import ARGS, flat, requiring_grad

GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if GPU else "cpu")
FULL = os.environ.get("DIN_FAST_BENCH_FULL") == "1"
TINY = os.environ.get("DIN_FAST_BENCH_TINY") == "1"
MODES = ("forward", "forward+backward")


def env_list(name: str, default: str) -> list[str]:
    """The comma-separated items of environment variable ``name`` (``default`` when it is unset)."""
    return [v for v in os.environ.get(name, default).split(",") if v]


def env_ints(name: str, default: str) -> list[int]:
    """:func:`env_list` as integers."""
    return [int(v) for v in env_list(name, default)]


def env_tuples(name: str, default: str, sep: str) -> list[tuple[int, ...]]:
    """:func:`env_list` items of integers joined by ``sep`` (``64:32``, ``1x48``) as tuples."""
    return [tuple(int(v) for v in item.split(sep)) for item in env_list(name, default)]


PROVIDERS = tuple(env_list("DIN_FAST_BENCH_OP_PROVIDERS", "reference,compiled,cpp,triton,cuda"))
DTYPES = tuple(getattr(torch, name) for name in env_list("DIN_FAST_BENCH_DTYPES",
                                                          "float32,bfloat16" if GPU else "float32"))


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 → ``bf16`` (group names, test ids)."""
    return short_dtype(str(dtype).removeprefix("torch."))


def selection(cpu: dict[str, int], gpu: dict[str, int], matrix: Callable[[], list[dict[str, int]]],
              env: Sequence[str]) -> list[dict[str, int]]:
    """The shapes an op suite times: the full ``matrix()`` when DIN_FAST_BENCH_FULL=1 or one of the
    suite's environment variables ``env`` is set, else the one representative shape of this device
    (``gpu`` when CUDA is available, else ``cpu``; with DIN_FAST_BENCH_TINY=1 at B=1, 8x8)."""
    if FULL or any(name in os.environ for name in env):
        return matrix()
    shape = dict(gpu if GPU else cpu)
    if TINY:
        shape.update(b=1, h=8, w=8)
    return [shape]


# DeFiAN's feature maps: C = 32 (DeFiAN-S) and 64 (-L) on 48² to 128² maps, batch 1 and 4 (the LR patch
# of training is 48², whole-image inference is larger); the environment narrows or widens them.
DEFIAN_ENV = ("DIN_FAST_BENCH_CHANNELS", "DIN_FAST_BENCH_SIZES", "DIN_FAST_BENCH_BATCHES")


def defian_matrix() -> list[dict[str, int]]:
    """The full matrix of the DeFiAN op suites (mshf, dac_gate)."""
    return [dict(b=b, c=c, h=s, w=s) for c in env_ints("DIN_FAST_BENCH_CHANNELS", "32,64")
            for s in env_ints("DIN_FAST_BENCH_SIZES", "48,128")
            for b in env_ints("DIN_FAST_BENCH_BATCHES", "1,4")]


#: The representative shapes: DeFiAN-L's C = 64 (issue 4's GPU point: B = 16, 256²).
DEFIAN_CPU, DEFIAN_GPU = dict(b=1, c=64, h=96, w=96), dict(b=16, c=64, h=256, w=256)


def skip_unavailable(provider: str, op: str, device: torch.device, dtype: torch.dtype) -> None:
    """pytest.skip when ``provider`` cannot run ``op`` here (the reason is shown in the report)."""
    if provider in ("reference", "compiled"):
        return
    if provider == "triton" and device.type == "cpu":
        pytest.skip("Triton on CPU only runs in the interpreter; its timings mean nothing")
    reason = backends.unavailable_reason(op, provider, device.type, dtype)
    if reason is not None:
        pytest.skip(reason)


def model_defaults(full: bool, gpu: bool, tiny: bool) -> dict[str, str]:
    """Defaults of benchmarks/test_models.py's selection (comma-separated, as its environment variables):
    each model once (x4 inference; CPU: the four papers' models at 48², reference / compiled / default;
    GPU: din and defian-l at 256², float32 reference against bfloat16 compiled / default / optimized,
    issue 8's targets); ``full``: inference and training with every provider; ``tiny``: 8² inputs."""
    if full:
        return dict(models="defian-s,din,cirn,drfn", sizes="48", modes="inference,train",
                    providers=",".join(MODEL_PROVIDERS))
    if gpu:
        return dict(models="din,defian-l", sizes="8" if tiny else "256", modes="inference",
                    providers="reference,compiled:bfloat16,default:bfloat16,optimized:bfloat16")
    return dict(models="defian-s,din,cirn,drfn", sizes="8" if tiny else "48", modes="inference",
                providers="reference,compiled,default")


_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def compiled_reference(op: str) -> Callable[..., torch.Tensor]:
    """``torch.compile`` of the reference of ``op``, one per op for the whole run: dynamo compiles each
    (shape, dtype, grad mode) variant once and every later case of that variant reuses it
    (:func:`din_fast.bench.allow_recompiles` keeps it from silently falling back to eager)."""
    fn = _COMPILED.get(op)
    if fn is None:
        allow_recompiles()
        fn = _COMPILED[op] = torch.compile(getattr(reference, op), dynamic=False)
    return fn


def _forward_fn(provider: str, op: str) -> Callable[..., torch.Tensor]:
    if provider == "reference":
        return getattr(reference, op)
    if provider == "compiled":
        return compiled_reference(op)
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


def min_bytes(args: list[Any], out: Any, mode: str) -> int:
    """The fewest bytes a call must move through memory: the forward reads every input once and writes
    the output; forward+backward also reads the upstream gradient and the inputs again (the backward's
    saved tensors) and writes one gradient per input. Divided by the time, the bandwidth an op reaches
    (issues 3 and 4 target 70 % of the device's measured copy bandwidth on a GPU)."""
    inputs = sum(t.numel() * t.element_size() for t in flat(args))
    output = sum(t.numel() * t.element_size() for t in (out if isinstance(out, (list, tuple)) else [out]))
    return inputs + output if mode == "forward" else 3 * inputs + 2 * output


def bench(benchmark: Any, provider: str, op: str, args: list[Any], mode: str, group: str,
          rounds: int | None = None) -> None:
    """Time ``op`` with pytest-benchmark (median over rounds, after warm-up) under ``group``."""
    fn = op_callable(provider, op, args, mode)
    fn()  # warm-up outside the timing: compilation, allocator, first-touch
    benchmark.group = group
    with torch.no_grad():
        out = getattr(reference, op)(*args)
    first = flat(args)[0]
    benchmark.extra_info.update(provider=provider, op=op, mode=mode, threads=torch.get_num_threads(),
                                device=str(first.device), dtype=str(first.dtype).removeprefix("torch."),
                                min_bytes=min_bytes(args, out, mode))
    rounds = rounds or default_rounds(fn)
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=2, iterations=1)


def op_benchmark(op: str, shapes: Sequence[dict[str, int]], case: str,
                 peak_memory: bool = False) -> Callable[..., None]:
    """The pytest-benchmark test of ``op``: every provider × mode × dtype × shape, timed by :func:`bench`.

    ``shapes`` are keyword arguments of the op's builder in tests/op_inputs.py (inputs drawn from a
    generator seeded with 0, on :data:`DEVICE`). ``case`` formats a shape (its fields) for the group
    name ``"{op} {mode} {case} {dtype}"`` and the test id. ``peak_memory``: CPU forward cases also record
    the peak memory of one call (``extra_info["peak_mib"]``, allocations seen by the torch profiler).
    """
    def test(benchmark: Any, shape: dict[str, int], dtype: torch.dtype, mode: str, provider: str) -> None:
        skip_unavailable(provider, op, DEVICE, dtype)
        generator = torch.Generator(device=DEVICE).manual_seed(0)
        args = ARGS[op](**shape, dtype=dtype, device=DEVICE, generator=generator)
        group = f"{op} {mode} {case.format(**shape)} {dtype_name(dtype)}"
        bench(benchmark, provider, op, args, mode, group=group)
        if peak_memory and DEVICE.type == "cpu" and mode == "forward":
            benchmark.extra_info["peak_mib"] = _cpu_peak_mib(op_callable(provider, op, args, mode))

    # the first mark applied is the first part of the test id: shape-dtype-mode-provider
    shape_ids = [case.format(**s).replace(" ", "-") for s in shapes]
    test = pytest.mark.parametrize("shape", shapes, ids=shape_ids)(test)
    test = pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)(test)
    test = pytest.mark.parametrize("mode", MODES)(test)
    test = pytest.mark.parametrize("provider", PROVIDERS)(test)
    test.__name__ = test.__qualname__ = f"test_{op}"
    return test
