"""``din_fast.export`` and ``din-fast export``: ONNX files of standard operators that onnxruntime runs at
sizes other than the traced one, torch.export programs that keep the ``din_fast::*`` ops, clear errors.

The ONNX tests need the ``export`` extra (onnx, onnxscript, onnxruntime) and skip without it."""

from __future__ import annotations

import sys

import pytest
import torch

import din_fast
from din_fast import create_model, list_models
from din_fast.cli import main
from din_fast.models.native import save_model
from tiny_models import TINY

EXAMPLE = (1, 3, 16, 12)
# Run sizes other than the example's: odd heights and widths, another batch, a side not divisible by 4
# (the strided restoration models pad to a multiple of 4 and crop back).
RUN_SHAPES = [(2, 3, 13, 9), (1, 3, 23, 30)]


def test_every_registered_model_is_covered():
    assert sorted(TINY) == list_models()


def _model(name: str) -> torch.nn.Module:
    scale, overrides = TINY[name]
    torch.manual_seed(1)
    return create_model(name, scale, **overrides).eval()


def _ours(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("name", sorted(TINY))
def test_onnx_runs_in_onnxruntime_at_other_sizes(name, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = _model(name)
    path = din_fast.export(model, tmp_path / f"{name}.onnx", example=torch.rand(EXAMPLE))
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}  # standard operators only
    assert not any(n.op_type.startswith(("din_fast", "conv3x3", "mshf")) for n in proto.graph.node)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("lr", "sr")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in RUN_SHAPES:
        x = torch.rand(shape)
        got = torch.from_numpy(session.run(None, {"lr": x.numpy()})[0])
        expected = _ours(model, x)
        assert got.shape == expected.shape == (shape[0], 3, shape[2] * model.scale, shape[3] * model.scale)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(TINY))
def test_pt2_keeps_our_ops_and_runs_at_other_sizes(name, tmp_path):
    model = _model(name)
    path = din_fast.export(model, tmp_path / f"{name}.pt2", example=torch.rand(EXAMPLE))
    program = torch.export.load(path)
    ours = {str(n.target).split(".")[1] for n in program.graph.nodes if str(n.target).startswith("din_fast.")}
    assert "conv3x3" in ours, ours
    assert not any(op.startswith("_") for op in ours), ours  # the public routers, not one backend's kernels
    module = program.module()
    for shape in RUN_SHAPES:
        x = torch.rand(shape)
        with torch.no_grad():
            got = module(x)
        torch.testing.assert_close(got, _ours(model, x), rtol=0, atol=1e-5)


def test_pt2_routes_at_run_time(tmp_path):
    """The program calls the public ops, whose routers pick the implementation when it runs: the
    reference gives the model's reference output, and a backend that cannot run on CPU says so."""
    model = _model("defian-s").double()
    module = torch.export.load(din_fast.export(model, tmp_path / "m.pt2")).module()
    x = torch.rand(1, 3, 11, 7, dtype=torch.float64)
    with din_fast.use_backend("reference"), torch.no_grad():
        torch.testing.assert_close(module(x), model(x), rtol=1e-12, atol=1e-12)
    with din_fast.use_backend("cuda"), pytest.raises(RuntimeError, match="cuda"):
        module(x)


def test_static_export_fixes_the_shape(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    path = din_fast.export(_model("drfn"), tmp_path / "m.onnx", example=torch.rand(1, 3, 10, 14), dynamic=False)
    dims = [d.dim_param or d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 10, 14]


def test_export_leaves_the_mode_and_backend(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model = _model("drfn").train()
    din_fast.export(model, tmp_path / "m.onnx")
    assert model.training and din_fast.get_backend() == "auto"


def test_missing_onnx_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript raises ImportError
    with pytest.raises(ImportError, match=r"needs the 'onnxscript' package .*din_fast\[export\]"):
        din_fast.export(_model("drfn"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("kwargs,message", [
    (dict(path="m.bin"), r"cannot tell the export format from '.*m\.bin'"),
    (dict(path="m.onnx", format="tflite"), "unknown export format 'tflite'"),
    (dict(path="m.pt2", example=torch.rand(3, 8, 8)), "expected a 4-D"),
    (dict(path="m.pt2", example=torch.rand(1, 3, 1, 8)), "height and width of at least 2"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    kwargs["path"] = tmp_path / kwargs["path"]
    with pytest.raises(ValueError, match=message):
        din_fast.export(_model("drfn"), **kwargs)


def test_cli_exports_weights_file(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = _model("drfn")
    save_model(model, str(tmp_path / "w.safetensors"))
    out = tmp_path / "drfn.onnx"
    assert main(["export", "--weights", str(tmp_path / "w.safetensors"), "-o", str(out)]) == 0
    assert f"exported drfn x4 to {out} (onnx" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(out))
    x = torch.rand(1, 3, 9, 7)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"lr": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), _ours(model, x), rtol=0, atol=1e-4)


def test_cli_random_weights_and_errors(tmp_path, capsys):
    out = tmp_path / "cirn.pt2"
    assert main(["export", "--model", "cirn", "--scale", "2", "--random-weights", "-o", str(out)]) == 0
    program = torch.export.load(out)
    assert program.module()(torch.rand(1, 3, 5, 7)).shape == (1, 3, 10, 14)
    capsys.readouterr()
    assert main(["export", "--random-weights", "-o", str(out)]) == 1
    assert "--random-weights needs --model" in capsys.readouterr().err
    assert main(["export", "--model", "cirn", "--scale", "2", "--random-weights", "-o", str(tmp_path / "x.zip")]) == 1
    assert "cannot tell the export format" in capsys.readouterr().err
