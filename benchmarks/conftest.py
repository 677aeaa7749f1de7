"""Benchmark configuration: the op input builders come from tests/op_inputs.py (one source of inputs
for tests and benchmarks), GPU timings synchronise the device, and the process keeps freed memory as
``din-fast`` commands do (din_fast/allocator.py), for every provider alike: otherwise each multi-megabyte
output is a fresh mmap, page-faulted on every call, and the timings measure the kernel's page faults."""

import os
import sys
import time

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
