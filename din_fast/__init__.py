"""din_fast: fast, faithful DIN, DeFiAN, CIRN and DRFN super-resolution on fused PyTorch ops.

The public names load on first use (PEP 562), so ``import din_fast`` and the ``din-fast`` command's
``--help`` / ``--version`` import no torch. The fused ops (``torch.ops.din_fast.*``) are registered when
``din_fast.ops`` is imported: by any of the names below that needs them (models, ``upscale``, ...), or
``import din_fast.ops`` before loading a ``.pt2`` program.
"""

from __future__ import annotations

import importlib
from typing import Any

from din_fast._version import __version__

# Public name -> the module that defines it ("ops" is the subpackage itself).
_LAZY = {
    "ops": "din_fast.ops",
    "get_backend": "din_fast.backends", "set_backend": "din_fast.backends", "use_backend": "din_fast.backends",
    "export": "din_fast.deploy",
    "OptimizedModel": "din_fast.inference", "optimize": "din_fast.inference", "upscale": "din_fast.inference",
    **{name: "din_fast.models" for name in ("CIRN", "DIN", "DRFN", "CheckpointError", "DeFiAN", "SRModel",
                                             "create_model", "from_official", "list_models", "load_model")},
}

__all__ = sorted(["__version__", *_LAZY])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'din_fast' has no attribute {name!r}")
    imported = importlib.import_module(module)
    value = imported if module == f"din_fast.{name}" else getattr(imported, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
