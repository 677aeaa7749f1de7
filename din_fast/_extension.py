"""Loading of the compiled extension ``din_fast._C``, and building it once on first use when there is none.

The extension *registers* kernels (C++ CPU, C++/CUDA) on ops whose schemas are defined in Python;
its Python functions: ``cpu_isa()`` names the instruction set its CPU kernels run with;
``eager_kernels()`` and ``eager_call()`` are FusedOp's eager fast path for the C++ implementations
(din_fast/ops/_library.py, csrc/eager_autograd.cpp).

At import (cheap: it never compiles), the first of these that loads is used:

1. ``din_fast/_C*.so`` built by ``setup.py`` (``pip install --no-build-isolation``), unless the torch it
   was built for (``_C.build.json`` next to it) is not the running one;
2. the first-use build cached for this torch, Python and platform, if it was built from the sources
   that are here now.

Otherwise the first op that asks for a compiled implementation (``ensure_loaded()``, called by
``din_fast.backends`` when it resolves an implementation) builds the kernels with
``torch.utils.cpp_extension.load`` from the shipped ``csrc/`` into that cache, once, with a progress
message; every later process loads the cached build at import. This is what a plain ``pip install -e .``
(an isolated build env without torch) and a torch upgraded after the install rely on.

``DIN_FAST_JIT=0`` turns the first-use build off; ``DIN_FAST_DISABLE_EXT=1`` loads nothing at all;
``DIN_FAST_CACHE`` moves the cache (default ``$XDG_CACHE_HOME/din_fast`` or ``~/.cache/din_fast``).
When no kernels load and none can be built (build off, no compiler, no ninja, no csrc/), or a build
fails, a warning says once what failed and the command that fixes it; every op still runs its
reference implementation, and ``din-fast info`` says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from din_fast import _build

_PACKAGE = Path(__file__).resolve().parent
_FIX_INSTALL = "pip install --no-build-isolation -e .  (from din_fast's source folder, after installing torch)"


class ExtensionWarning(RuntimeWarning):
    """din_fast's C++ kernels are not loaded: ops run their (slower) reference implementations."""


_LOADED = False
_C: Any = None
_ERROR: str | None = None
_WHY_NOT_INSTALLED = ""  # why no prebuilt extension loaded at import
_PATH: str | None = None
_BUILD_TRIED = False
_DEFER_BUILD = 0


def _csrc() -> Path | None:
    """The shipped kernel sources: ``csrc/`` next to the package in a source tree (editable install),
    or ``din_fast/csrc`` inside an installed wheel."""
    for candidate in (_PACKAGE.parent / "csrc", _PACKAGE / "csrc"):
        if (candidate / "module.cpp").is_file():
            return candidate
    return None


def _sources_digest(csrc: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in csrc.rglob("*") if p.is_file() and p.suffix in (".cpp", ".h", ".cu", ".cuh")):
        digest.update(str(path.relative_to(csrc)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_dir() -> Path:
    """The folder of the first-use build for the running torch, Python and platform."""
    root = os.environ.get("DIN_FAST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "din_fast")
    tag = f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}-{sys.platform}-{platform.machine()}"
    return Path(root) / "kernels" / tag


def _read_build_info(library: Path) -> dict | None:
    try:
        return json.loads(_build.build_info_path(library).read_text())
    except (OSError, ValueError):
        return None


def _load_from(path: Path) -> Any:
    """Import the extension library at ``path`` as ``din_fast._C`` (its init function is PyInit__C)."""
    spec = importlib.util.spec_from_file_location("din_fast._C", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a loadable extension")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the static kernel registrations
    sys.modules["din_fast._C"] = module
    return module


def _accept(module: Any, path: str | None) -> None:
    global _LOADED, _C, _PATH, _ERROR
    _C, _LOADED, _PATH, _ERROR = module, True, path, None


def _mismatch(built: dict) -> str:
    return (f"din_fast._C was built for torch {built.get('torch')} but torch {torch.__version__} is running "
            "(torch was upgraded or changed after din_fast was installed)")


def _installed_library() -> Path | None:
    """The setup.py-built din_fast._C library for this Python, if there is one."""
    spec = importlib.util.find_spec("din_fast._C")
    return Path(spec.origin) if spec is not None and spec.origin else None


def _load_installed() -> str | None:
    """Load the setup.py-built din_fast._C; None on success, else why not."""
    library = _installed_library()
    if library is None:
        return "din_fast._C is not built (the install compiled no kernels: e.g. an isolated build without torch)"
    built = _read_build_info(library)
    if built is not None and built.get("torch") != torch.__version__:
        return _mismatch(built)  # loading a library built against another torch can crash; don't try
    try:
        from din_fast import _C as module  # import runs the static kernel registrations
    except ImportError as exc:
        # The library is there but does not load: built against another torch (undefined symbol).
        was = f"built for torch {built['torch']}, " if built else ""
        return (f"din_fast._C exists but does not load ({was}running torch {torch.__version__}: "
                f"most likely torch changed after the build): {type(exc).__name__}: {exc}")
    _accept(module, getattr(module, "__file__", None))
    return None


def _load_cached() -> bool:
    """Load the first-use build from the cache if it was built from the current sources."""
    csrc, folder = _csrc(), cache_dir()
    library = folder / ("_C.pyd" if sys.platform == "win32" else "_C.so")
    built = _read_build_info(library)
    if csrc is None or built is None or not library.is_file():
        return False
    if built.get("torch") != torch.__version__ or built.get("sources") != _sources_digest(csrc):
        return False
    try:
        _accept(_load_from(library), str(library))
    except ImportError:
        return False
    return True


def _build_blocker() -> tuple[str, str] | None:
    """(what prevents the first-use build, the command that fixes it), or None when it can run."""
    if os.environ.get("DIN_FAST_JIT") == "0":
        return "the first-use build is off (DIN_FAST_JIT=0)", f"unset DIN_FAST_JIT, or {_FIX_INSTALL}"
    if _csrc() is None:
        return "din_fast's C++ sources (csrc/) are not installed", "reinstall din_fast from its sdist or source tree"
    compiler = _build.cxx_compiler()[0]
    if shutil.which(compiler) is None:
        fix = "xcode-select --install" if sys.platform == "darwin" else "apt-get install g++ (or your system's C++ compiler)"
        return f"no C++ compiler ({compiler!r} is not on PATH; set CXX to choose one)", fix
    if _ninja_dir() is None:
        return "ninja is not installed", "pip install ninja"
    return None


def _ninja_dir() -> str | None:
    """The folder holding ninja: on PATH, or the pip package's (a venv used without activating it)."""
    found = shutil.which("ninja")
    if found is not None:
        return os.path.dirname(found)
    if importlib.util.find_spec("ninja") is not None:
        import ninja

        candidate = getattr(ninja, "BIN_DIR", None)
        if candidate and os.path.isfile(os.path.join(candidate, "ninja")):
            return candidate
    return None


def _warn(what: str, fix: str) -> None:
    warnings.warn(f"din_fast: its C++ kernels are not loaded, every op runs its slower reference implementation. "
                  f"{what}. Fix: {fix}", ExtensionWarning, stacklevel=3)


def _uses_cuda() -> tuple[bool, str]:
    """Whether the first-use build compiles csrc/cuda (a CUDA torch and a CUDA toolkit), and why not."""
    if torch.version.cuda is None or os.environ.get("DIN_FAST_SKIP_CUDA") == "1":
        return False, ""
    try:
        cuda_home = _build.find_cuda_home()
    except _build.CudaToolkitNotFound as exc:
        return False, f"CPU kernels only: {exc}"
    import torch.utils.cpp_extension as cpp_extension

    os.environ["CUDA_HOME"] = cuda_home
    cpp_extension.CUDA_HOME = cuda_home  # read when torch.utils.cpp_extension was imported
    arch_list = _build.cuda_arch_list(gpu_visible=torch.cuda.is_available())
    if arch_list is not None:
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    return True, ""


def estimated_minutes(n_cpp: int, n_cuda: int) -> int:
    """Rough wall time of the build: about half a CPU minute per C++ file and two per CUDA file (-O3; a
    2-core x86-64 VM took 4 CPU minutes for the 11 C++ files), spread over the parallel jobs."""
    jobs = int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1)
    return max(1, math.ceil((n_cpp + 4 * n_cuda) / (2 * jobs)))


def _build_and_load() -> None:
    """Compile the shipped csrc/ for the running torch into cache_dir() and load it."""
    global _ERROR
    from torch.utils.cpp_extension import load

    csrc = _csrc()
    assert csrc is not None  # _build_blocker() checked
    cpp, cuda = _build.sources(csrc.parent)
    with_cuda, cuda_note = _uses_cuda()
    if not with_cuda:
        cuda = []
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    ninja = _ninja_dir()
    if ninja is not None and shutil.which("ninja") is None:
        os.environ["PATH"] = ninja + os.pathsep + os.environ.get("PATH", "")
    omp_cflags, omp_lflags, omp_note = _build.openmp_flags(_build.cxx_compiler())
    print(f"din_fast: building din_fast's C++ kernels for torch {torch.__version__}, one time, about "
          f"{estimated_minutes(len(cpp), len(cuda))} minutes ({len(cpp)} C++{f' + {len(cuda)} CUDA' if cuda else ''} "
          f"files, {omp_note}{'; ' + cuda_note if cuda_note else ''}) into {folder}", file=sys.stderr, flush=True)
    start = time.monotonic()
    module = load(name="_C", sources=cpp + cuda, extra_include_paths=[str(csrc)],
                  extra_cflags=_build.BASE_CXX_FLAGS + omp_cflags + (["-DDIN_FAST_WITH_CUDA"] if cuda else []),
                  extra_cuda_cflags=_build.NVCC_FLAGS + ["-DDIN_FAST_WITH_CUDA"], extra_ldflags=omp_lflags,
                  build_directory=str(folder), with_cuda=bool(cuda), verbose=False)
    info = _build.build_info(torch, bool(cuda), omp_note) | {"sources": _sources_digest(csrc)}
    _build.build_info_path(Path(module.__file__)).write_text(json.dumps(info))
    sys.modules["din_fast._C"] = module
    _accept(module, getattr(module, "__file__", None))
    print(f"din_fast: built in {time.monotonic() - start:.0f} s; later processes load it at import",
          file=sys.stderr, flush=True)


def ensure_loaded() -> bool:
    """True when the extension is loaded; if it is not, build it now for the running torch (once per
    process, and only once per torch/Python/platform: the build is cached). Called where an op first
    asks for a compiled implementation, so ``import din_fast`` never compiles."""
    global _BUILD_TRIED, _ERROR
    if _LOADED or _BUILD_TRIED or _DEFER_BUILD or os.environ.get("DIN_FAST_DISABLE_EXT") == "1":
        return _LOADED
    _BUILD_TRIED = True
    if _build_blocker() is not None:
        return False  # warned at import
    try:
        _build_and_load()
    except Exception as exc:  # noqa: BLE001  (any build failure leaves the reference ops running)
        _ERROR = f"{_WHY_NOT_INSTALLED}; the first-use build failed: {type(exc).__name__}: {str(exc).strip()[-2000:]}"
        _warn(f"Building them for torch {torch.__version__} failed ({type(exc).__name__}: "
              f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r})",
              f"install a C++ compiler and ninja, then retry; or {_FIX_INSTALL}")
    return _LOADED


@contextlib.contextmanager
def build_deferred() -> Iterator[None]:
    """Within the block, ``ensure_loaded()`` reports the current state without building
    (``din-fast info`` describes the installation as it is)."""
    global _DEFER_BUILD
    _DEFER_BUILD += 1
    try:
        yield
    finally:
        _DEFER_BUILD -= 1


def _load_at_import() -> None:
    global _ERROR, _WHY_NOT_INSTALLED
    if os.environ.get("DIN_FAST_DISABLE_EXT") == "1":
        _ERROR = "disabled by DIN_FAST_DISABLE_EXT=1"
        return
    why = _load_installed()
    if why is None or _load_cached():
        return
    _WHY_NOT_INSTALLED = why
    blocker = _build_blocker()
    if blocker is None:
        _ERROR = f"{why}; it is built on the first use of an op, one time, for torch {torch.__version__}"
        return
    what, fix = blocker
    _ERROR = f"{why}; {what}"
    _warn(f"{why}, and {what}", fix)


_load_at_import()


def module() -> Any:
    """The extension module ``din_fast._C`` (None when it is not loaded)."""
    return _C if _LOADED else None


def has_ops() -> bool:
    """True when the compiled extension ``din_fast._C`` was loaded (never builds; see ensure_loaded)."""
    return _LOADED


def load_error() -> str | None:
    """Why the extension is not loaded (None when it is)."""
    return _ERROR


def build_info() -> dict:
    """What was built: the extension's path or load error, the torch it was built for and the instruction
    set of its CPU kernels ("avx512", "avx2" or "baseline"; None without the extension). Which
    implementations each op has is ``din_fast.backends.implementations`` (``din-fast info`` shows both)."""
    built = _read_build_info(Path(_PATH)) if _PATH else None
    return {
        "extension_loaded": _LOADED,
        "extension_path": _PATH,
        "extension_error": _ERROR,
        "built_for": built,
        "cpu_isa": _C.cpu_isa() if _LOADED else None,
    }
