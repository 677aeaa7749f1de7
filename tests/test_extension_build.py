"""How din_fast._C is built and loaded (issue 18 item 3, issue 21 items 1 and 3): the CUDA toolkit root,
the default GPU architectures, the OpenMP probe, and what a user is told when no kernels load.

The first-use build itself (a fresh venv, plain ``pip install -e .``, an op runs on cpp afterwards) and
the CUDA build are CI steps (.ci/build-matrix.sh, .ci/run): each costs minutes of compilation.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from din_fast import _build, _extension

REPO = Path(__file__).resolve().parents[1]


def _toolkit(folder: Path) -> Path:
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "nvcc").write_text("#!/bin/sh\n")
    return folder


def _clear_cuda_env(monkeypatch):
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)


def test_cuda_home_is_taken_from_the_variables_in_order(tmp_path, monkeypatch):
    _clear_cuda_env(monkeypatch)
    home, path = _toolkit(tmp_path / "home"), _toolkit(tmp_path / "path")
    monkeypatch.setenv("CUDA_PATH", str(path))
    assert _build.find_cuda_home() == str(path)
    monkeypatch.setenv("CUDA_HOME", str(home))
    assert _build.find_cuda_home() == str(home)


def test_a_wrong_cuda_home_names_the_variable(tmp_path, monkeypatch):
    _clear_cuda_env(monkeypatch)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    with pytest.raises(_build.CudaToolkitNotFound, match="CUDA_HOME=.*no bin/nvcc.*set CUDA_HOME"):
        _build.find_cuda_home()


def test_cuda_home_follows_nvcc_links_on_path(tmp_path, monkeypatch):
    """nvcc on PATH is a link outside the toolkit (/usr/local/bin/nvcc): the root is where it points,
    not the link's parent (torch's guess, which then cannot find -lcudart)."""
    _clear_cuda_env(monkeypatch)
    root = _toolkit(tmp_path / "cuda-13.0")
    links = tmp_path / "local" / "bin"
    links.mkdir(parents=True)
    (links / "nvcc").symlink_to(root / "bin" / "nvcc")
    (root / "bin" / "nvcc").chmod(0o755)
    monkeypatch.setattr(_build, "DEFAULT_CUDA_ROOT", str(tmp_path / "absent"))
    monkeypatch.setenv("PATH", str(links))
    assert _build.find_cuda_home() == str(root)


def test_no_toolkit_says_which_variable_to_set(tmp_path, monkeypatch):
    _clear_cuda_env(monkeypatch)
    monkeypatch.setattr(_build, "DEFAULT_CUDA_ROOT", str(tmp_path / "absent"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(_build.CudaToolkitNotFound, match="set CUDA_HOME"):
        _build.find_cuda_home()


def test_default_arch_list_only_without_a_gpu_or_a_user_list(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    assert _build.cuda_arch_list(gpu_visible=False) == "8.0;8.6;8.9;9.0+PTX"
    assert _build.cuda_arch_list(gpu_visible=True) is None  # torch compiles for the visible GPUs
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    assert _build.cuda_arch_list(gpu_visible=False) is None


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_openmp_probe(monkeypatch):
    monkeypatch.delenv("DIN_FAST_OPENMP", raising=False)
    assert _build.openmp_flags(["g++"])[:2] == (["-fopenmp"], ["-fopenmp"])
    monkeypatch.setenv("DIN_FAST_OPENMP", "0")
    cflags, lflags, note = _build.openmp_flags(["g++"])
    assert (cflags, lflags) == (["-fopenmp-simd"], []) and "one thread" in note
    # A compiler that cannot build the probe gets no flags at all.
    assert _build.openmp_flags(["false"])[:2] == ([], [])


def _run(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "DIN_FAST_CACHE": str(tmp_path / "cache"), **env}
    full_env.pop("DIN_FAST_DISABLE_EXT", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


# `sys.modules["din_fast._C"] = None` makes the installed extension unimportable, as in an install that
# compiled none (an isolated build without torch); the cache folder is empty.
_NOT_BUILT = "import sys; sys.modules['din_fast._C'] = None\n"


def test_no_kernels_and_build_off_warns_once_at_import_and_runs_the_reference(tmp_path):
    code = _NOT_BUILT + (
        "import warnings; warnings.simplefilter('always')\n"
        "import torch, din_fast.ops\n"
        "from din_fast import _extension, backends\n"
        "from din_fast.info import report\n"
        "x = torch.randn(1, 4, 8, 8); w = torch.randn(4, 4, 3, 3); b = torch.randn(4)\n"
        "y = din_fast.ops.conv3x3(x, w, b)\n"
        "assert backends.resolve('conv3x3', x.device, x.dtype) == 'reference'\n"
        "assert not _extension.has_ops()\n"
        "print(report())\n")
    run = _run(code, tmp_path, DIN_FAST_JIT="0")
    assert run.returncode == 0, run.stderr
    warning = [line for line in run.stderr.splitlines() if "ExtensionWarning" in line]
    assert len(warning) == 1, run.stderr  # once, at import, not again when the op runs
    assert "din_fast._C is not built" in warning[0] and "DIN_FAST_JIT=0" in warning[0] and "Fix:" in warning[0]
    assert "pip install --no-build-isolation" in warning[0]
    assert "building din_fast's C++ kernels" not in run.stderr
    assert "NOT loaded — din_fast._C is not built" in run.stdout
    assert "circular import" not in run.stdout + run.stderr


def test_with_the_build_on_import_stays_quiet_and_info_does_not_build(tmp_path):
    """The build waits for the first op: importing din_fast and `din-fast info` never compile."""
    code = _NOT_BUILT + "import din_fast.ops\nfrom din_fast.info import report\nprint(report())\n"
    run = _run(code, tmp_path, DIN_FAST_JIT="1")
    assert run.returncode == 0, run.stderr
    assert "ExtensionWarning" not in run.stderr and "building" not in run.stderr
    assert "it is built on the first use of an op, one time" in run.stdout
    assert not (tmp_path / "cache").exists()


def test_an_extension_built_for_another_torch_is_not_loaded_and_says_both_versions(tmp_path, monkeypatch):
    library = tmp_path / "_C.so"
    _build.build_info_path(library).write_text(json.dumps({"torch": "2.0.0"}))
    monkeypatch.setattr(_extension, "_installed_library", lambda: library)
    why = _extension._load_installed()
    assert why is not None
    assert f"built for torch 2.0.0 but torch {torch.__version__} is running" in why


def test_a_cached_build_is_used_only_for_the_same_sources(tmp_path, monkeypatch):
    csrc = tmp_path / "csrc"
    csrc.mkdir()
    (csrc / "module.cpp").write_text("int a;\n")
    before = _extension._sources_digest(csrc)
    (csrc / "module.cpp").write_text("int b;\n")
    assert _extension._sources_digest(csrc) != before
