"""ONNX Runtime and OpenVINO as benchmark peers: din_fast.deploy.runtimes runs an exported file with the
settings bench promises (threads, spinning off, f32), and ``din-fast bench`` times them beside ours.

Needs the export extra; the OpenVINO tests also need ``openvino`` (not in the dev extra) and skip without."""

from __future__ import annotations

import pytest
import torch

import din_fast
from din_fast import bench
from din_fast.deploy import runtimes

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

TINY = dict(channels=16, rcabs=1, modules=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(2)
    model = din_fast.create_model("defian-s", 2, **TINY).eval()
    path = din_fast.export(model, tmp_path_factory.mktemp("onnx") / "m.onnx")
    return model, str(path)


def _runtime_available(name: str) -> None:
    if name == "openvino":
        pytest.importorskip("openvino")


@pytest.mark.parametrize("runtime", runtimes.RUNTIMES)
def test_runner_matches_pytorch(exported, runtime):
    _runtime_available(runtime)
    model, path = exported
    run = runtimes.runner(runtime, path, threads=1)
    for shape in [(1, 3, 9, 14), (2, 3, 16, 11)]:
        x = torch.rand(shape)
        with torch.no_grad():
            torch.testing.assert_close(run(x), model(x), rtol=0, atol=1e-4)


def test_onnxruntime_session_threads_and_no_spinning(exported):
    session = runtimes.onnxruntime_session(exported[1], threads=3)
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_openvino_threads_and_precision(exported):
    pytest.importorskip("openvino")
    compiled = runtimes.openvino_model(exported[1], threads=1)  # (OpenVINO caps it at the core count)
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")


def test_unknown_runtime_and_bad_threads(exported):
    with pytest.raises(ValueError, match="unknown runtime 'tvm'"):
        runtimes.runner("tvm", exported[1])
    with pytest.raises(ValueError, match="threads must be at least 1"):
        runtimes.onnxruntime_session(exported[1], threads=0)


def test_bench_peer_runs_the_models_onnx_file_once(monkeypatch):
    """A group with both peers exports the model once; each peer computes the model's output."""
    models, exports = [], []
    real_create, real_export = din_fast.create_model, din_fast.deploy.exporter.export

    def tiny(name, scale):
        models.append(real_create(name, scale, **TINY).eval())
        return models[-1]

    def counted(*args, **kwargs):
        exports.append(args[1])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(din_fast, "create_model", tiny)
    monkeypatch.setattr(din_fast.deploy.exporter, "export", counted)
    peers = ["onnxruntime"] + (["openvino"] if _has("openvino") else [])
    for peer in peers:
        out = bench.build(bench.Case("defian-s", 2, 10, "inference", peer))()
        x = torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(0))  # bench's input
        with torch.no_grad():
            expected = models[0](x)  # the exported model (later builds make new models, not files)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)
    assert len(exports) == 1


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("case", [bench.Case("defian-s", 2, 8, "train", "onnxruntime"),
                                  bench.Case("defian-s", 2, 8, "inference", "openvino", dtype="bfloat16")])
def test_bench_peer_is_float32_inference_only(case):
    with pytest.raises(ValueError, match="runs float32 inference on the CPU only"):
        bench.build(case)


def _record(provider: str, median: float, group: str = "defian-s x4 inference b1 48") -> dict:
    return {"name": f"{group} [{provider}]", "group": group, "stats": {"median": median},
            "extra_info": {"provider": provider, "dtype": "float32"}}


def test_comparison_has_a_peer_table():
    records = [_record("reference", 0.060), _record("default", 0.025), _record("onnxruntime", 0.050),
               _record("openvino", 0.0375)]
    assert [c.provider for c in bench.compare(records)] == ["default"]  # peers are not din_fast rows
    assert bench.peer_cells(records) == [["defian-s x4 inference b1 48", "default", "25.00", "50.00", "2.00×",
                                          "37.50", "1.50×"]]
    text = bench.format_comparison(records, {})
    assert "din_fast against ONNX Runtime and OpenVINO" in text and "2.00×" in text
    assert bench.peer_cells(records[:2]) == []
    assert "ONNX Runtime" not in bench.format_comparison(records[:2], {})
