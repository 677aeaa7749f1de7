"""scripts/gpu_check.py without a GPU: stages are time-boxed and isolated (a stage that fails, raises or
overruns is recorded and the next one runs), the report is written, and the report's derived numbers
(kernel bandwidth shares, GPU preference, budget) come out right. The whole pipeline's dry run is a CI
step (.ci/run: ``scripts/gpu_check.sh --dry-run``)."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_failing_or_overrunning_stage_does_not_stop_the_later_ones(gc, tmp_path, monkeypatch):
    def overrun(ctx):
        ctx.sh("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
        return {}

    def crash(ctx):
        raise KeyError("a bug in a stage")

    def fail(ctx):
        ctx.sh("false", [sys.executable, "-c", "import sys; print('it broke'); sys.exit(3)"])
        return {}

    def fine(ctx):
        return {"copy_bytes_per_s": 2e9, "copy_mib": 1, "matmul_flops_per_s": 1e9, "matmul_n": 8,
                "matmul_dtype": "float32", "repeats": 1}

    stages = [[gc.Stage("environment", 2, overrun)], [gc.Stage("build", 5, crash)],
              [gc.Stage("tests", 5, fail), gc.Stage("sanitizer", 5, fine)], [gc.Stage("bandwidth", 5, fine)],
              [gc.Stage("ops", 5, fine)], [gc.Stage("models", 5, fine)],
              [gc.Stage("train", 5, fine), gc.Stage("upscale", 5, fine)]]
    monkeypatch.setattr(gc, "make_stages", lambda: stages)
    start = time.monotonic()
    assert gc.main([str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 1
    assert time.monotonic() - start < 30  # the sleeper was stopped at its box, not waited for
    doc = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    status = {name: s["status"] for name, s in doc["stages"].items()}
    assert status == {"environment": "timeout", "build": "failed", "tests": "failed", "sanitizer": "ok",
                      "bandwidth": "ok", "ops": "ok", "models": "ok", "train": "ok", "upscale": "ok"}
    assert "KeyError" in doc["stages"]["build"]["note"] and "exited with 3" in doc["stages"]["tests"]["note"]
    report = (tmp_path / "out" / "gpu-check.md").read_text()
    assert "| tests | failed |" in report and "it broke" in report  # the failing command's output tail
    assert "copy: 2 GB/s" in report
    assert "=== sleeper" in (tmp_path / "out" / "gpu-check.log").read_text()
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"gpu-check.md", "gpu-check.json", "gpu-check.log",
                                                              "benchmarks.json"}


def _op(group, provider, median, op="asyca", min_bytes=None):
    extra = {"provider": provider, "op": op} | ({"min_bytes": min_bytes} if min_bytes else {})
    return {"group": group, "name": group, "extra_info": extra, "stats": {"median": median}}


def test_kernel_bandwidth_share_and_gpu_preference(gc):
    records = [_op("asyca forward", "reference", 1e-3), _op("asyca forward", "cuda", 1e-4, min_bytes=2.4e8),
               _op("asyca forward", "triton", 2e-4, min_bytes=2.4e8),
               _op("mshf forward", "cuda", 3e-4, op="mshf"), _op("mshf forward", "triton", 1e-4, op="mshf"),
               _op("mshf forward+backward", "cuda", 3e-4, op="mshf"),
               _op("mshf forward+backward", "triton", 4e-4, op="mshf")]
    rows = gc.bandwidth_rows(records, copy_bytes_per_s=3e12)
    # 2.4e8 bytes in 0.1 ms = 2.4 TB/s = 80 % of 3 TB/s; in 0.2 ms 40 %
    assert rows == [["asyca forward", "cuda", "2400", "80% (met)"], ["asyca forward", "triton", "1200", "40% (missed)"]]
    # mshf: triton 0.1 + 0.4 = 0.5 ms against cuda 0.3 + 0.3 = 0.6 ms
    assert gc.gpu_preference(records) == {"asyca": ["cuda", "triton"], "mshf": ["triton", "cuda"]}


def test_budget_counts_stages_that_run_together_once(gc):
    groups = gc.make_stages()
    stages = {}
    for i, group in enumerate(groups):
        for s in group:
            s.group = i
            stages[s.name] = s
    assert gc.budget(stages) == 480  # the 8 minutes
    stages["models"].status = "skipped (not in --stages)"
    assert gc.budget(stages) == 480 - stages["models"].box


def test_unknown_stage_is_an_error(gc, tmp_path, capsys):
    with pytest.raises(SystemExit):
        gc.main([str(tmp_path), "--stages", "ops,nope"])
    assert "unknown stage(s) nope" in capsys.readouterr().err
