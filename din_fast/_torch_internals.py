"""Every private PyTorch API din_fast's Python code uses, in one place. Checked on torch 2.13.0 (the
version CI builds and tests) by tests/test_torch_internals.py, which fails when a torch release changes
one; the op and model tests, which go through these names, also pass on torch 2.11.0 and 2.14.1
(.ci/build-matrix.sh).

Private names change without notice between torch releases; keeping them here means one file to read
when a torch upgrade breaks something. (The C++ side's torch/csrc internals are all in
csrc/eager_autograd.cpp.) The queries the eager fast path makes on every op call are bound once as
module attributes: calling them costs no more than the ``torch._C.`` attribute chains they replace.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., object])

#: Whether autocast is on for any device (one query for the common case: autocast off).
any_autocast_enabled: Callable[[], bool] = torch._C._is_any_autocast_enabled
#: Whether a torch-dispatch mode (FakeTensorMode, a TorchDispatchMode, ...) is active: its length.
dispatch_mode_depth: Callable[[], int] = torch._C._len_torch_dispatch_stack
#: Whether a torch-function mode is active.
torch_function_mode_enabled: Callable[[], bool] = torch._C._is_torch_function_mode_enabled
#: Whether a functorch transform (vmap, grad, ...) is active.
functorch_transforms_active: Callable[[], bool] = torch._C._are_functorch_transforms_active
#: The TorchScript tracer's state (None when not tracing).
jit_tracing_state: Callable[[], Any] = torch._C._get_tracing_state
#: torch's own parser of operator schemas (``FunctionSchema``: name, arguments with their types).
parse_schema: Callable[[str], Any] = torch._C.parse_schema
#: The parsed schema types of a Tensor and of a Tensor[] argument.
TENSOR_TYPE: Any = torch._C.TensorType.get()
TENSOR_LIST_TYPE: Any = torch._C.ListType(TENSOR_TYPE)


def has_kernel(qualified_op: str, dispatch_key: str) -> bool:
    """Whether the registered op ``qualified_op`` ("din_fast::name") has a kernel for ``dispatch_key``."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(qualified_op, dispatch_key)


def autocast_dispatch_key(device_type: str) -> tuple[str, Any]:
    """(name, DispatchKey) of autocast on ``device_type``: ("AutocastCPU", ...), ("AutocastCUDA", ...)."""
    name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    return name, getattr(torch._C.DispatchKey, name)


def excluding_dispatch_key(key: Any) -> AbstractContextManager[Any]:
    """A guard under which dispatch skips ``key`` (how an autocast kernel calls the op below autocast)."""
    return torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key))


def assume_constant_result(fn: F) -> F:
    """``torch.compiler.assume_constant_result(fn)`` without importing ``torch._dynamo`` (about a second
    of start-up that a process that never compiles does not need): that decorator only sets this
    attribute, which dynamo reads when it traces a call of ``fn``."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn
