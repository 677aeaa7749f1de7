"""CPU time of one thread per op call, the reference (and optionally torch.compile of it) against cpp: a
comparison that stays meaningful when other processes share the cores (wall-clock benchmarks then
measure the load).

    python benchmarks/op_cpu_time.py criss_cross_attention:b=1,c=64,cq=8,h=64,w=64 \\
        channel_spatial_attention:b=1,c=64,h=64,w=64
    python benchmarks/op_cpu_time.py --compiled mshf:b=1,c=32,h=48,w=48
    python benchmarks/op_cpu_time.py --dispatcher dwc_sum:k=2,b=1,c=64,h=48,w=48 --rounds 200

Each case: median (and minimum) over ``--rounds`` calls of ``time.thread_time`` around the forward
(no_grad) and around forward + backward (gradients of every input and parameter), float32, after two
warm-up calls (which include torch.compile's compilation). The callables are benchmarks/common.py's,
the same as the pytest-benchmark suites time. With one thread, compiled code runs in the calling thread.
``--dispatcher`` also times the implementation through the dispatcher route (torch.library's autograd
and the router, the route of every call that is not a C++ kernel on plain eager tensors) instead of
``_C.eager_call``'s C++ node: the per-call cost of the route, same kernels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from common import MODES, op_callable  # noqa: E402
from op_inputs import ARGS  # noqa: E402

from din_fast.ops import _library  # noqa: E402


def cpu_times(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(median, min) of the calling thread's CPU time per call, in ms, after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    times.sort()
    return times[len(times) // 2] * 1e3, times[0] * 1e3


@contextmanager
def dispatcher_route() -> Iterator[None]:
    """``din_fast.ops`` calls through the dispatcher route: FusedOp.__call__ sees no plain eager tensors."""
    plain = _library._eager_plain
    _library._eager_plain = lambda tensors: False
    try:
        yield
    finally:
        _library._eager_plain = plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="op:key=value,... (op_inputs builder arguments)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--impl", default="cpp")
    parser.add_argument("--compiled", action="store_true", help="also time torch.compile(reference)")
    parser.add_argument("--dispatcher", action="store_true",
                        help="also time the implementation through the dispatcher route (torch.library's autograd)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    baselines = ["reference"] + (["compiled"] if args.compiled else [])
    for case in args.cases:
        op, _, spec = case.partition(":")
        kw = {k: int(v) for k, v in (item.split("=") for item in spec.split(",") if item)}
        inputs = ARGS[op](**kw, dtype=torch.float32)
        for mode in MODES:
            res = {p: cpu_times(op_callable(p, op, inputs, mode), args.rounds) for p in baselines + [args.impl]}
            if args.dispatcher:
                with dispatcher_route():
                    res["dispatcher"] = cpu_times(op_callable(args.impl, op, inputs, mode), args.rounds)
                baselines_here = baselines + ["dispatcher"]
            else:
                baselines_here = baselines
            im, imin = res[args.impl]
            parts = [f"{p} {res[p][0]:.3f} ms" for p in baselines_here + [args.impl]]
            ratios = [f"{res[p][0] / im:.2f}x vs {p} (min {res[p][1] / imin:.2f}x)" for p in baselines_here]
            print(f"{op} {spec} {mode}: {', '.join(parts)} (median CPU time) -> {'; '.join(ratios)}")


if __name__ == "__main__":
    main()
