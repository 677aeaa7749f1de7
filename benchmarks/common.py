"""Shared machinery of the op benchmarks: every implementation of an op side by side.

Providers: ``reference`` (eager PyTorch, what the authors' code costs), ``compiled`` (``torch.compile``
of the same reference, what users get for free), ``cpp``, ``triton``, ``cuda`` (din_fast's kernels).
Modes: ``forward`` (under no_grad) and ``forward+backward`` (forward, then the gradients of every
input and parameter for a fixed upstream gradient).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

import din_fast
from din_fast import backends
from din_fast.ops import reference
from op_inputs import flat, requiring_grad

PROVIDERS = ("reference", "compiled", "cpp", "triton", "cuda")
MODES = ("forward", "forward+backward")


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


def bench(benchmark: Any, provider: str, op: str, args: list[Any], mode: str, group: str,
          rounds: int | None = None) -> None:
    """Time ``op`` with pytest-benchmark (median over rounds, after warm-up) under ``group``."""
    fn = op_callable(provider, op, args, mode)
    fn()  # warm-up outside the timing: compilation, allocator, first-touch
    benchmark.group = group
    benchmark.extra_info.update(provider=provider, op=op, mode=mode, threads=torch.get_num_threads(),
                                device=str(flat(args)[0].device))
    rounds = rounds or int(os.environ.get("DIN_FAST_BENCH_ROUNDS", "15"))
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=2, iterations=1)
