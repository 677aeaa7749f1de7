"""din_fast.bench and `din-fast bench`: cases run, tables and JSON come out, bad options are errors."""

from __future__ import annotations

import json

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


@pytest.mark.parametrize("option, value, message", [("--models", "nope", "unknown model"),
                                                     ("--providers", "fastest", "unknown provider"),
                                                     ("--modes", "eval", "unknown mode"),
                                                     ("--rounds", "0", "at least 1")])
def test_cli_errors(option, value, message, capsys):
    assert main(["bench", option, value]) == 1
    assert message in capsys.readouterr().err
