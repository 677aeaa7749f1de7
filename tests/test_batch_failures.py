"""One bad image does not stop a batch (issue 19 item 2): ``din-fast upscale`` and ``din-fast eval`` process
every readable image, report each failure with its file and reason, count them, and exit non-zero;
``--fail-fast`` stops at the first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from din_fast import create_model
from din_fast.cli import main
from din_fast.models.native import save_model

TINY_DEFIAN = dict(channels=8, rcabs=1, modules=1, reduction=4)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """DeFiAN: its DAC gate needs more than one pixel (an unbiased variance), so a 1x1 image fails."""
    path = tmp_path_factory.mktemp("weights") / "tiny_defian_x2.safetensors"
    torch.manual_seed(1)
    save_model(create_model("defian-s", scale=2, **TINY_DEFIAN), str(path))
    return path


def _png(path: Path, h: int, w: int, seed: int = 0) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def mixed(tmp_path) -> Path:
    """a, c: good; b: not an image; d: 1x1, too small for DeFiAN."""
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png", 8, 9)
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _png(src / "c.png", 7, 6, seed=1)
    _png(src / "d.png", 1, 1, seed=2)
    return src


def test_upscale_processes_every_readable_image_and_reports_each_failure(tmp_path, mixed, weights, capsys):
    code = main(["upscale", str(mixed), "-o", str(tmp_path / "out"), "--weights", str(weights)])
    out, err = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"din-fast upscale: error: cannot read {mixed / 'b.png'}: not a valid image")
    assert lines[1].startswith(f"din-fast upscale: error: {mixed / 'd.png'}: the 1x1 image is too small for "
                               "the model defian-s (")
    assert out.strip().splitlines()[-1] == "2 written, 2 failed"


def test_fail_fast_stops_at_the_first_failure(tmp_path, mixed, weights, capsys):
    code = main(["upscale", str(mixed), "-o", str(tmp_path / "out"), "--weights", str(weights), "--fail-fast"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "b.png" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


def test_eval_measures_every_readable_image(tmp_path, mixed, weights, capsys):
    (mixed / "d.png").unlink()  # eval at x2 refuses a 1x1 HR itself ("smaller than the scale")
    _png(mixed / "a.png", 30, 28)  # SSIM's 11x11 window needs these sizes after the border crop
    _png(mixed / "c.png", 27, 31, seed=1)
    report = tmp_path / "r.json"
    code = main(["eval", "--weights", str(weights), "--hr", str(mixed), "--scale", "2", "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"din-fast eval: error: cannot read {mixed / 'b.png'}: not a valid image"), err
    assert "2 evaluated, 1 failed" in out and "mean" in out
    result = json.loads(report.read_text())
    assert [r["image"] for r in result["images"]] == ["a.png", "c.png"]
    assert [f["image"] for f in result["failed"]] == ["b.png"]
