"""CPU time of one thread per op call, reference against cpp: a comparison that stays meaningful when
other processes share the cores (wall-clock benchmarks then measure the load).

    python benchmarks/op_cpu_time.py criss_cross_attention:b=1,c=64,cq=8,h=64,w=64 \\
        channel_spatial_attention:b=1,c=64,h=64,w=64

Each case: median (and minimum) over ``--rounds`` calls of ``time.thread_time`` around the forward
(no_grad) and around forward + backward (gradients of every input and parameter), float32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import din_fast  # noqa: E402
from din_fast.ops import reference  # noqa: E402
from op_inputs import ARGS, flat, requiring_grad  # noqa: E402


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


def call(op: str, impl: str, args: list) -> Callable[[], torch.Tensor]:
    if impl == "reference":
        return lambda: getattr(reference, op)(*args)

    def run() -> torch.Tensor:
        with din_fast.use_backend(impl):
            return getattr(din_fast.ops, op)(*args)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="op:key=value,... (op_inputs builder arguments)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--impl", default="cpp")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for case in args.cases:
        op, _, spec = case.partition(":")
        kw = {k: int(v) for k, v in (item.split("=") for item in spec.split(",") if item)}
        inputs = ARGS[op](**kw, dtype=torch.float32)
        grad = torch.randn_like(getattr(reference, op)(*inputs))
        for mode in ("forward", "forward+backward"):
            res = {}
            for impl in ("reference", args.impl):
                if mode == "forward":
                    fn = call(op, impl, inputs)
                    with torch.no_grad():
                        res[impl] = cpu_times(fn, args.rounds)
                else:
                    leaves = requiring_grad(inputs)
                    fn = call(op, impl, leaves)
                    res[impl] = cpu_times(lambda: torch.autograd.grad(fn(), flat(leaves), grad), args.rounds)
            (rm, rmin), (im, imin) = res["reference"], res[args.impl]
            print(f"{op} {spec} {mode}: reference {rm:.2f} ms, {args.impl} {im:.2f} ms (median CPU time) "
                  f"-> {rm / im:.2f}x (min {rmin:.2f} / {imin:.2f} ms -> {rmin / imin:.2f}x)")


if __name__ == "__main__":
    main()
