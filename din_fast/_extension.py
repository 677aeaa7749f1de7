"""Loading of the compiled extension ``din_fast._C``.

The extension *registers* kernels (C++ CPU, C++/CUDA) on ops whose schemas are defined in Python;
its Python functions: ``cpu_isa()`` names the instruction set its CPU kernels run with;
``eager_kernels()`` and ``eager_call()`` are FusedOp's eager fast path for the C++ implementations
(din_fast/ops/_library.py, csrc/eager_autograd.cpp). A failed
load is not fatal — every op still has its reference implementation — but the error is kept and shown
by ``din-fast info``.
"""

from __future__ import annotations

import os
from typing import Any

_LOADED = False
_C: Any = None
_ERROR: str | None = None
_PATH: str | None = None

if os.environ.get("DIN_FAST_DISABLE_EXT") == "1":
    _ERROR = "disabled by DIN_FAST_DISABLE_EXT=1"
else:
    try:
        import torch  # noqa: F401  (_C links against libc10/libtorch, which importing torch loads first)

        from din_fast import _C  # import runs the static kernel registrations

        _LOADED = True
        _PATH = getattr(_C, "__file__", None)
    except ImportError as exc:  # not built (DIN_FAST_SKIP_EXT=1, pure-Python install) or ABI mismatch
        _ERROR = f"{type(exc).__name__}: {exc}"


def module() -> Any:
    """The extension module ``din_fast._C`` (None when it is not loaded)."""
    return _C if _LOADED else None


def has_ops() -> bool:
    """True when the compiled extension ``din_fast._C`` was loaded."""
    return _LOADED


def load_error() -> str | None:
    """Why the extension is not loaded (None when it is)."""
    return _ERROR


def build_info() -> dict:
    """What was built: the extension's path or load error, the instruction set of its CPU kernels
    ("avx512", "avx2" or "baseline"; None without the extension) and per op which implementations exist."""
    from din_fast import backends

    return {
        "extension_loaded": _LOADED,
        "extension_path": _PATH,
        "extension_error": _ERROR,
        "cpu_isa": _C.cpu_isa() if _LOADED else None,
        "ops": {name: backends.implementations(name) for name in backends.op_names()},
    }
