"""The CUDA kernels of ``csrc/cuda/`` built for the CPU emulation of the CUDA execution model.

``load()`` compiles each ``csrc/cuda/<op>.cu`` (kernels and launcher, the source the GPU build compiles)
as host C++ with ``DIN_FAST_CUDA_EMULATION`` defined, together with the emulation runtime
(``csrc/cuda_emulation/runtime.{h,cpp}``: what it models and what it cannot see is in runtime.h's
header), into a test-only library loaded with ``torch.utils.cpp_extension.load``; it is never part of
``din_fast._C``. The launchers register as CPU kernels of ``din_fast_cuda_emulation::_<op>_cuda`` and
``_<op>_backward_cuda``, whose schemas are copied here from the same-named ``din_fast`` ops, so
``load()._asyca_cuda(x1, ...)`` runs the CUDA kernels on CPU tensors with the CUDA op's signature.

The build (about two minutes on two cores, then cached) goes to ``$DIN_FAST_CUDA_EMULATION_BUILD``
or ``build/cuda_emulation`` in the checkout; ninja rebuilds what a changed source or header touches.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
#: Every op with CUDA kernels (one ``csrc/cuda/<op>.cu`` each).
OPS = tuple(sorted(p.stem for p in (CSRC / "cuda").glob("*.cu")))
NAMESPACE = "din_fast_cuda_emulation"
#: -O1: the emulation spends its time switching fibers, not in the kernels' arithmetic, and -O1 builds
#: the many kernel instantiations much faster than -O3.
CFLAGS = ["-O1", "-g0", "-fno-strict-aliasing", "-DDIN_FAST_CUDA_EMULATION"]

_library: torch.library.Library | None = None


def _define_schemas() -> None:
    """The emulated ops take the CUDA ops' schemas (defined by din_fast.ops from one string each)."""
    global _library
    import din_fast.ops  # noqa: F401  (defines the din_fast::_<op>_cuda schemas)

    _library = torch.library.Library(NAMESPACE, "DEF")
    for op in OPS:
        for name in (f"_{op}_cuda", f"_{op}_backward_cuda"):
            schema = str(getattr(torch.ops.din_fast, name).default._schema)
            _library.define(schema.split("::", 1)[1])


@cache
def load():
    """Build (if needed) and load the emulated kernels; returns the ``torch.ops`` namespace of them."""
    from torch.utils import cpp_extension

    _define_schemas()
    build = Path(os.environ.get("DIN_FAST_CUDA_EMULATION_BUILD", ROOT / "build" / "cuda_emulation"))
    build.mkdir(parents=True, exist_ok=True)
    sources = [CSRC / "cuda_emulation" / f"{name}.cpp" for name in ("runtime",) + OPS]
    cpp_extension.load(name=NAMESPACE, sources=[str(s) for s in sources], extra_cflags=CFLAGS,
                       extra_include_paths=[str(CSRC)], build_directory=str(build), is_python_module=False,
                       verbose=False)
    return getattr(torch.ops, NAMESPACE)
