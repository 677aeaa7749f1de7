"""Benchmark configuration: the op input builders come from tests/op_inputs.py (one source of inputs
for tests and benchmarks), GPU timings synchronise the device, and the process keeps freed memory as
``din-fast`` commands do (din_fast/allocator.py), for every provider alike: otherwise each multi-megabyte
output is a fresh mmap, page-faulted on every call, and the timings measure the kernel's page faults.

The run ends with the comparison table of ``din-fast bench`` and benchmarks/report.py
(:func:`din_fast.bench.format_comparison`). With DIN_FAST_BENCH_RECORDS=FILE each finished benchmark is
also appended to FILE as one JSON line, so a run that is stopped part way keeps what it measured
(scripts/gpu_check.py reads them).
"""

import json
import os
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def pytest_configure(config):
    from din_fast import allocator

    allocator.keep_freed_memory()
    # pytest-benchmark's default timer measures host time; CUDA work is asynchronous.
    if torch.cuda.is_available():
        def synchronized_timer():
            torch.cuda.synchronize()
            return time.perf_counter()

        config.option.benchmark_timer = synchronized_timer


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the numbers depend on besides the CPU: versions, device, thread count, allocator."""
    from din_fast.bench import versions

    machine_info["din_fast"] = versions()


def _records(config, start: int = 0) -> list[dict]:
    session = getattr(config, "_benchmarksession", None)
    out = []
    for b in (session.benchmarks[start:] if session else []):
        try:
            d = b.as_dict(include_data=False)
            out.append({key: d[key] for key in ("group", "name", "fullname", "extra_info", "stats")})
        except (AttributeError, TypeError, ValueError):  # a benchmark that failed before timing anything
            continue
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    path = os.environ.get("DIN_FAST_BENCH_RECORDS")
    if call.when != "call" or not path:
        return
    seen = getattr(item.config, "_din_fast_recorded", 0)
    new = _records(item.config, seen)
    item.config._din_fast_recorded = seen + len(new)
    with open(path, "a") as f:
        for record in new:
            f.write(json.dumps(record, default=str) + "\n")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    records = _records(config)
    if records:
        from din_fast.bench import format_comparison, machine_info

        terminalreporter.write_sep("=", "din_fast comparison")
        terminalreporter.write_line(format_comparison(records, machine_info()))
