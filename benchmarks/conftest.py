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
