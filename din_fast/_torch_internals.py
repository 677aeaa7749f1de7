"""Every private PyTorch API din_fast uses, in one place (checked on torch 2.13; the tests in
tests/test_torch_internals.py fail when a torch release changes one of them).

Private names change without notice between torch releases; keeping them here means one file to read
when a torch upgrade breaks something.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def assume_constant_result(fn: F) -> F:
    """``torch.compiler.assume_constant_result(fn)`` without importing ``torch._dynamo`` (about a second
    of start-up that a process that never compiles does not need): that decorator only sets this
    attribute, which dynamo reads when it traces a call of ``fn``."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn
