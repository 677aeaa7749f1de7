"""``python -m din_fast.info``: versions, the extension's state, and which implementation of each op exists."""

from __future__ import annotations

import platform
import sys


def report() -> str:
    """A human-readable report of the installation."""
    import din_fast.ops  # noqa: F401  (registers the ops, which declare their kernels to backends)
    from din_fast import _extension

    with _extension.build_deferred():  # describe the install as it is; resolving below must not compile
        return _report(_extension.build_info())


def _report(info: dict) -> str:
    import torch

    import din_fast
    from din_fast import backends

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
        built = info["built_for"]
        built_for = f", built for torch {built['torch']}, {built['openmp']}" if built else ""
        lines.append(f"extension din_fast._C: loaded from {info['extension_path']} "
                     f"(CPU kernels: {info['cpu_isa']}{built_for})")
    else:
        lines.append(f"extension din_fast._C: NOT loaded — {info['extension_error']}")
    lines.append(f"backend: {backends.get_backend()}")
    lines.append("ops (implementation: state; 'auto' on CPU float32 → chosen):")
    for op in backends.op_names():
        impls = backends.implementations(op)
        auto = backends.resolve(op, torch.device("cpu"), torch.float32) if backends.get_backend() == "auto" else "-"
        states = ", ".join(f"{k}: {v}" for k, v in impls.items())
        lines.append(f"  {op:16s} {states}; auto on CPU → {auto}")
    return "\n".join(lines)


def main() -> int:
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
