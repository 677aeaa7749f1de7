"""``din-fast eval``: the metrics pipeline of the SR papers, wired to the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from din_fast import create_model, load_model
from din_fast.cli import main
from din_fast.cli.evaluate import evaluate
from din_fast.inference.metrics import psnr, quantize, ssim
from din_fast.io.degrade import imresize, round_uint8
from din_fast.models.native import save_model

TINY_DIN = dict(num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny_din_x2.safetensors"
    torch.manual_seed(5)
    save_model(create_model("din", scale=2, **TINY_DIN), str(path))
    return path


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth uint8 RGB image (random low-frequency content), so SR and bicubic are meaningful."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 4, 3))
    return round_uint8(imresize(coarse, output_shape=(h, w)))


@pytest.fixture
def hr_dir(tmp_path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    Image.fromarray(_smooth(25, 27, 0)).save(folder / "a.png")   # odd sizes: modcrop to 24 x 26
    Image.fromarray(_smooth(24, 30, 1)).save(folder / "b.png")
    return folder


def _by_hand(weights: Path, hr: np.ndarray, lr: np.ndarray | None, variant: str = "standard") -> dict:
    """The pipeline written out step by step: modcrop, MATLAB bicubic LR, model, quantise, Y metrics."""
    s = 2
    if lr is None:
        hr = hr[:hr.shape[0] // s * s, :hr.shape[1] // s * s]
        lr = round_uint8(imresize(hr, 1 / s))
    else:
        hr = hr[:lr.shape[0] * s, :lr.shape[1] * s]
    model = load_model(str(weights)).eval()
    with torch.no_grad():
        sr = quantize(model(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255))
    bic = round_uint8(imresize(lr, s))
    return {"psnr": psnr(sr, hr, crop_border=s), "ssim": ssim(sr, hr, crop_border=s, variant=variant),
            "bicubic_psnr": psnr(bic, hr, crop_border=s),
            "bicubic_ssim": ssim(bic, hr, crop_border=s, variant=variant)}


def test_eval_cli_table_and_json(tmp_path, hr_dir, weights, capsys):
    out = tmp_path / "r.json"
    code = main(["eval", "--weights", str(weights), "--hr", str(hr_dir), "--scale", "2", "--bicubic",
                 "--json", str(out)])
    text, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.read_text())
    assert [r["image"] for r in result["images"]] == ["a.png", "b.png"] and result["lr"] == "matlab-bicubic"
    for row in result["images"]:
        expected = _by_hand(weights, np.asarray(Image.open(hr_dir / row["image"])), None)
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-9), key
    for key in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim"):
        assert result["mean"][key] == pytest.approx(np.mean([r[key] for r in result["images"]]))
    lines = text.splitlines()
    assert "PSNR (dB)" in lines[1] and "bicubic SSIM" in lines[1]
    assert lines[-3].startswith("mean") and f"{result['mean']['psnr']:.2f}" in lines[-3]
    assert lines[-2] == "2 evaluated, 0 failed" and result["failed"] == []


def test_given_lr_folder_and_defian_ssim(tmp_path, weights):
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    hr = _smooth(26, 24, 2)
    lr = _smooth(12, 11, 3)  # any LR: the HR is cropped to 24 x 22 to match it
    Image.fromarray(hr).save(hr_dir / "img.png")
    Image.fromarray(lr).save(lr_dir / "imgx2.png")
    model = load_model(str(weights)).eval()
    rows = evaluate(model, [str(hr_dir)], 2, str(lr_dir), ssim_variant="defian", bicubic=True)
    expected = _by_hand(weights, hr, lr, variant="defian")
    assert rows[0]["psnr"] == pytest.approx(expected["psnr"], rel=1e-9)
    assert rows[0]["ssim"] == pytest.approx(expected["ssim"], rel=1e-9)
    standard = evaluate(model, [str(hr_dir)], 2, str(lr_dir))
    assert standard[0]["psnr"] == rows[0]["psnr"] and standard[0]["ssim"] != rows[0]["ssim"]


def test_eval_tiles_and_ensemble_are_passed_through(tmp_path, hr_dir, weights):
    model = load_model(str(weights)).eval()
    a = evaluate(model, [str(hr_dir)], 2, tile=6, overlap=2, ensemble=True)
    b = evaluate(model, [str(hr_dir)], 2)
    assert a[0]["psnr"] != b[0]["psnr"]


@pytest.mark.parametrize("case, message", [
    ("empty", "no images in folder"),
    ("no_match", "no LR image for a.png"),
    ("lr_too_big", "is smaller than 2 x its LR"),
    ("wrong_scale", "holds weights for din x2, not x3"),
])
def test_eval_errors(tmp_path, hr_dir, weights, capsys, case, message):
    args = ["eval", "--weights", str(weights), "--hr", str(hr_dir), "--scale", "2"]
    if case == "empty":
        (tmp_path / "empty").mkdir()
        args[4] = str(tmp_path / "empty")
    elif case in ("no_match", "lr_too_big"):
        lr = tmp_path / "lr"
        lr.mkdir()
        Image.fromarray(_smooth(20, 20, 4)).save(lr / ("zzz.png" if case == "no_match" else "a_x2.png"))
        args += ["--lr", str(lr)]
    else:
        args[-1] = "3"
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()  # a failing image is one line; with a bad LR folder, both images fail
    assert len(lines) == (2 if "--lr" in args else 1), err
    assert all(line.startswith("din-fast eval: error: ") for line in lines) and message in err, err
