"""din_fast.bench and `din-fast bench`: cases run, tables and JSON come out, bad options are errors."""

from __future__ import annotations

import json
import re

import pytest
import torch

from din_fast import bench
from din_fast.cli import main


def test_train_step_updates_weights_and_inference_does_not():
    case = bench.Case("defian-s", 2, 8, "train", "default", batch=2)
    fn = bench.build(case)
    losses = [float(fn()) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[0] != losses[-1]  # Adam steps change the model, hence the loss on the fixed batch


def test_cases_of_a_group_are_timed_interleaved(monkeypatch):
    """Every round calls each provider once, in an order that rotates, after each one's warm-up."""
    calls = []
    monkeypatch.setattr(bench, "build", lambda case: lambda: calls.append(case.provider))
    cases = [bench.Case("defian-s", 2, 8, "inference", p) for p in ("reference", "compiled", "default")]
    times = bench.time_group(cases, rounds=3, warmup=1)
    assert calls == ["reference", "compiled", "default",  # warm-up
                     "reference", "compiled", "default", "compiled", "default", "reference",
                     "default", "reference", "compiled"]
    assert [len(t) for t in times] == [3, 3, 3] and all(x >= 0 for t in times for x in t)


def test_run_keeps_the_order_of_the_cases(monkeypatch):
    monkeypatch.setattr(bench, "build", lambda case: lambda: None)
    cases = [bench.Case("defian-s", 2, s, "inference", p) for s in (8, 12) for p in ("reference", "default")]
    records = bench.run(cases[::-1], rounds=2, progress=False)
    assert [(r["extra_info"]["size"], r["extra_info"]["provider"]) for r in records] == \
        [(c.size, c.provider) for c in cases[::-1]]
    assert all(r["stats"]["rounds"] == 2 for r in records)


def test_cpu_peak_memory_counts_live_tensors():
    def allocate() -> None:
        a = torch.empty(2**20, dtype=torch.float32)  # 4 MiB
        b = torch.empty(2**20, dtype=torch.float32)  # 4 MiB more while a is alive
        del a, b
        torch.empty(2**19, dtype=torch.float32)  # 2 MiB after both were freed

    assert bench._cpu_peak_mib(allocate) == pytest.approx(8.0, abs=0.1)


def test_cli_table_and_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--models", "defian-s", "--scales", "2", "--sizes", "8", "--modes", "inference,train",
                 "--providers", "reference,default,optimized", "--rounds", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "defian-s x2 inference b1 8" in text and "optimized" in text
    data = json.loads(out.read_text())
    providers = {(b["extra_info"]["mode"], b["extra_info"]["provider"]) for b in data["benchmarks"]}
    # the optimized provider is inference only
    assert providers == {("inference", "reference"), ("inference", "default"), ("inference", "optimized"),
                         ("train", "reference"), ("train", "default")}
    assert all(b["extra_info"]["megapixels"] == pytest.approx(16**2 / 1e6) for b in data["benchmarks"])
    # what the numbers depend on: versions, threads, the CLI's allocator settings, the commit
    din = data["machine_info"]["din_fast"]
    assert din["torch"] == torch.__version__ and din["threads"] == torch.get_num_threads()
    assert "keep_freed_memory" in din and "triton" in din
    assert data["commit_info"] == bench.commit_info()


def test_commit_info_names_the_checkout(tmp_path, monkeypatch):
    import subprocess
    from pathlib import Path

    root = Path(bench.__file__).resolve().parents[1]
    if subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("din_fast is not a git checkout here")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    info = bench.commit_info()
    assert info["id"] == head.strip() and isinstance(info["dirty"], bool)
    monkeypatch.setattr(bench, "__file__", str(tmp_path / "pkg" / "bench.py"))  # not a checkout: no commit
    assert bench.commit_info() == {}


@pytest.mark.parametrize("option, value, message", [("--models", "nope", "unknown model"),
                                                     ("--providers", "fastest", "unknown provider"),
                                                     ("--modes", "eval", "unknown mode"),
                                                     ("--rounds", "0", "at least 1")])
def test_cli_errors(option, value, message, capsys):
    assert main(["bench", option, value]) == 1
    assert message in capsys.readouterr().err


def _record(group: str, provider: str, median: float, dtype: str | None = None) -> dict:
    extra = {"provider": provider} | ({"dtype": dtype} if dtype else {})
    return {"name": f"{group} [{provider}]", "group": group, "extra_info": extra, "stats": {"median": median}}


def test_comparison_rows_against_both_baselines_of_the_rows_dtype_or_float32():
    records = [_record("din", "reference", 0.8), _record("din", "compiled", 0.5, "bfloat16"),
               _record("din", "compiled", 0.6), _record("din", "default", 0.2, "bfloat16"),
               _record("din", "optimized", 0.1, "bfloat16"), _record("din", "default", 0.4),
               _record("asyca", "reference", 0.01), _record("asyca", "compiled", 0.02)]
    rows = {(c.group, c.provider): c for c in bench.compare(records)}
    # bf16 rows: no bf16 reference, so the float32 one (the authors' model); the bf16 compiled one
    bf16 = rows[("din", "default bf16")]
    assert (bf16.vs_reference, bf16.reference_dtype) == (pytest.approx(4.0), "float32")
    assert (bf16.vs_compiled, bf16.compiled_dtype) == (pytest.approx(2.5), "bfloat16")
    fp32 = rows[("din", "default")]
    assert (fp32.vs_reference, fp32.vs_compiled) == (pytest.approx(2.0), pytest.approx(1.5))
    assert [c.provider for c in bench.compare(records) if c.group == "din"] == [
        "optimized bf16", "default bf16", "default"]  # fastest first
    assert rows[("asyca", None)].median is None  # no din_fast provider ran: said, not dropped
    text = bench.format_comparison(records, bench.machine_info())
    assert "torch " + torch.__version__ in text.splitlines()[0]
    line = next(ln for ln in text.splitlines() if "default bf16" in ln)
    # a baseline of another dtype than the row's is marked
    assert re.split(r"\s{2,}", line.strip()) == ["din", "default bf16", "200", "800 (fp32)", "4.00×", "500", "2.50×"]
    assert "none ran" in text


def test_machine_name_names_the_gpu_and_the_cpu():
    info = {"cpu": {"brand_raw": "Xeon", "count": 16},
            "din_fast": {"device": "NVIDIA H100 80GB HBM3", "threads": 16, "torch": "2.11.0", "version": "0.1.0"}}
    assert bench.machine_name(info) == ("NVIDIA H100 80GB HBM3 on Xeon (16 logical CPUs, 16 torch threads); "
                                        "torch 2.11.0, din_fast 0.1.0")


def test_providers_with_a_dtype():
    assert bench.parse_provider("default") == ("default", "float32")
    assert bench.parse_provider("compiled:bfloat16") == ("compiled", "bfloat16")
    with pytest.raises(ValueError, match="unknown dtype"):
        bench.parse_provider("default:int8")
    case = bench.Case("defian-s", 2, 8, "inference", "default", dtype="bfloat16")
    assert case.label == "default bf16"
    out = bench.build(case)()  # autocast: the model's convolutions run in bfloat16
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 16, 16)
    train = bench.build(bench.Case("defian-s", 2, 8, "train", "default", dtype="bfloat16"))
    assert torch.isfinite(train())
