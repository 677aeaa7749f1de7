"""Which implementation runs each fused op.

Backends: ``"auto"`` (default), ``"reference"`` (eager PyTorch, the test oracle), ``"cpp"`` (C++ CPU
kernels in ``din_fast._C``), ``"triton"`` (``din_fast.kernels``) and ``"cuda"`` (C++/CUDA kernels in
``din_fast._C``). The choice is process-wide: ``set_backend(name)``, the ``use_backend(name)`` context
manager, or the environment variable ``DIN_FAST_BACKEND`` read at import.

``"auto"`` picks, per op and tensor: on CPU the cpp kernel when it was built and supports the dtype;
on CUDA the first available of ``GPU_PREFERENCE[op]``; otherwise the reference.

An explicit backend runs every op on that backend's devices (cpp: CPU tensors; cuda: CUDA tensors;
triton: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``), so whole models run under it:

- an op with a kernel of that backend (its ``kernels``, declared where the op is defined) runs that
  kernel and never falls back: if the kernel cannot run the tensor (not built, unsupported dtype), a
  RuntimeError says why;
- an op without a kernel of that backend runs its reference there, by design, as each op's module says
  why (conv3x3 on GPUs: cuDNN's convolution is that implementation).

A tensor on a device the backend does not run on is an error for every op.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import ContextDecorator

import torch

from din_fast import _extension, _torch_internals
from din_fast._torch_internals import assume_constant_result

IMPLEMENTATIONS = ("reference", "cpp", "triton", "cuda")
BACKENDS = ("auto",) + IMPLEMENTATIONS

# Order in which "auto" tries the GPU implementations of each op. Update from benchmarks/RESULTS.md.
GPU_PREFERENCE: dict[str, tuple[str, ...]] = {}
_DEFAULT_GPU_PREFERENCE = ("cuda", "triton")

_CPP_DTYPES = (torch.float32, torch.float64)
_GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# The implementations compiled into din_fast._C: the device type they run on, the dispatch key their
# kernels (``_<op>_<impl>``) are registered under, their dtypes, and what is said when an op has no
# kernel or the dtype is not among them.
_COMPILED = {
    "cpp": ("cpu", "CPU", _CPP_DTYPES, "din_fast._C has no C++ CPU kernel for {op}",
            "the cpp implementation supports float32 and float64, not {dtype}"),
    "cuda": ("cuda", "CUDA", _GPU_DTYPES, "din_fast._C was built without a CUDA kernel for {op}",
             "the cuda implementation does not support {dtype}"),
}


def _validated(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown din_fast backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


_current = _validated(os.environ.get("DIN_FAST_BACKEND", "auto"))
# Per op, the non-reference implementations it has a kernel of (``declare_kernels``, called by the op).
_KERNELS: dict[str, frozenset[str]] = {}
_resolved: dict[tuple[str, str, torch.dtype, str], str] = {}


def get_backend() -> str:
    """The process-wide backend name."""
    return _current


def set_backend(name: str) -> None:
    """Set the process-wide backend (one of ``BACKENDS``)."""
    global _current
    _current = _validated(name)


class use_backend(ContextDecorator):  # noqa: N801 (used like the function it replaced)
    """Run the body with backend ``name``, then restore the previous one (a context manager, or a
    decorator). A class rather than a ``@contextmanager`` generator: it is entered around single op
    calls (benchmarks), where the generator's machinery cost more than a small kernel."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._previous: list[str] = []  # a stack, so one instance may be entered again while active

    def __enter__(self) -> None:
        previous = get_backend()
        set_backend(self.name)
        self._previous.append(previous)

    def __exit__(self, *exc: object) -> None:
        set_backend(self._previous.pop())


def declare_kernels(op: str, kernels: tuple[str, ...]) -> None:
    """Record which non-reference implementations ``op`` has a kernel of (called where the op is defined).
    Under an explicit backend outside ``kernels`` the op's reference is its implementation."""
    unknown = set(kernels) - set(IMPLEMENTATIONS[1:])
    if unknown:
        raise ValueError(f"unknown implementations {sorted(unknown)} for {op}")
    _KERNELS[op] = frozenset(kernels)


def kernels(op: str) -> frozenset[str]:
    """The non-reference implementations ``op`` has a kernel of (see ``declare_kernels``)."""
    own = _KERNELS.get(op)
    if own is None:
        raise ValueError(f"unknown din_fast op {op!r} (the ops declare themselves when din_fast.ops is imported)")
    return own


def op_names() -> list[str]:
    """Names of all fused ops (those that declared their kernels: importing din_fast.ops does)."""
    return sorted(_KERNELS)


def has_kernel(private_op: str, key: str) -> bool:
    """True when din_fast._C is loaded and op ``din_fast::<private_op>`` has a kernel for dispatch ``key``."""
    return _extension.has_ops() and _torch_internals.has_kernel(f"din_fast::{private_op}", key)


def _triton_usable(device_type: str) -> str | None:
    if device_type != "cuda" and not (device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return "Triton kernels need a CUDA tensor (or TRITON_INTERPRET=1 for CPU tensors)"
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed"
    return None


def _compiled_reason(op: str, impl: str, device_type: str, dtype: torch.dtype) -> str | None:
    device, key, dtypes, no_kernel, bad_dtype = _COMPILED[impl]
    if device_type != device:
        return f"the {impl} implementation runs on {key} tensors"
    if not _extension.ensure_loaded():  # builds the kernels once on first use when none are installed
        return f"din_fast._C is not loaded ({_extension.load_error()})"
    if not has_kernel(f"_{op}_{impl}", key):
        return no_kernel.format(op=op)
    if dtype not in dtypes:
        return bad_dtype.format(dtype=dtype)
    return None


def _device_reason(impl: str, device_type: str) -> str | None:
    """None if backend ``impl`` runs on ``device_type`` tensors, else the reason."""
    if impl in _COMPILED:
        device, key = _COMPILED[impl][:2]
        return None if device_type == device else f"the {impl} implementation runs on {key} tensors"
    if impl == "triton":
        return _triton_usable(device_type)
    return None


def unavailable_reason(op: str, impl: str, device_type: str, dtype: torch.dtype) -> str | None:
    """None if ``op``'s own implementation ``impl`` (its kernel; the reference for ``"reference"``) can run
    on (device_type, dtype), else the reason."""
    if impl == "reference":
        return None
    if impl in IMPLEMENTATIONS and impl not in kernels(op):  # (the device first: resolve's error names it)
        return _device_reason(impl, device_type) or f"{op} has no {impl} kernel (its reference runs there)"
    if impl in _COMPILED:
        return _compiled_reason(op, impl, device_type, dtype)
    if impl == "triton":
        reason = _triton_usable(device_type)
        if reason is not None:
            return reason
        if importlib.util.find_spec(f"din_fast.kernels.{op}") is None:
            return f"the Triton kernel of {op} (din_fast.kernels.{op}) is missing"
        if dtype not in _GPU_DTYPES:
            return f"the triton implementation does not support {dtype}"
        return None
    raise ValueError(f"unknown implementation {impl!r}")


def _auto(op: str, device_type: str, dtype: torch.dtype) -> str:
    if device_type == "cpu":
        candidates: tuple[str, ...] = ("cpp",)
    elif device_type == "cuda":
        candidates = GPU_PREFERENCE.get(op, _DEFAULT_GPU_PREFERENCE)
    else:
        candidates = ()
    for impl in candidates:
        if unavailable_reason(op, impl, device_type, dtype) is None:
            return impl
    return "reference"


def resolve(op: str, device: torch.device, dtype: torch.dtype) -> str:
    """The implementation that runs ``op`` on a tensor of this device and dtype under the current backend.

    Raises RuntimeError when an explicitly chosen backend cannot run it. Under ``torch.compile`` the
    answer is a trace-time constant, and reading ``_current`` makes the compiled code guard on the
    backend, so switching backends recompiles.
    """
    return _resolve(op, device.type, dtype, _current)


@assume_constant_result
def _resolve(op: str, device_type: str, dtype: torch.dtype, backend: str) -> str:
    key = (op, device_type, dtype, backend)
    impl = _resolved.get(key)
    if impl is None:
        if backend == "auto":
            impl = _auto(op, device_type, dtype)
        elif backend not in kernels(op) and _device_reason(backend, device_type) is None:
            impl = "reference"  # no kernel of this backend: the reference is the op's implementation there
        else:
            reason = unavailable_reason(op, backend, device_type, dtype)
            if reason is not None:
                raise RuntimeError(f"din_fast backend {backend!r} cannot run {op} on a {device_type} "
                                   f"{dtype} tensor: {reason}")
            impl = backend
        _resolved[key] = impl
    return impl


def implementations(op: str) -> dict[str, str]:
    """For ``din-fast info``: each implementation of ``op`` and whether it is built (an implementation
    the op has no kernel of says so: the reference runs there)."""
    out = {"reference": "available"}
    own = kernels(op)
    for impl, key in (("cpp", "CPU"), ("cuda", "CUDA")):
        if impl not in own:
            out[impl] = "no kernel (the reference runs)"
        else:
            out[impl] = "built" if has_kernel(f"_{op}_{impl}", key) else "not built"
    if "triton" not in own:
        out["triton"] = "no kernel (the reference runs)"
    else:
        has_module = importlib.util.find_spec(f"din_fast.kernels.{op}") is not None
        out["triton"] = "kernel present" if has_module else "kernel missing"
    return out
