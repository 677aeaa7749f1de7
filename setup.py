"""Build din_fast._C: the C++ CPU kernels, plus the CUDA kernels when torch is a CUDA build.

Package metadata lives in pyproject.toml; this file only decides which extension to build.

Environment:
    DIN_FAST_SKIP_EXT=1   build no extension (pure Python: every op runs its reference).
    FORCE_CUDA=1          compile csrc/cuda even if torch reports no CUDA (needs CUDA_HOME).
    MAX_JOBS              parallel compile jobs (ninja).
"""

import glob
import os

from setuptools import setup


def _extensions() -> tuple[list, dict]:
    if os.environ.get("DIN_FAST_SKIP_EXT") == "1":
        print("din_fast: DIN_FAST_SKIP_EXT=1, building without din_fast._C")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("din_fast: torch is not importable at build time (did you forget --no-build-isolation?); "
              "building without din_fast._C")
        return [], {}

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    want_cuda = (torch.version.cuda is not None or os.environ.get("FORCE_CUDA") == "1") and bool(cuda_sources)
    use_cuda = want_cuda and CUDA_HOME is not None
    if want_cuda and not use_cuda:
        print("din_fast: torch is a CUDA build but CUDA_HOME was not found; building CPU kernels only")
    # -g0: Python's CFLAGS carry -g, which makes the .so 50x larger for no benefit.
    # -fno-math-errno: lets `#pragma omp simd` loops vectorise sqrt (the kernels never read errno).
    cxx = ["-O3", "-g0", "-fopenmp", "-fno-math-errno"]
    if use_cuda:
        ext = CUDAExtension(
            "din_fast._C",
            sources + cuda_sources,
            include_dirs=[os.path.abspath("csrc")],
            define_macros=[("DIN_FAST_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension("din_fast._C", sources, include_dirs=[os.path.abspath("csrc")],
                           extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    print(f"din_fast: building din_fast._C ({'CPU + CUDA' if use_cuda else 'CPU'} kernels)")
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
