"""``import spandrel`` for the tests, also where torchvision is installed but cannot be imported.

spandrel imports torchvision (``torchvision.transforms.functional``) for two of its architectures only,
LaMa and RestoreFormer, and calls it only when those run. Where torch is a CPU build (``2.13.0+cpu``)
and torchvision is PyPI's wheel of the same release, a CUDA build, torchvision's C extension does not
load and ``import torchvision`` raises (RuntimeError: operator torchvision::nms does not exist): then a
stand-in ``torchvision`` whose every name raises when used is put in ``sys.modules`` first, so that all
of spandrel these tests use (registry, loader, descriptors, its other architectures) is its real code.
"""

from __future__ import annotations

import functools
import importlib.machinery
import sys
import types

import pytest


class _Unavailable:
    """A torchvision name that cannot be used here (calling it or reading its attributes raises)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} is not importable in this environment")

    def __getattr__(self, attr: str):
        return _Unavailable(f"{self._name}.{attr}")


def _stand_in() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported real package
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__getattr__ = functools.partial(_missing, name)
        sys.modules[name] = module


def _missing(module: str, attr: str) -> _Unavailable:
    if attr.startswith("__"):  # (the import system's and find_spec's questions get the usual answer)
        raise AttributeError(attr)
    return _Unavailable(f"{module}.{attr}")


def import_spandrel():
    """The spandrel module; the test is skipped when spandrel is not installed."""
    pytest.importorskip("spandrel")  # (a broken torchvision raises here too: only a missing spandrel skips)
    return sys.modules["spandrel"]


def _import() -> None:
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError:
        pass
    except (ImportError, RuntimeError, OSError):
        _stand_in()


_import()
