"""Keep freed heap memory in the process instead of handing it back to the OS (glibc ``malloc`` only).

Why: glibc serves large allocations (above an mmap threshold that starts at 128 KiB) with fresh ``mmap``s and
returns trimmed heap memory to the OS, so a model that allocates multi-megabyte feature maps in every layer
page-faults and zero-fills them again on every call (a large share of a conv's time: benchmarks/NOTES.md).
PyTorch's CPU performance guide recommends jemalloc or tcmalloc for the same reason; this needs
neither.

``din-fast`` commands call :func:`keep_freed_memory` once at start; library users can call it themselves.
The price: the process keeps its peak heap (it is reused, not returned), up to the trim threshold below.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value: allocations up to 32 MiB come from the heap
_TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of free heap
_TOP_PAD = 64 << 20  # grow the heap in 64 MiB steps (address space only; pages are touched when used)
# The user's own malloc settings win: with any of these set we change nothing.
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_",
                  "GLIBC_TUNABLES", "LD_PRELOAD")
_applied = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap threshold to 32 MiB, its trim threshold to 1 GiB and its top pad to 64 MiB, so that
    freed feature maps are reused instead of being unmapped and page-faulted again.

    Returns True when the settings were applied; False on a C library without ``mallopt`` (macOS, Windows,
    musl accepts and ignores it) or when the environment already configures malloc (``MALLOC_*_``,
    ``GLIBC_TUNABLES``) or preloads another allocator (``LD_PRELOAD``, e.g. jemalloc or tcmalloc).
    """
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    global _applied
    _applied = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD)))
    return _applied


def applied() -> bool:
    """Whether :func:`keep_freed_memory` has changed this process's malloc settings (benchmark records say so)."""
    return _applied
