"""Loads din_fast in this (fresh) process and checks that its compiled extension registered every C++ kernel
the ops declare: ``_<op>_cpp`` (CPU) always, ``_<op>_cuda`` (CUDA) with ``--cuda``; forward and backward.
Undefined symbols only show when the library loads, so this runs in a new process after each build."""

import argparse
import sys

import torch

import din_fast.ops  # noqa: F401  (registers the ops, loads din_fast._C)
from din_fast import _extension, backends


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cuda", action="store_true", help="also require every declared CUDA kernel")
    args = parser.parse_args()
    if not _extension.has_ops():
        print(f"FAIL: din_fast._C did not load: {_extension.load_error()}")
        return 1
    wanted = [("cpp", "CPU")] + ([("cuda", "CUDA")] if args.cuda else [])
    missing, found = [], 0
    for op in backends.op_names():
        for impl, key in wanted:
            if impl not in backends.kernels(op):
                continue
            for name in (f"_{op}_{impl}", f"_{op}_backward_{impl}"):
                if torch._C._dispatch_has_kernel_for_dispatch_key(f"din_fast::{name}", key):
                    found += 1
                else:
                    missing.append(f"{name} ({key})")
    info = _extension.build_info()
    print(f"din_fast._C from {info['extension_path']}, built for {info['built_for']}: {found} kernels registered")
    if missing:
        print("FAIL: not registered: " + ", ".join(missing))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
