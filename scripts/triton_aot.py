"""Every Triton kernel of din_fast.kernels compiled ahead of time for sm_80 and sm_90, without a GPU, at the
launch configurations the code really uses, with ptxas' resource report and the same asserts as
scripts/cuda_resources.py (no spills, shared memory and registers within a block's limits).

1. Capture (a child process with ``TRITON_INTERPRET=1``): every registered model runs forward and
   backward under ``din_fast.use_backend("triton")`` on CPU at a small input, in float32 / float16 /
   bfloat16, NCHW and channels_last, with each kernel launch *recorded instead of executed* (argument
   dtypes and 16-byte alignment, integer and constexpr values, ``num_warps``). The block sizes and
   warps are thus whatever the launchers in din_fast/kernels pick — nothing is restated here.
2. Compile: each distinct launch is bound by Triton's own specialisation (integer values 1 and
   multiples of 16, pointer alignment, as a GPU launch would) and compiled with
   ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``; the PTX goes through
   Triton's bundled ``ptxas -v`` for registers and spills, and Triton's metadata gives the shared
   memory the launch requests (Triton kernels use dynamic shared memory only).

Asserted per (kernel, arch, config): no spill; shared memory ≤ the arch's per-block limit (Triton
launches opt in to the large carve-out: 163 KiB sm_80, 227 KiB sm_90); registers × threads ≤ 64 Ki.

Usage: python scripts/triton_aot.py [--arch 80 90] [--models din defian-l ...] [--jobs N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ARCHS = (80, 90)
#: Largest shared memory per block with the opt-in (cudaFuncAttributeMaxDynamicSharedMemorySize).
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
REGISTER_FILE = 64 * 1024
#: Dtypes the models run in during capture; float16 launches are the bfloat16 ones with the dtype
#: swapped (the launchers treat the two alike: both accumulate in float32), because float16
#: convolutions on CPU are too slow for the capture run.
DTYPES = ("float32", "bfloat16")
#: Low-resolution input of the capture run (its spatial size only changes grid sizes and integer
#: arguments, which the launchers turn into block sizes only through channel counts and tiles).
INPUT_HW = (24, 20)


# ---------------------------------------------------------------- capture (child process) -----------

def _encode(value: Any) -> Any:
    import torch
    import triton.language as tl

    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).removeprefix("torch."), "aligned": value.data_ptr() % 16 == 0}
    if isinstance(value, tl.dtype):
        return {"tl_dtype": value.name}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record a kernel argument of type {type(value).__name__}")


def capture(models: list[str]) -> list[dict]:
    """Runs the models under the triton backend with every launch recorded, not executed."""
    assert os.environ.get("TRITON_INTERPRET") == "1", "capture needs TRITON_INTERPRET=1 (run it via main())"
    import torch
    from triton.runtime.interpreter import InterpretedFunction

    import din_fast
    from din_fast.models import create_model

    launches: dict[str, dict] = {}

    def record(self, *args, grid, warmup, **kwargs):
        entry = {"module": self.fn.__module__, "name": self.fn.__qualname__,
                 "args": [_encode(a) for a in args], "kwargs": {k: _encode(v) for k, v in kwargs.items()}}
        launches.setdefault(json.dumps(entry, sort_keys=True), entry)

    InterpretedFunction.run = record
    for name in models:
        for dtype in DTYPES:
            for fmt in (torch.contiguous_format, torch.channels_last):
                torch.manual_seed(0)
                model = create_model(name).to(getattr(torch, dtype))
                x = torch.rand(1, 3, *INPUT_HW, dtype=getattr(torch, dtype)).contiguous(memory_format=fmt)
                x.requires_grad_(True)  # the convolutions carry the input's layout through the model
                with din_fast.use_backend("triton"):
                    model(x).float().sum().backward()
    half = [json.loads(key.replace('"bfloat16"', '"float16"')) for key in launches if '"bfloat16"' in key]
    return list(launches.values()) + half


# ---------------------------------------------------------------- compile -----------------------------

@dataclass(frozen=True)
class Row:
    kernel: str
    arch: int
    dtype: str
    config: str  # constexprs and num_warps
    registers: int
    spill_stores: int
    spill_loads: int
    shared: int
    threads: int


def _decode(value: Any) -> Any:
    import torch
    import triton.language as tl

    if isinstance(value, dict) and "tensor" in value:
        t = torch.empty(32, dtype=getattr(torch, value["tensor"]))  # CPU allocations are 64-byte aligned
        return t if value["aligned"] else t[1:]
    if isinstance(value, dict) and "tl_dtype" in value:
        return tl.dtype(value["tl_dtype"])
    return value


def _ptxas(capability: int) -> tuple[str, str]:
    """Triton's bundled ptxas and the GPU name Triton compiles for (sm_90a on Hopper)."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    return get_ptxas(capability).path, sm_arch_from_capability(capability)


_PTXAS_USED = re.compile(r"Used (\d+) registers")
_PTXAS_FRAME = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def bind(entry: dict, arch: int) -> tuple:
    """Triton's own specialisation of one recorded launch for sm_<arch>: (fn, signature, constexprs,
    attrs, options), as JITFunction.run computes it on a GPU."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = getattr(importlib.import_module(entry["module"]), entry["name"])
    args = [_decode(a) for a in entry["args"]]
    kwargs = {k: _decode(v) for k, v in entry["kwargs"].items()}
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    return fn, signature, constexprs, attrs, options


def specialisation_key(entry: dict) -> str:
    """Launches with equal keys compile to the same binary (integer values only matter through it)."""
    fn, signature, constexprs, attrs, options = bind(entry, ARCHS[0])
    return repr((entry["module"], entry["name"], signature, sorted(constexprs.items(), key=repr),
                 sorted(attrs.items()), options.num_warps, options.num_stages))


def compile_launch(entry: dict, arch: int) -> Row:
    """Compiles one recorded launch for sm_<arch> and reads its resource use."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, signature, constexprs, attrs, options = bind(entry, arch)
    source = ASTSource(fn, signature, constexprs, attrs)
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options.__dict__)
    ptxas, gpu = _ptxas(arch)
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "k.ptx"
        ptx.write_text(kernel.asm["ptx"])
        res = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", str(ptx), "-o", str(Path(tmp) / "k.cubin")],
                             capture_output=True, text=True, check=True)
    report = res.stdout + res.stderr
    regs = int(_PTXAS_USED.search(report).group(1))
    stores, loads = (int(g) for g in _PTXAS_FRAME.search(report).groups())
    dtypes = sorted({a["tensor"] for a in entry["args"] if isinstance(a, dict) and "tensor" in a} - {"int64"})
    const = {fn.arg_names[p[0]]: v for p, v in constexprs.items()}
    config = ", ".join(f"{k}={getattr(v, 'name', v)}" for k, v in const.items() if v is not None)
    config += f", warps={kernel.metadata.num_warps}"
    return Row(f"{entry['module'].rsplit('.', 1)[-1]}.{entry['name']}", arch, "/".join(dtypes), config, regs,
               stores, loads, kernel.metadata.shared, 32 * kernel.metadata.num_warps)


def violations(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        where = f"{r.kernel} sm_{r.arch} {r.dtype} [{r.config}]"
        if r.spill_stores or r.spill_loads:
            out.append(f"{where}: spills {r.spill_stores} B stored / {r.spill_loads} B loaded")
        if r.shared > SHARED_LIMIT[r.arch]:
            out.append(f"{where}: shared memory {r.shared} B > {SHARED_LIMIT[r.arch]} B")
        if r.registers * r.threads > REGISTER_FILE:
            out.append(f"{where}: {r.registers} registers × {r.threads} threads > {REGISTER_FILE}")
    return out


def format_table(rows: list[Row]) -> str:
    lines = ["| kernel | arch | dtypes | config | regs | spill st/ld B | shared B |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r.kernel, r.dtype, r.config, r.arch)):
        lines.append(f"| `{r.kernel}` | sm_{r.arch} | {r.dtype} | {r.config} | {r.registers} | "
                     f"{r.spill_stores}/{r.spill_loads} | {r.shared} |")
    return "\n".join(lines)


def _compile_job(job: tuple[dict, int]) -> Row:
    return compile_launch(*job)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", type=int, default=list(ARCHS))
    parser.add_argument("--models", nargs="+", help="default: every registered model")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--capture", type=Path, help=argparse.SUPPRESS)  # child: write launches as JSON
    args = parser.parse_args(argv)
    if args.capture is None and os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: compiling needs @triton.jit functions, not interpreted ones")
    if args.capture is not None:
        args.capture.write_text(json.dumps(capture(args.models)))
        return 0
    if args.models is None:
        from din_fast.models.registry import list_models

        args.models = list(list_models())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "launches.json"
        subprocess.run([sys.executable, __file__, "--capture", str(out), "--models", *args.models],
                       env={**os.environ, "TRITON_INTERPRET": "1"}, check=True)
        recorded = json.loads(out.read_text())
    launches = list({specialisation_key(e): e for e in recorded}.values())
    jobs = [(entry, arch) for entry in launches for arch in args.arch]
    with concurrent.futures.ProcessPoolExecutor(max(1, args.jobs)) as pool:
        rows = list(pool.map(_compile_job, jobs))
    print(format_table(rows))
    bad = violations(rows)
    kernels = len({r.kernel for r in rows})
    print(f"\n{len(launches)} distinct launches of {kernels} kernels × {len(args.arch)} "
          f"arch(s) from models {', '.join(args.models)}")
    for msg in bad:
        print("VIOLATION:", msg)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
