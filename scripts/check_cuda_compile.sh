#!/usr/bin/env bash
# Compile-only check of csrc/cuda/*.cu against the installed (CPU-only) torch headers: catches syntax,
# template and type errors without a GPU or a CUDA build of torch (nothing is linked or run).
# Usage: bash scripts/check_cuda_compile.sh [file.cu ...]   (default: every csrc/cuda/*.cu)
# Needs nvcc on PATH. Takes ~40 s per file. See shared/reference/build-and-toolchain.md §4.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvcc >/dev/null || { echo "nvcc not found: skipping the CUDA compile check"; exit 0; }
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(csrc/cuda/*.cu)
[ -e "${files[0]}" ] || { echo "no CUDA sources"; exit 0; }
TI=$(python -c "import torch.utils.cpp_extension as c; print(' '.join('-I'+p for p in c.include_paths()))")
PYI=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in "${files[@]}"; do
  echo "nvcc -c $f"
  # shellcheck disable=SC2086
  nvcc -c "$f" -o "$out/$(basename "$f").o" $TI -I"$PYI" -Icsrc -std=c++20 -O3 --expt-relaxed-constexpr \
    -Xcompiler -fPIC -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE -diag-suppress=3189 \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
    -D__CUDA_NO_HALF2_OPERATORS__ -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H \
    -gencode arch=compute_90,code=sm_90
done
echo "CUDA compile check: ${#files[@]} file(s) OK"
