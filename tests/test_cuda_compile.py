"""Every CUDA source compiles (nvcc -c against the installed torch headers; nothing is linked or run), so
CUDA kernels are checked on machines without a GPU or a CUDA build of torch. Skipped without nvcc."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles(source):
    script = ROOT / "scripts" / "check_cuda_compile.sh"
    result = subprocess.run(["bash", str(script), str(source.relative_to(ROOT))], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 file(s) OK" in result.stdout
