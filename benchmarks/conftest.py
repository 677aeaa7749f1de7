"""Benchmark configuration: the op input builders come from tests/op_inputs.py (one source of inputs
for tests and benchmarks), and GPU timings synchronise the device."""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def pytest_configure(config):
    # pytest-benchmark's default timer measures host time; CUDA work is asynchronous.
    if torch.cuda.is_available():
        def synchronized_timer():
            torch.cuda.synchronize()
            return time.perf_counter()

        config.option.benchmark_timer = synchronized_timer


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the numbers depend on besides the CPU: versions, device and thread count."""
    import din_fast

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu only"
    machine_info["din_fast"] = {"version": din_fast.__version__, "torch": torch.__version__,
                                "triton": triton_version, "device": device,
                                "threads": torch.get_num_threads()}
