"""din_fast.allocator: glibc keeps freed memory (no mmap per large allocation) after keep_freed_memory()."""

import subprocess
import sys

import pytest

from din_fast import allocator, cli

# In a fresh interpreter: malloc 16 MiB and report whether glibc served it with its own mmap (mallinfo2's
# hblkhd grows), with or without keep_freed_memory() first.
_PROBE = """
import ctypes, importlib.util, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[2])  # without importing torch
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                              "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
libc.malloc.argtypes, libc.free.argtypes = (ctypes.c_size_t,), (ctypes.c_void_p,)
applied = allocator.keep_freed_memory() if sys.argv[1] == "keep" else None
before = libc.mallinfo2().hblkhd
p = libc.malloc(16 << 20)
mmapped = libc.mallinfo2().hblkhd - before >= 16 << 20
libc.free(p)
print(applied, mmapped)
"""


def _probe(mode: str, env: dict | None = None) -> str:
    return subprocess.run([sys.executable, "-c", _PROBE, mode, allocator.__file__], capture_output=True,
                          text=True, check=True, env=env).stdout.split()


@pytest.fixture
def glibc():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    import ctypes
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")


def test_large_allocations_come_from_the_heap_after_the_call(glibc):
    assert _probe("default") == ["None", "True"]  # glibc's default: a 16 MiB malloc is its own mmap
    assert _probe("keep") == ["True", "False"]


def test_applied_reports_the_settings(glibc):
    code = ("import sys; from din_fast import allocator; a = allocator.applied(); "
            "print(a, allocator.keep_freed_memory(), allocator.applied())")
    import os
    env = {k: v for k, v in os.environ.items() if k not in allocator._USER_SETTINGS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", "True", "True"]


def test_user_malloc_settings_win(glibc, monkeypatch):
    import os
    env = dict(os.environ, MALLOC_TOP_PAD_="0")
    assert _probe("keep", env) == ["False", "True"]
    monkeypatch.setenv("LD_PRELOAD", "")
    assert allocator.keep_freed_memory() is False


def test_commands_apply_it(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["info"]) == 0
    assert calls == [1]
