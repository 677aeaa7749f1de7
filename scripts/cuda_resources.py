"""Resource use of every CUDA kernel in csrc/cuda/*.cu for the GPUs users have, without a GPU.

Compiles each source for sm_80, sm_86, sm_89 and sm_90 (``nvcc --fatbin --resource-usage``, device code
only, against the installed torch's headers; a CPU-only torch works because its wheel ships the
ATen/c10 CUDA headers), parses ptxas' report per kernel instantiation and prints one table row per
(kernel, arch): registers, spill stores/loads, stack frame, static shared memory and the largest
dynamic (``extern __shared__``) size its launch requests. It exits 1 on a violation:

- any spill (a store to / load from local memory that the register allocator could not avoid) beyond
  the bounded, documented ``KNOWN_SPILLS``;
- static + dynamic shared memory over the per-block budget without opt-in: 48 KiB (no launch in
  csrc/cuda calls ``cudaFuncSetAttribute(..., cudaFuncAttributeMaxDynamicSharedMemorySize)``; with
  opt-in the limits would be 163 KiB sm_80, 99 KiB sm_86/sm_89, 227 KiB sm_90);
- registers × threads per block over the 64 Ki registers of an SM (a block that cannot be resident).

Dynamic shared memory depends on the channel count C in the channels_last reductions; ``DYNAMIC_SHARED``
restates each launch's size (the shared-bytes argument of its ``cuda::launch`` in csrc/cuda) and the check uses
``MAX_CHANNELS``. tests/test_gpu_compile.py fails when a launch requesting dynamic shared memory has no
entry. Wider maps are safe by construction: ``cuda::launch`` refuses a request above 48 KiB
(``kMaxDynamicShared``, launch.cuh) and those launchers stay below it (fewer inputs per launch, or an
NCHW copy), which tests/test_cuda_emulation.py runs at thousands of channels.

Usage: python scripts/cuda_resources.py [--arch 80 86 89 90] [--jobs N] [file.cu ...]
(NVCC=/path/to/nvcc overrides the nvcc found at /usr/local/cuda/bin or on PATH.)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
ARCHS = (80, 86, 89, 90)
SHARED_BUDGET = 48 * 1024  # bytes per block without the dynamic-shared-memory opt-in
REGISTER_FILE = 64 * 1024  # 32-bit registers per SM (sm_80 … sm_90)
#: Threads per block of every launch in csrc/cuda (cuda_utils.cuh kThreads, mshf kTile², dilated_encdec
#: kTileW·kTileH); a larger block must raise this and then the register check binds (255 regs × 256 fit).
MAX_THREADS_PER_BLOCK = 256
#: Widest feature map the channels_last reductions are checked at (the models use at most 64 channels).
MAX_CHANNELS = 512
#: Largest acc_t (float64 inputs accumulate in float64).
MAX_ACC_BYTES = 8
#: kernel name → bytes of dynamic shared memory its launch requests at C channels (the channels_last
#: branch; the NCHW branch requests kThreads / 32 accumulators).
DYNAMIC_SHARED: dict[str, Callable[[int], int]] = {
    # channel_sums.cuh channel_sums: ns · C · sizeof(acc_t), ns ≤ 4
    "sums_kernel": lambda c: 4 * c * MAX_ACC_BYTES,
    # dwc_sum.cu dwc_sum_backward_cuda: (k + 1) · C · sizeof(acc_t), k ≤ kMaxK = 6
    "backward_kernel": lambda c: 7 * c * MAX_ACC_BYTES,
}
#: Spills measured in csrc/cuda that are tolerated until fixed, as kernel name → most bytes stored or
#: loaded in one instantiation: dilated_encdec's register-tiled convolutions spill 4-16 B at some
#: (dtype, layer, arch) combinations (float64 on sm_80-89, float32 layers on sm_80/90). Any other
#: spill, or a larger one here, is a violation.
KNOWN_SPILLS: dict[str, int] = {"conv_kernel": 16, "weight_grad_kernel": 16}
FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
         "-diag-suppress=3189", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
         "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "-DTORCH_EXTENSION_NAME=_C",
         "-DTORCH_API_INCLUDE_EXTENSION_H"]


@dataclass(frozen=True)
class Usage:
    """ptxas' resource report of one kernel instantiation for one arch."""
    source: str
    kernel: str  # demangled, without the anonymous namespace
    arch: int
    registers: int
    spill_stores: int
    spill_loads: int
    stack: int
    static_shared: int
    dynamic_shared: int

    @property
    def shared(self) -> int:
        return self.static_shared + self.dynamic_shared


def find_nvcc() -> str | None:
    """$NVCC, else /usr/local/cuda/bin/nvcc, else nvcc on PATH."""
    for cand in (os.environ.get("NVCC"), "/usr/local/cuda/bin/nvcc", shutil.which("nvcc")):
        if cand and Path(cand).is_file():
            return cand
    return None


def include_flags() -> list[str]:
    """-I of torch's headers (from this interpreter's torch), the Python headers and csrc/."""
    from torch.utils.cpp_extension import include_paths

    dirs = [*include_paths(), sysconfig.get_paths()["include"], str(ROOT / "csrc")]
    return [f"-I{d}" for d in dirs]


_ENTRY = re.compile(r"Compiling entry function '(\S+)' for 'sm_(\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def demangle(names: list[str]) -> list[str]:
    """C++ names via c++filt (mangled names when it is missing)."""
    if not names or shutil.which("c++filt") is None:
        return names
    res = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    return res.stdout.splitlines()


def parse_ptxas(text: str, source: str, max_channels: int = MAX_CHANNELS) -> list[Usage]:
    """Usage rows from nvcc --resource-usage output (one 'Compiling entry function' block per kernel)."""
    blocks = []
    current: dict | None = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = {"mangled": m.group(1), "arch": int(m.group(2)), "registers": 0, "frame": (0, 0, 0),
                       "smem": 0}
            blocks.append(current)
        elif current is not None:
            if m := _FRAME.search(line):
                current["frame"] = tuple(int(g) for g in m.groups())
            if m := _USED.search(line):
                current["registers"] = int(m.group(1))
                if s := _SMEM.search(line):
                    current["smem"] = int(s.group(1))
    names = demangle([b["mangled"] for b in blocks])
    rows = []
    for b, name in zip(blocks, names):
        kernel = re.sub(r"din_fast::(\w+::|\(anonymous namespace\)::)*", "", name).split("(", 1)[0]
        kernel = kernel.removeprefix("void ")
        base = kernel.split("<", 1)[0]
        dyn = DYNAMIC_SHARED[base](max_channels) if base in DYNAMIC_SHARED else 0
        stack, stores, loads = b["frame"]
        rows.append(Usage(source, kernel, b["arch"], b["registers"], stores,
                          loads, stack, b["smem"], dyn))
    return rows


def compile_source(nvcc: str, source: Path, archs: tuple[int, ...], includes: list[str]) -> list[Usage]:
    """Runs nvcc on one .cu (device code only) and parses ptxas' report; raises on a compile error."""
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, "--fatbin", str(source), "-o", str(Path(tmp) / "out.fatbin"), "--resource-usage",
               *FLAGS, *includes, *gencode]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"nvcc failed on {source.name}:\n{res.stdout}{res.stderr}")
    return parse_ptxas(res.stdout + res.stderr, source.name)


def violations(rows: list[Usage]) -> list[str]:
    """One message per broken rule (see the module docstring)."""
    out = []
    for r in rows:
        where = f"{r.source} sm_{r.arch} {r.kernel}"
        allowed = KNOWN_SPILLS.get(r.kernel.split("<", 1)[0], 0)
        if max(r.spill_stores, r.spill_loads) > allowed:
            out.append(f"{where}: spills {r.spill_stores} B stored / {r.spill_loads} B loaded")
        if r.shared > SHARED_BUDGET:
            out.append(f"{where}: shared memory {r.static_shared} static + {r.dynamic_shared} dynamic "
                       f"= {r.shared} B > {SHARED_BUDGET} B")
        if r.registers * MAX_THREADS_PER_BLOCK > REGISTER_FILE:
            out.append(f"{where}: {r.registers} registers × {MAX_THREADS_PER_BLOCK} threads "
                       f"> {REGISTER_FILE}")
    return out


def format_table(rows: list[Usage]) -> str:
    """Markdown table, one row per (kernel instantiation, arch)."""
    lines = ["| source | kernel | arch | regs | spill st/ld B | stack B | smem static B | smem dynamic B |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r.source, r.kernel, r.arch)):
        cells = [r.source, f"`{r.kernel}`", f"sm_{r.arch}", r.registers, f"{r.spill_stores}/{r.spill_loads}",
                 r.stack, r.static_shared, r.dynamic_shared]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", type=Path, help="default: every csrc/cuda/*.cu")
    parser.add_argument("--arch", nargs="+", type=int, default=list(ARCHS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    nvcc = find_nvcc()
    if nvcc is None:
        print("nvcc not found (set NVCC or install the CUDA toolkit)", file=sys.stderr)
        return 2
    sources = args.sources or sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
    includes = include_flags()
    rows: list[Usage] = []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for result in pool.map(lambda s: compile_source(nvcc, s, tuple(args.arch), includes), sources):
            rows += result
    print(format_table(rows))
    bad = violations(rows)
    print(f"\n{len(rows)} kernel instantiations × arch from {len(sources)} file(s); "
          f"dynamic shared memory at C = {MAX_CHANNELS}, budget {SHARED_BUDGET} B, "
          f"{MAX_THREADS_PER_BLOCK} threads/block")
    for msg in bad:
        print("VIOLATION:", msg)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
