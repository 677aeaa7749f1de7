"""Where the time of one whole-model inference goes: din_fast's default backend (torch.profiler, per op)
beside ONNX Runtime (its per-node profile, ``SessionOptions.enable_profiling``) and OpenVINO (its per-node
performance counters), on the same model and input, same thread count.

    python benchmarks/profile_peers.py --model defian-s --scale 4 --size 48 --threads 2 --runs 10

Prints, per runtime, the share of the profiled time of each op type (the fractions stay meaningful on a
loaded machine; the absolute times do not) and the mean time per call the profile saw.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile

import torch

import din_fast
from din_fast.deploy.runtimes import onnxruntime_session, openvino_model


def ours(model: torch.nn.Module, x: torch.Tensor, runs: int) -> dict[str, float]:
    """Seconds per call of each din_fast op and ATen op that is not inside another profiled op."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(x)
    totals: dict[str, float] = collections.defaultdict(float)
    for event in prof.events():
        if event.cpu_parent is not None and event.cpu_parent.name != "[python]":
            continue  # counted in its parent
        totals[event.name] += event.cpu_time_total / 1e6 / runs
    return dict(totals)


def onnxruntime_nodes(path: str, x: torch.Tensor, threads: int, runs: int, workdir: str) -> dict[str, float]:
    """Seconds per call of each ONNX op type in ONNX Runtime's node profile (kernel time), the first
    run (allocations, kernel selection) left out."""
    session = onnxruntime_session(path, threads, profile_prefix=os.path.join(workdir, "ort"))
    feed = {session.get_inputs()[0].name: x.numpy()}
    for _ in range(runs + 1):
        session.run(None, feed)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    first = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    totals: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > first["ts"] + first["dur"]:
            totals[e["args"]["op_name"]] += e["dur"] / 1e6 / runs
    return dict(totals)


def openvino_nodes(path: str, x: torch.Tensor, threads: int, runs: int) -> dict[str, float]:
    """Seconds per call of each OpenVINO node type (performance counters, real time), after one warm-up."""
    request = openvino_model(path, threads, profile=True).create_infer_request()
    request.infer([x.numpy()])
    totals: dict[str, float] = collections.defaultdict(float)
    for _ in range(runs):
        request.infer([x.numpy()])
        for node in request.get_profiling_info():
            totals[node.node_type] += node.real_time.total_seconds() / runs
    return dict(totals)


def show(title: str, totals: dict[str, float], top: int) -> None:
    total = sum(totals.values())
    print(f"\n{title}: {total * 1e3:.1f} ms per call in the profile")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {name:<44} {seconds * 1e3:8.2f} ms  {seconds / total:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="defian-s")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", type=int, default=48, help="LR side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--dynamic", action="store_true", help="export with dynamic shapes (default: static)")
    args = parser.parse_args()
    from din_fast import allocator

    allocator.keep_freed_memory()  # as din-fast bench does
    torch.set_num_threads(args.threads)
    model = din_fast.create_model(args.model, args.scale).eval()
    x = torch.rand(1, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as workdir:
        path = din_fast.export(model, os.path.join(workdir, "model.onnx"), example=x, dynamic=args.dynamic)
        show("din_fast default (torch.profiler)", ours(model, x, args.runs), args.top)
        show("onnxruntime (node profile)", onnxruntime_nodes(path, x, args.threads, args.runs, workdir), args.top)
        show("openvino (performance counters)", openvino_nodes(path, x, args.threads, args.runs), args.top)


if __name__ == "__main__":
    main()
