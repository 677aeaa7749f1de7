"""Test configuration. Without a GPU, Triton kernels run in the interpreter: TRITON_INTERPRET must be
set before any kernel module is imported, so it is set here, at collection time."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_backend():
    """Every test starts from seed 0 and the auto backend, whatever the previous test did."""
    import din_fast

    torch.manual_seed(0)
    previous = din_fast.get_backend()
    din_fast.set_backend("auto")
    yield
    din_fast.set_backend(previous)
