"""Every kernel compiles for the GPUs users have, checked without a GPU (issue 18 item 2).

- scripts/cuda_resources.py: csrc/cuda/*.cu for sm_80/86/89/90 with ptxas' resource report; no spills,
  shared memory (static + the launch's dynamic size) within 48 KiB, registers × threads within 64 Ki.
- scripts/triton_aot.py: every Triton kernel launch the models make, compiled for sm_80 and sm_90.
A planted kernel that spills (and one over the shared-memory budget) proves each assertion fires.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and process pools look the module up by name
    spec.loader.exec_module(module)
    return module


cuda_resources = _load("cuda_resources")
triton_aot = _load("triton_aot")
needs_nvcc = pytest.mark.skipif(cuda_resources.find_nvcc() is None,
                                reason="nvcc not found (/usr/local/cuda/bin/nvcc, $NVCC or PATH)")

SPILLING_CU = r"""
// __launch_bounds__(1024, 2) caps a thread at 32 registers; 64 values live at once do not fit: spills.
__global__ void __launch_bounds__(1024, 2) spilling_kernel(float* out, int n) {
  float v[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) v[i] = out[i * n + threadIdx.x];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 64; ++i) s += v[i] * v[127 - i];
  out[threadIdx.x] = s;
}
// Named like channel_sums.cuh's kernel, so its launch's dynamic shared memory (at MAX_CHANNELS) is added
// to these 40 000 B static (ptxas itself rejects static shared memory over 48 KiB).
__global__ void sums_kernel(float* out) {
  __shared__ float tile[10000];
  tile[threadIdx.x] = out[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = tile[9999 - threadIdx.x];
}
"""


def _launch_args(text: str, start: int) -> list[str]:
    """Top-level comma-separated arguments of the call whose '(' is at text[start]."""
    args, depth, cur = [], 0, ""
    for ch in text[start + 1:]:
        if ch in "(<[{":
            depth += 1
        elif ch in ")>]}":
            if depth == 0:
                return args + [cur.strip()]
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        cur += ch
    raise ValueError("unbalanced launch call")


def test_dynamic_shared_launches_have_a_size():
    """Every launch in csrc/cuda that requests dynamic shared memory (4th argument of cuda::launch not 0)
    names a kernel with its size in DYNAMIC_SHARED (else the check would count it as 0)."""
    kernels = set()
    for src in sorted((ROOT / "csrc" / "cuda").glob("*.cu*")):
        text = src.read_text()
        for m in re.finditer(r"(?<![\w:])(?:cuda::)?launch\(", text):
            if text[max(0, m.start() - 5):m.start()] == "void ":
                continue  # the definition in launch.cuh
            args = _launch_args(text, m.end() - 1)
            if args[3] != "0":
                kernels.add(args[0].split("<", 1)[0])
    assert kernels, "no launch with dynamic shared memory found: the parser above is out of date"
    assert kernels <= set(cuda_resources.DYNAMIC_SHARED), kernels - set(cuda_resources.DYNAMIC_SHARED)


def test_violations_rules():
    """Each rule fires exactly at its limit (rows built by hand, no nvcc)."""
    row = dict(source="x.cu", kernel="k", arch=90, registers=32, spill_stores=0, spill_loads=0, stack=0,
               static_shared=0, dynamic_shared=0)
    ok = cuda_resources.Usage(**row)
    assert cuda_resources.violations([ok]) == []
    assert cuda_resources.violations([cuda_resources.Usage(**{**row, "spill_loads": 4})])
    at_budget = {**row, "static_shared": 16 * 1024, "dynamic_shared": 32 * 1024}
    assert cuda_resources.violations([cuda_resources.Usage(**at_budget)]) == []
    assert cuda_resources.violations([cuda_resources.Usage(**{**at_budget, "dynamic_shared": 32 * 1024 + 4})])
    assert cuda_resources.violations([cuda_resources.Usage(**{**row, "registers": 256})]) == []  # 256 × 256
    assert cuda_resources.violations([cuda_resources.Usage(**{**row, "registers": 257})])


@needs_nvcc
def test_planted_spill_and_shared_overflow_are_caught(tmp_path):
    src = tmp_path / "planted.cu"
    src.write_text(SPILLING_CU)
    rows = cuda_resources.compile_source(cuda_resources.find_nvcc(), src, (80,), [])
    msgs = cuda_resources.violations(rows)
    assert any("spilling_kernel" in m and "spills" in m for m in msgs), msgs
    assert any("sums_kernel" in m and "shared memory" in m for m in msgs), msgs
    assert len(msgs) == 2, msgs


@pytest.mark.slow
@needs_nvcc
def test_cuda_kernels_fit_every_arch():
    """The whole script: every csrc/cuda source compiles for sm_80/86/89/90 within the budgets."""
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "cuda_resources.py")], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for arch in cuda_resources.ARCHS:
        assert f"| sm_{arch} |" in res.stdout
    print(res.stdout)


TRITON_SPILL = '''
import triton
import triton.language as tl


@triton.jit
def hoarder(x, out, N: tl.constexpr):
    """N fp32 values kept live across a block sum: with one warp that is N/32 values per thread, over
    the 255 registers a thread may have when N = 8192."""
    offs = tl.arange(0, N)
    v = tl.load(x + offs)
    tl.store(out + offs, v * tl.sum(v, axis=0))
'''


def _without_interpreter() -> dict:
    """Compilation needs real @triton.jit functions: tests/conftest.py sets TRITON_INTERPRET=1."""
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def test_planted_triton_spill_is_caught(tmp_path):
    """A Triton kernel far over the register file compiles (no GPU) and the spill check fires."""
    pytest.importorskip("triton")
    (tmp_path / "planted_triton.py").write_text(TRITON_SPILL)
    launch = {"module": "planted_triton", "name": "hoarder",
              "args": [{"tensor": "float32", "aligned": True}] * 2, "kwargs": {"N": 8192, "num_warps": 1}}
    code = ("import json, sys; sys.path[:0] = sys.argv[1:3]; import triton_aot; "
            f"row = triton_aot.compile_launch({launch!r}, 80); "
            "print(json.dumps([row.spill_stores, row.registers, triton_aot.violations([row])]))")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(ROOT / "scripts")],
                         capture_output=True, text=True, env=_without_interpreter())
    assert res.returncode == 0, res.stderr[-4000:]
    spill_stores, registers, msgs = json.loads(res.stdout.splitlines()[-1])
    assert spill_stores > 0 and registers > 0
    assert len(msgs) == 1 and "spills" in msgs[0], msgs
