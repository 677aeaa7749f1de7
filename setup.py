"""Build din_fast._C: the C++ CPU kernels, plus the CUDA kernels when torch is a CUDA build.

Package metadata lives in pyproject.toml; this file only decides which extension to build. How it is
compiled (sources, flags, the OpenMP probe, the CUDA toolkit and architectures) is din_fast/_build.py,
shared with the one-time build on first use (din_fast/_extension.py).

Environment:
    DIN_FAST_SKIP_EXT=1   build no extension here (din_fast then builds its kernels on first use).
    DIN_FAST_SKIP_CUDA=1  build the CPU kernels only, even with a CUDA torch.
    DIN_FAST_OPENMP=0     build without OpenMP even if the compiler has it.
    FORCE_CUDA=1          compile csrc/cuda even if torch reports no CUDA (needs a CUDA toolkit).
    CUDA_HOME, CUDA_PATH  the CUDA toolkit's root (else /usr/local/cuda, else nvcc's real location).
    TORCH_CUDA_ARCH_LIST  GPU architectures; default: the visible GPUs', or 8.0;8.6;8.9;9.0+PTX with none.
    CXX                   the C++ compiler (default c++); MAX_JOBS: parallel compile jobs (ninja).
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _load_build_module():
    """din_fast/_build.py, loaded by path: importing the din_fast package would need torch and its deps."""
    spec = importlib.util.spec_from_file_location("din_fast_build", ROOT / "din_fast" / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _use_cuda(build, torch) -> bool:
    """Whether to compile csrc/cuda; sets CUDA_HOME and TORCH_CUDA_ARCH_LIST for torch when it does."""
    forced = os.environ.get("FORCE_CUDA") == "1"
    if os.environ.get("DIN_FAST_SKIP_CUDA") == "1" or not (torch.version.cuda is not None or forced):
        return False
    try:
        os.environ["CUDA_HOME"] = build.find_cuda_home()  # before torch.utils.cpp_extension reads it
    except build.CudaToolkitNotFound as exc:
        if forced:
            raise SystemExit(f"din_fast: FORCE_CUDA=1 but {exc}")
        print(f"din_fast: WARNING: torch {torch.__version__} is a CUDA build, but {exc}. "
              "Building the CPU kernels only.", file=sys.stderr)
        return False
    arch_list = build.cuda_arch_list(gpu_visible=torch.cuda.is_available())
    if arch_list is not None:
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
        print(f"din_fast: no GPU visible and TORCH_CUDA_ARCH_LIST unset: compiling for {arch_list}")
    return True


def _extensions() -> tuple[list, dict]:
    if os.environ.get("DIN_FAST_SKIP_EXT") == "1":
        print("din_fast: DIN_FAST_SKIP_EXT=1, building without din_fast._C (built on first use instead)")
        return [], {}
    try:
        import torch
    except ImportError:
        print("din_fast: torch is not importable at build time (an isolated build, or torch not installed); "
              "din_fast builds its C++ kernels on first use instead")
        return [], {}
    build = _load_build_module()
    cpp_sources, cuda_sources = build.sources(ROOT)
    use_cuda = bool(cuda_sources) and _use_cuda(build, torch)
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    omp_cflags, omp_lflags, omp_note = build.openmp_flags(build.cxx_compiler())
    cxx = build.BASE_CXX_FLAGS + omp_cflags
    relative = [os.path.relpath(s, ROOT) for s in cpp_sources + (cuda_sources if use_cuda else [])]
    if use_cuda:
        ext = CUDAExtension("din_fast._C", relative, include_dirs=[str(ROOT / "csrc")],
                            define_macros=[("DIN_FAST_WITH_CUDA", None)],
                            extra_compile_args={"cxx": cxx, "nvcc": build.NVCC_FLAGS}, extra_link_args=omp_lflags)
    else:
        ext = CppExtension("din_fast._C", relative, include_dirs=[str(ROOT / "csrc")],
                           extra_compile_args={"cxx": cxx}, extra_link_args=omp_lflags)

    class BuildWithInfo(BuildExtension):
        """Writes, next to the built _C, which torch it was built against (din_fast._extension reports a
        mismatch after a torch upgrade with both versions)."""

        def run(self) -> None:
            super().run()
            target = build.build_info_path(Path(self.get_ext_fullpath("din_fast._C")))
            target.write_text(json.dumps(build.build_info(torch, use_cuda, omp_note)))

    print(f"din_fast: building din_fast._C ({'CPU + CUDA' if use_cuda else 'CPU'} kernels, {omp_note})")
    return [ext], {"build_ext": BuildWithInfo}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
