"""The pytest-benchmark suites (benchmarks/): what they select by default and in full, that a run ends
with din_fast.bench's comparison table, keeps each finished benchmark as a JSON line, and that the
compiled reference of an op is compiled once per variant and reused by later cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/common.py)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIN_FAST_BENCH_")}
    env.update(extra)
    return env


def _collect(**env: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--benchmark-only", "--collect-only", "-q",
                          "-p", "no:cacheprovider"], cwd=ROOT, env=_env(**env), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return [line for line in out.stdout.splitlines() if "::" in line]


def _shape_ids(ids: list[str]) -> dict[str, set[str]]:
    """Test function → the shape part of its ids (everything before -<dtype>-<mode>-<provider>)."""
    shapes: dict[str, set[str]] = {}
    for test_id in ids:
        name, params = test_id.split("::")[1].split("[", 1)
        shapes.setdefault(name, set()).add(params.rstrip("]").rsplit("-", 3)[0])
    return shapes


def test_default_selection_is_one_shape_per_op_and_each_model_once():
    ids = _collect()
    shapes = _shape_ids([i for i in ids if "test_op_" in i])
    assert set(shapes) == {f"test_{op}" for op in common.ARGS}  # every op
    assert all(len(s) == 1 for s in shapes.values()), shapes
    models = [i.split("[", 1)[1] for i in ids if "test_models.py" in i]
    # CPU: each model once (x4 inference at 48²), against the reference and torch.compile(reference)
    assert sorted(models) == sorted(f"{m}-x4-inference-b1-48-{p}]" for m in ("defian-s", "din", "cirn", "drfn")
                                    for p in ("reference", "compiled", "default"))


def test_full_selection_is_the_matrix():
    shapes = _shape_ids([i for i in _collect(DIN_FAST_BENCH_FULL="1") if "test_op_" in i])
    assert len(shapes["test_asyca"]) == 4 and len(shapes["test_dwc_sum"]) == 8 and len(shapes["test_mshf"]) == 8


def test_a_suite_variable_selects_the_matrix_of_that_suite(monkeypatch):
    cpu, gpu = dict(b=1, h=96, w=96), dict(b=16, h=256, w=256)
    matrix = lambda: [dict(b=1, h=48, w=48), dict(b=4, h=48, w=48)]  # noqa: E731
    monkeypatch.setattr(common, "GPU", False)
    assert common.selection(cpu, gpu, matrix, ("DIN_FAST_BENCH_X",)) == [cpu]
    monkeypatch.setattr(common, "GPU", True)
    assert common.selection(cpu, gpu, matrix, ("DIN_FAST_BENCH_X",)) == [gpu]
    monkeypatch.setattr(common, "TINY", True)
    assert common.selection(cpu, gpu, matrix, ("DIN_FAST_BENCH_X",)) == [dict(b=1, h=8, w=8)]
    monkeypatch.setenv("DIN_FAST_BENCH_X", "1")
    assert common.selection(cpu, gpu, matrix, ("DIN_FAST_BENCH_X",)) == matrix()


def test_model_defaults_on_a_gpu_are_issue_8s_targets():
    gpu = common.model_defaults(full=False, gpu=True, tiny=False)
    assert gpu["models"] == "din,defian-l" and gpu["modes"] == "inference"
    assert gpu["providers"].split(",") == ["reference", "compiled:bfloat16", "default:bfloat16",
                                           "optimized:bfloat16"]
    full = common.model_defaults(full=True, gpu=False, tiny=False)
    assert full["modes"] == "inference,train" and "default+compile" in full["providers"]


def test_run_ends_with_the_comparison_and_keeps_records(tmp_path):
    records = tmp_path / "records.jsonl"
    out = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_op_dwc_sum.py", "--benchmark-only", "-q",
                          "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=_env(DIN_FAST_BENCH_TINY="1", DIN_FAST_BENCH_OP_PROVIDERS="reference,cpp",
                                  DIN_FAST_BENCH_ROUNDS="2", DIN_FAST_BENCH_RECORDS=str(records)))
    assert out.returncode == 0, out.stdout + out.stderr
    tail = out.stdout.split("din_fast comparison", 1)[1]
    assert "din_fast against the reference and torch.compile(reference) on" in tail
    assert "dwc_sum forward k5 B1 C64 8x8 fp32" in tail and "dwc_sum forward+backward k5 B1 C64 8x8 fp32" in tail
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert sorted((r["extra_info"]["mode"], r["extra_info"]["provider"]) for r in lines) == [
        ("forward", "cpp"), ("forward", "reference"), ("forward+backward", "cpp"), ("forward+backward", "reference")]
    # the forward reads 5 inputs of 64x8x8 floats plus weights and bias and writes one
    forward = next(r for r in lines if r["extra_info"]["mode"] == "forward")
    assert forward["extra_info"]["min_bytes"] == 4 * (6 * 64 * 64 + 5 * 64 + 64)
    assert all(r["stats"]["rounds"] == 2 and r["stats"]["median"] > 0 for r in lines)


def test_compiled_reference_is_compiled_once_per_variant_and_reused():
    """A second case of the same shape reuses the compilation; more variants than dynamo's default
    recompile limit (8) stay compiled instead of silently running eagerly."""
    from torch._dynamo.utils import counters

    args = lambda n: [[torch.randn(1, 2, n, 3) for _ in range(2)], torch.randn(2, 2), torch.randn(2)]  # noqa: E731
    first = common.op_callable("compiled", "dwc_sum", args(3), "forward")
    first()
    graphs = counters["stats"]["unique_graphs"]
    common.op_callable("compiled", "dwc_sum", args(3), "forward")()  # a later case, same variant
    assert counters["stats"]["unique_graphs"] == graphs
    for n in range(4, 14):  # ten more shapes
        common.op_callable("compiled", "dwc_sum", args(n), "forward")()
    assert counters["stats"]["unique_graphs"] == graphs + 10
