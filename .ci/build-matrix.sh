#!/usr/bin/env bash
# The builds CI proves beyond the main venv (issues 18 item 3, 21 items 3 and 5), called by .ci/run with
# its venv active (torch 2.13.0 CPU, din_fast installed, the `build` package). Each step prints its time.
#   sdist     python -m build --sdist holds every kernel source, the Triton kernels, weights, sample image.
#   aarch64   every C++ source passes aarch64-linux-gnu-g++ -fsyntax-only against torch's headers.
#   oldest    torch 2.11 (the oldest supported; what the lent GPU machines run), clang, no OpenMP, CPU
#             kernels: a wheel built from the sdist (must contain din_fast/_C), installed in a fresh venv,
#             kernels registered in a fresh process, the README's main job, op and model tests.
#   newest    torch 2.14.1 (CUDA 13 build, no GPU here), gcc + OpenMP, CPU + CUDA kernels for ONE arch
#             (sm_90; the default list is 4 archs + PTX): wheel from the sdist, every _<op>_cuda kernel
#             registered in a fresh process, op and model tests (on CPU).
# A tool that is missing and cannot be installed (apt-get as root) gives a SKIPPED line, not a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d)
# The op and model tests, without those of the Triton interpreter: they depend on the triton version the
# torch pins (3.6.0 for torch 2.11 fails one), not on the C++ build; the main suite runs them.
TESTS="tests/test_backends.py tests/test_models.py"

step() {  # step NAME COMMAND...: run, then print its wall time
    local name=$1 start=$SECONDS
    shift
    echo "== build-matrix: $name"
    "$@"
    echo "== build-matrix: $name done in $((SECONDS - start)) s"
}

have_or_install() {  # have_or_install COMMAND DEBIAN_PACKAGE: 0 when COMMAND is (now) on PATH
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q "$2" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$2" >/dev/null 2>&1; } || true
    fi
    command -v "$1" >/dev/null
}

sdist() {
    python -m build --sdist -o "$WORK/dist" >"$WORK/sdist.log" 2>&1 || { cat "$WORK/sdist.log"; return 1; }
    local listing
    listing=$(tar tzf "$WORK"/dist/din_fast-*.tar.gz | sed 's|^[^/]*/||')
    for f in csrc/module.cpp csrc/common.h csrc/simd.h csrc/vec_math.h csrc/cpu/kernel_utils.h csrc/cuda/cuda_utils.cuh \
             kernels/__init__.py din_fast/_version.py din_fast/assets/sample.png din_fast/weights/default_x4.safetensors; do
        grep -qx "$f" <<<"$listing" || { echo "FAIL: the sdist lacks $f"; return 1; }
    done
    local ours theirs
    ours=$(cd "$ROOT" && git ls-files csrc | sort)
    theirs=$(grep '^csrc/.' <<<"$listing" | grep -v '/$' | sort)
    [ "$ours" = "$theirs" ] || { echo "FAIL: the sdist's csrc/ differs from the repository's"; diff <(echo "$ours") <(echo "$theirs"); return 1; }
}

aarch64() {
    if ! have_or_install aarch64-linux-gnu-g++ g++-aarch64-linux-gnu; then
        echo "SKIPPED aarch64: aarch64-linux-gnu-g++ is not installed and apt-get could not install it"
        return 0
    fi
    local flags
    flags="-std=c++20 -fopenmp -Icsrc -I$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    flags="$flags $(python -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")"
    # shellcheck disable=SC2086
    printf '%s\n' csrc/*.cpp csrc/cpu/*.cpp | xargs -P 2 -I{} sh -c \
        "aarch64-linux-gnu-g++ -fsyntax-only $flags -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H {} || { echo 'FAIL (aarch64): {}'; exit 255; }"
}

# fresh_venv DIR PYTHON TORCH_REQUIREMENT: a venv with that torch and what din_fast and the tests need
fresh_venv() {
    "$2" -m venv "$1"
    "$1/bin/python" -m pip install -q "$3" "setuptools>=77" wheel numpy pillow safetensors tqdm pyyaml matplotlib ninja pytest hypothesis
}

# wheel_and_test VENV [--cuda]: build the wheel from the sdist there, install it, check and test it
wheel_and_test() {
    local venv=$1 python=$1/bin/python
    shift
    MAX_JOBS=2 "$python" -m pip wheel -q --no-build-isolation --no-deps "$WORK"/dist/din_fast-*.tar.gz -w "$venv/wheel"
    # grep reads the whole listing (not -q, which exits at the first match): under pipefail, zipfile
    # writing into a closed pipe would fail the check.
    "$python" -m zipfile -l "$venv"/wheel/din_fast-*.whl | grep 'din_fast/_C\..*so' >/dev/null || { echo "FAIL: the wheel has no din_fast/_C"; return 1; }
    "$python" -m pip install -q --no-deps "$venv"/wheel/din_fast-*.whl
    # From outside the source tree, so the installed package is the one imported.
    (cd "$WORK" && DIN_FAST_JIT=0 "$python" "$ROOT/.ci/check_kernels.py" "$@")
    (cd "$WORK" && DIN_FAST_JIT=0 "$venv/bin/din-fast" upscale "$ROOT/din_fast/assets/sample.png" -o "$venv/sample_x4.png" --scale 4)
    # The tests import the installed din_fast too (rootdir's din_fast/ is shadowed by pytest's rootdir
    # insertion only for conftest; PYTHONSAFEPATH keeps the source folder off sys.path).
    # Without CC/CXX: they choose the compiler of our extension (built above); torch.compile's C++ code,
    # which includes omp.h, is left to torch's own default compiler.
    # shellcheck disable=SC2086
    (cd "$ROOT" && env -u CC -u CXX DIN_FAST_JIT=0 PYTHONSAFEPATH=1 "$python" -m pytest -q -x -p no:cacheprovider \
        -k "not triton" $TESTS)
}

oldest() {
    local py candidate
    for candidate in python3.12 python3.11 python3; do  # 3.12: what the lent GPU machines run
        if "$candidate" -c "" 2>/dev/null; then py=$candidate; break; fi
    done
    if ! have_or_install clang++ clang; then
        echo "SKIPPED oldest/clang: clang++ is not installed and apt-get could not install it"
        return 0
    fi
    fresh_venv "$WORK/oldest" "$py" torch==2.11.0
    CC=clang CXX=clang++ DIN_FAST_OPENMP=0 DIN_FAST_SKIP_CUDA=1 wheel_and_test "$WORK/oldest"
}

newest() {
    local nvcc
    nvcc=$(command -v nvcc || true)
    [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
    if [ -z "$nvcc" ]; then
        echo "SKIPPED newest/CUDA: no nvcc (no CUDA toolkit at /usr/local/cuda or on PATH); CPU kernels only"
        fresh_venv "$WORK/newest" python3 torch==2.14.1
        DIN_FAST_SKIP_CUDA=1 wheel_and_test "$WORK/newest"
        return
    fi
    fresh_venv "$WORK/newest" python3 torch==2.14.1
    TORCH_CUDA_ARCH_LIST=9.0 wheel_and_test "$WORK/newest" --cuda
}

# Every step needs the sdist; `bash .ci/build-matrix.sh aarch64 newest` runs a subset.
for name in sdist ${*:-aarch64 oldest newest}; do
    step "$name" "$name"
done
rm -rf "$WORK"
