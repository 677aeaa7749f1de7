"""How din_fast._C is compiled: sources, compiler flags, OpenMP probe, CUDA toolkit and architectures.

One description shared by the two builds: ``setup.py`` (``pip install``; it loads this file by path,
without importing the din_fast package, whose import needs torch) and the one-time build on first use
(``din_fast._extension``, ``torch.utils.cpp_extension.load``). This module imports only the standard
library; callers pass torch's facts in.

OpenMP: the kernels parallelise with ``at::parallel_for``. With torch's OpenMP backend (the Linux and
macOS wheels) that function's parallel region is *inlined from torch's headers* (ATen/ParallelOpenMP.h
is compiled only when ``_OPENMP`` is defined), so an extension compiled without OpenMP runs every
``at::parallel_for`` on one thread: correct, slower. ``#pragma omp simd`` needs only ``-fopenmp-simd``.
The flags are therefore probed: ``-fopenmp`` (GCC, LLVM clang), ``-Xpreprocessor -fopenmp -lomp``
(Apple clang with Homebrew's libomp), else ``-fopenmp-simd`` alone, else nothing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Architectures compiled when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset: A100 (8.0), RTX 30xx /
# A10 (8.6), RTX 40xx / L4 / L40 (8.9), H100 / H200 (9.0), plus PTX of 9.0 that newer GPUs JIT-compile.
DEFAULT_CUDA_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"
# Where NVIDIA's installers put the toolkit (a link to the versioned folder).
DEFAULT_CUDA_ROOT = "/usr/local/cuda"

# -std=c++20: the sources use C++20 (std::bit_cast, ...); torch before 2.13 passes -std=c++17 unless a
# -std flag is given.
# -g0: Python's CFLAGS carry -g, which makes the .so 50x larger for no benefit.
# -fno-math-errno: lets `#pragma omp simd` loops vectorise sqrt (the kernels never read errno).
BASE_CXX_FLAGS = ["-std=c++20", "-O3", "-g0", "-fno-math-errno"]
NVCC_FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr"]

_OPENMP_PROBE = """
#include <omp.h>
int din_fast_probe() {
  int n = 0;
#pragma omp parallel reduction(+ : n)
  n += omp_get_num_threads() > 0;
  return n;
}
"""
_SIMD_PROBE = """
float din_fast_probe(const float* x, int n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += x[i];
  return s;
}
"""


class CudaToolkitNotFound(RuntimeError):
    """No CUDA toolkit root could be found (the message says which variable to set)."""


def sources(root: Path) -> tuple[list[str], list[str]]:
    """The C++ sources and the CUDA sources of the extension under ``root`` (the folder holding csrc/),
    as sorted absolute paths."""
    csrc = Path(root) / "csrc"
    cpp = sorted(glob.glob(str(csrc / "*.cpp")) + glob.glob(str(csrc / "cpu" / "*.cpp")))
    cuda = sorted(glob.glob(str(csrc / "cuda" / "*.cu")))
    return cpp, cuda


def _compiles(compiler: list[str], code: str, flags: list[str]) -> bool:
    """True when ``compiler`` builds ``code`` into a shared library with ``flags`` (warnings are errors,
    so a compiler that ignores an unknown pragma does not pass)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text(code)
        cmd = [*compiler, "-shared", "-fPIC", "-Werror", *flags, str(src), "-o", str(Path(tmp) / "probe.so")]
        try:
            return subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


def openmp_flags(compiler: list[str]) -> tuple[list[str], list[str], str]:
    """(compile flags, link flags, description) for OpenMP with ``compiler`` (argv prefix, e.g.
    ``["g++"]``). ``DIN_FAST_OPENMP=0`` skips OpenMP (what a compiler without it gets)."""
    if os.environ.get("DIN_FAST_OPENMP") != "0":
        for cflags, lflags in ((["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], ["-lomp"])):
            if _compiles(compiler, _OPENMP_PROBE, cflags + lflags):
                return cflags, lflags, "OpenMP (" + " ".join(cflags) + ")"
    if _compiles(compiler, _SIMD_PROBE, ["-fopenmp-simd"]):
        return ["-fopenmp-simd"], [], "no OpenMP: at::parallel_for runs on one thread (-fopenmp-simd only)"
    return [], [], "no OpenMP: at::parallel_for runs on one thread, no omp simd"


def cxx_compiler() -> list[str]:
    """The C++ compiler torch's builds use: ``$CXX`` or ``c++``."""
    return os.environ.get("CXX", "c++").split()


def _is_cuda_root(path: str) -> bool:
    root = Path(path)
    nvcc = root / "bin" / ("nvcc.exe" if sys.platform == "win32" else "nvcc")
    return nvcc.is_file()


def find_cuda_home() -> str:
    """The CUDA toolkit root, from ``CUDA_HOME``, ``CUDA_PATH``, ``/usr/local/cuda`` or the real location
    of ``nvcc`` on PATH (symlinks resolved), in that order; a root must hold ``bin/nvcc``.

    torch guesses the root as the parent of ``which nvcc``'s folder, which is wrong when nvcc on PATH is
    a link or wrapper outside the toolkit (``/usr/local/bin/nvcc``: then ``-lcudart`` is not found).
    Raises CudaToolkitNotFound naming the variable to set."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value:
            if not _is_cuda_root(value):
                raise CudaToolkitNotFound(f"{var}={value} is not a CUDA toolkit (no bin/nvcc there): set {var} to "
                                          "the toolkit's root, e.g. /usr/local/cuda-13.0")
            return value
    candidates = [DEFAULT_CUDA_ROOT]
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        candidates.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    for root in candidates:
        if _is_cuda_root(root):
            return root
    raise CudaToolkitNotFound("no CUDA toolkit found (looked at CUDA_HOME, CUDA_PATH, /usr/local/cuda and nvcc on "
                              "PATH): set CUDA_HOME to the toolkit's root (the folder with bin/nvcc), or build "
                              "the CPU kernels only with DIN_FAST_SKIP_CUDA=1")


def cuda_arch_list(gpu_visible: bool) -> str | None:
    """The TORCH_CUDA_ARCH_LIST to set, or None to leave torch's choice: a list the user gave, or the
    visible GPUs' architectures. torch's own default with no GPU visible is an empty list (IndexError)."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST") or gpu_visible:
        return None
    return DEFAULT_CUDA_ARCH_LIST


def build_info_path(library: Path) -> Path:
    """Where what a built _C library was built for is written: next to it, named after it (one source
    folder may hold libraries for several Pythons)."""
    return library.with_name(library.name + ".build.json")


def build_info(torch_module: object, with_cuda: bool, openmp: str) -> dict:
    """What a build was made for: torch version and CUDA, Python, platform, whether the CUDA kernels are
    in it, and its OpenMP state (``torch_module`` is the imported torch)."""
    import platform

    return {"torch": torch_module.__version__, "torch_cuda": torch_module.version.cuda,
            "python": platform.python_version(), "platform": f"{sys.platform}-{platform.machine()}",
            "cuda_kernels": with_cuda, "openmp": openmp}
