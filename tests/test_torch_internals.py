"""din_fast._torch_internals: each stand-in for a private torch API still does what torch's own does."""

import re
from pathlib import Path

import pytest
import torch

from din_fast import _torch_internals
from din_fast.ops import _library


def test_assume_constant_result_marks_like_torch():
    def ours() -> int:
        return 0

    def torchs() -> int:
        return 0

    assert _torch_internals.assume_constant_result(ours) is ours
    torch.compiler.assume_constant_result(torchs)
    assert vars(ours) == vars(torchs) != {}


ROOT = Path(__file__).resolve().parents[1]


def test_private_torch_api_lives_in_one_python_module_and_one_cpp_file():
    python = [p for p in [*(ROOT / "din_fast").rglob("*.py"), *(ROOT / "kernels").rglob("*.py")]
              if p.name != "_torch_internals.py" and re.search(r"torch\._C\b", p.read_text())]
    assert not python
    cpp = [p for p in (ROOT / "csrc").rglob("*") if p.is_file() and "torch/csrc/" in p.read_text()]
    assert [p.name for p in cpp] == ["eager_autograd.cpp"]
    for path in (ROOT / "din_fast" / "_torch_internals.py", ROOT / "csrc" / "eager_autograd.cpp"):
        assert re.search(r"[Cc]hecked on torch 2\.\d+", path.read_text()), path


def test_schemas_are_parsed_by_torch():
    assert _library._tensor_params("f(Tensor x, Tensor[] ys) -> Tensor") == [("Tensor", "x"), ("Tensor[]", "ys")]
    with pytest.raises(ValueError, match="argument k must be a Tensor or a Tensor\\[\\], not int"):
        _library._tensor_params("f(Tensor x, int k) -> Tensor")
    with pytest.raises(ValueError, match="returns one Tensor"):
        _library._tensor_params("f(Tensor x) -> (Tensor, Tensor)")
    with pytest.raises(RuntimeError):  # torch's parser rejects what str.split would have accepted
        _library._tensor_params("f(Tensor x,, Tensor y) -> Tensor")


def test_pinned_internals_still_answer():
    assert _torch_internals.autocast_dispatch_key("cpu")[0] == "AutocastCPU"
    assert _torch_internals.has_kernel("aten::add.Tensor", "CPU")
    assert not _torch_internals.any_autocast_enabled()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _torch_internals.any_autocast_enabled()
    assert _torch_internals.dispatch_mode_depth() == 0 and _torch_internals.jit_tracing_state() is None
    assert not _torch_internals.torch_function_mode_enabled() and not _torch_internals.functorch_transforms_active()
