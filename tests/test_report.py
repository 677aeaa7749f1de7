"""benchmarks/report.py on a small hand-made pytest-benchmark JSON: ratios, per-megapixel times, plots."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _bench(group: str, provider: str, median: float, **extra) -> dict:
    return {"name": f"test[{provider}]", "group": group, "extra_info": {"provider": provider, **extra},
            "stats": {"median": median, "iqr": median / 10, "rounds": 5}}


@pytest.fixture
def bench_json(tmp_path: Path) -> Path:
    data = {
        "machine_info": {"node": "box", "cpu": {"brand_raw": "TestCPU", "count": 2}, "python_version": "3.11",
                         "din_fast": {"torch": "2.13.0", "version": "0.1.0", "device": "cpu only", "threads": 2}},
        "datetime": "2026-11-24T00:00:00",
        "commit_info": {"id": "abc123"},
        "benchmarks": [
            _bench("asyca forward", "reference", 0.010),
            _bench("asyca forward", "compiled", 0.005),
            _bench("asyca forward", "cpp", 0.0025),
            _bench("din x4 infer 64", "reference", 1.0, megapixels=0.25),
            _bench("din x4 infer 64", "default", 0.5, megapixels=0.25, peak_mib=12.5),
        ],
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def _row(text: str, group: str, provider: str) -> list[str]:
    section = text.split(f"## {group}\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == provider:
            return cells
    raise AssertionError(f"no row {provider!r} in group {group!r}")


def test_ratios_and_per_megapixel(report, bench_json, tmp_path):
    out = tmp_path / "RESULTS.md"
    assert report.main([str(bench_json), "-o", str(out), "--command", "pytest benchmarks/"]) == 0
    text = out.read_text()
    # cpp: 10 ms / 2.5 ms = 4x the reference, 5 / 2.5 = 2x the compiled reference
    assert _row(text, "asyca forward", "cpp")[4:6] == ["4.00×", "2.00×"]
    assert _row(text, "asyca forward", "reference")[4] == "1.00×"
    # 0.5 s for 0.25 output megapixels = 2 s per megapixel; no compiled row -> no ratio
    default = _row(text, "din x4 infer 64", "default")
    assert default[4:] == ["2.00×", "–", "2.000", "12.5"]
    assert "TestCPU" in text and "`pytest benchmarks/`" in text and "abc123" in text
    # the summary is din_fast.bench.format_comparison: each din_fast provider against both baselines
    assert "| asyca forward | cpp | 2.50 | 10.00 | 4.00× | 5.00 | 2.00× |" in text
    assert "| din x4 infer 64 | default | 500 | 1000 | 2.00× | – | – |" in text


def test_plots_are_written_and_linked(report, bench_json, tmp_path):
    out = tmp_path / "RESULTS.md"
    report.main([str(bench_json), "-o", str(out), "--plots", str(tmp_path / "plots")])
    for name in ("speedup.png", "per_megapixel.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
        assert f"(plots/{name})" in out.read_text()


def test_empty_json_is_an_error(report, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(SystemExit):
        report.main([str(empty), "-o", str(tmp_path / "R.md")])
    assert not (tmp_path / "R.md").exists()
