"""``python -m din_fast.info``: versions, the extension's state, and which implementation of each op exists."""

from __future__ import annotations

import platform
import sys


def report() -> str:
    """A human-readable report of the installation."""
    import torch

    import din_fast
    import din_fast.ops  # noqa: F401  (registers the ops, which declare their kernels to backends)
    from din_fast import _extension, backends

    info = _extension.build_info()
    lines = [
        f"din_fast {din_fast.__version__}",
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda or 'none'}, GPU {'available' if torch.cuda.is_available() else 'not available'})",
        f"threads: {torch.get_num_threads()}",
    ]
    try:
        import triton

        lines.append(f"triton {triton.__version__}")
    except ImportError:
        lines.append("triton: not installed")
    if info["extension_loaded"]:
        lines.append(f"extension din_fast._C: loaded from {info['extension_path']} "
                     f"(CPU kernels: {info['cpu_isa']})")
    else:
        lines.append(f"extension din_fast._C: NOT loaded — {info['extension_error']}")
    lines.append(f"backend: {backends.get_backend()}")
    lines.append("ops (implementation: state; 'auto' on CPU float32 → chosen):")
    for op, impls in info["ops"].items():
        auto = backends.resolve(op, torch.device("cpu"), torch.float32) if backends.get_backend() == "auto" else "-"
        states = ", ".join(f"{k}: {v}" for k, v in impls.items())
        lines.append(f"  {op:16s} {states}; auto on CPU → {auto}")
    return "\n".join(lines)


def main() -> int:
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
