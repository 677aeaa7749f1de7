"""``din-fast upscale``: files and folders, formats, tiling options, weights detection, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import din_fast
from din_fast import create_model, load_model
from din_fast.cli import main
from din_fast.cli.upscale import plan, shard
from din_fast.io.degrade import imresize
from din_fast.io.images import read_image, write_image
from din_fast.models.native import save_model
from din_fast.models.pretrained import WEIGHTS_DIR, default_weights, load_weights, resolve_model

TINY_DIN = dict(num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A tiny DIN x2 in din_fast's native format, made here (no packaged weights needed)."""
    path = tmp_path_factory.mktemp("weights") / "tiny_din_x2.safetensors"
    torch.manual_seed(3)
    save_model(create_model("din", scale=2, **TINY_DIN), str(path))
    return path


def _rgb8(path: Path, h: int = 9, w: int = 11, seed: int = 0) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _expected(weights: Path, source: Path, **kwargs) -> torch.Tensor:
    """The library's result for ``source``, quantised to 8 bits as the file stores it."""
    model = load_model(str(weights)).eval()
    y = din_fast.upscale(model, read_image(source).rgb, **kwargs)
    return (y.clamp(0, 1) * 255).round() / 255


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["upscale", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_single_file(tmp_path, weights, capsys):
    _rgb8(tmp_path / "in.png")
    code, out, err = _cli(capsys, tmp_path / "in.png", "-o", tmp_path / "out.png", "--weights", weights)
    assert code == 0, err
    assert "upscaled 1 image(s) x2 with din" in out and "s per output megapixel" in out
    got = read_image(tmp_path / "out.png")
    assert got.rgb.shape == (3, 18, 22) and got.bits == 8 and got.format == "PNG"
    torch.testing.assert_close(got.rgb, _expected(weights, tmp_path / "in.png"), atol=0, rtol=0)


def test_tiles_and_self_ensemble_match_the_library(tmp_path, weights, capsys):
    _rgb8(tmp_path / "in.bmp", 12, 10)
    code, _, err = _cli(capsys, tmp_path / "in.bmp", "-o", tmp_path / "o.bmp", "--weights", weights,
                        "--tile", "6", "--tile-overlap", "2", "--self-ensemble", "--backend", "reference")
    assert code == 0, err
    with din_fast.use_backend("reference"):
        expected = _expected(weights, tmp_path / "in.bmp", tile=6, overlap=2, ensemble=True)
    torch.testing.assert_close(read_image(tmp_path / "o.bmp").rgb, expected, atol=1 / 255, rtol=0)


def test_folder_in_folder_out_keeps_modes_and_formats(tmp_path, weights, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _rgb8(src / "b_rgb.png")
    grey = np.random.default_rng(1).integers(0, 256, (8, 7), dtype=np.uint8)
    Image.fromarray(grey).save(src / "a_grey.png")
    rgba = np.random.default_rng(2).integers(0, 256, (6, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(src / "c_rgba.png")
    write_image(src / "d_16bit.png", torch.rand(3, 7, 6), bits=16)
    rotated = Image.fromarray(np.random.default_rng(4).integers(0, 256, (5, 8, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored 8 wide x 5 high, displayed 5 wide x 8 high
    rotated.save(src / "e_exif.jpg", exif=exif, quality=95)
    (src / "notes.txt").write_text("not an image")

    code, out, err = _cli(capsys, src, "-o", dst, "--weights", weights)
    assert code == 0, err
    assert "upscaled 5 image(s)" in out
    assert sorted(p.name for p in dst.iterdir()) == ["a_grey.png", "b_rgb.png", "c_rgba.png", "d_16bit.png",
                                                     "e_exif.jpg"]
    with Image.open(dst / "a_grey.png") as im:
        assert im.mode == "L" and im.size == (14, 16)
    rgba_out = read_image(dst / "c_rgba.png")
    assert rgba_out.alpha is not None and rgba_out.rgb.shape == (3, 12, 18)
    alpha = imresize(torch.from_numpy(rgba[..., 3:].astype(np.float32) / 255).permute(2, 0, 1), 2).clamp(0, 1)
    torch.testing.assert_close(rgba_out.alpha, (alpha * 255).round() / 255, atol=1e-6, rtol=0)
    torch.testing.assert_close(rgba_out.rgb, _expected(weights, src / "c_rgba.png"), atol=0, rtol=0)
    deep = read_image(dst / "d_16bit.png")
    assert deep.bits == 16 and deep.rgb.shape == (3, 14, 12)
    exif_out = read_image(dst / "e_exif.jpg")
    assert exif_out.format == "JPEG" and exif_out.rgb.shape == (3, 16, 10)


def test_format_option_and_output_names(tmp_path, weights, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _rgb8(src / "x.png")
    _rgb8(src / "y.bmp", seed=1)
    code, _, err = _cli(capsys, src, "-o", tmp_path / "out", "--weights", weights, "--format", "webp")
    assert code == 0, err
    for name in ("x.webp", "y.webp"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.format == "WEBP" and im.size == (22, 18)


def test_plan_rules(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        _rgb8(tmp_path / folder / "same.png")
    with pytest.raises(ValueError, match="would both be written to"):
        plan([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "out"))
    with pytest.raises(ValueError, match="would overwrite its input"):
        plan([str(tmp_path / "a")], str(tmp_path / "a"))
    with pytest.raises(ValueError, match="cannot tell the output format"):
        plan([str(tmp_path / "a" / "same.png")], str(tmp_path / "result"))
    with pytest.raises(ValueError, match="contradicts the output name"):
        plan([str(tmp_path / "a" / "same.png")], str(tmp_path / "r.png"), "JPEG")
    jobs = plan([str(tmp_path / "a" / "same.png")], str(tmp_path / "r"), "JPEG")
    assert [(j.target.name, j.format) for j in jobs] == [("r", "JPEG")]


def test_shards_are_disjoint_and_cover_everything(tmp_path):
    for i in range(7):
        _rgb8(tmp_path / f"{i}.png", 2, 2)
    jobs = plan([str(tmp_path)], str(tmp_path / "out"))
    for world in (1, 2, 3, 8):
        parts = [shard(jobs, r, world) for r in range(world)]
        assert sorted(j.source for p in parts for j in p) == sorted(j.source for j in jobs)


def _no_outputs(folder: Path) -> bool:
    return not folder.exists() or not any(folder.rglob("*"))


@pytest.mark.parametrize("case", ["missing", "corrupt", "empty_dir", "unwritable", "tile_lt_overlap",
                                  "other_scale", "other_model", "official_without_model", "bad_official",
                                  "half_on_cpu"])
def test_errors_are_one_clear_line(tmp_path, weights, capsys, case):
    good = tmp_path / "good.png"
    _rgb8(good)
    out = tmp_path / "out" / "o.png"
    args = [good, "-o", out, "--weights", weights]
    expected = {
        "missing": "input not found",
        "corrupt": "cannot read .*corrupt.png: not a valid image",
        "empty_dir": "no images in folder",
        "unwritable": "cannot create output folder",
        "tile_lt_overlap": r"--tile \(4\) must not be smaller than --tile-overlap \(8\)",
        "other_scale": "holds weights for din x2, not x4",
        "other_model": "holds weights for din x2, not defian-s",
        "official_without_model": "not a din_fast weights file; for an official checkpoint pass the model",
        "bad_official": "checkpoint does not match din x2",
        "half_on_cpu": "--dtype float16 needs a CUDA device",
    }[case]
    if case == "missing":
        args[0] = tmp_path / "nope.png"
    elif case == "corrupt":
        (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        args[0] = tmp_path / "corrupt.png"
    elif case == "empty_dir":
        (tmp_path / "empty").mkdir()
        args[0] = tmp_path / "empty"
    elif case == "unwritable":
        (tmp_path / "file").write_text("a file, not a folder")
        out = tmp_path / "file" / "o.png"
        args[2] = out
    elif case == "tile_lt_overlap":
        args += ["--tile", "4", "--tile-overlap", "8"]
    elif case == "other_scale":
        args += ["--scale", "4"]
    elif case == "other_model":
        args += ["--model", "defian-s"]
    elif case == "half_on_cpu":
        args += ["--dtype", "float16", "--device", "cpu"]
    elif case in ("official_without_model", "bad_official"):
        torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, tmp_path / "ckpt.pth")
        args[4] = tmp_path / "ckpt.pth"
        if case == "bad_official":
            args += ["--model", "din", "--scale", "2"]
    code, _, err = _cli(capsys, *args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("din-fast upscale: error: "), err
    assert __import__("re").search(expected, lines[0]), lines[0]
    assert _no_outputs(tmp_path / "out")


def test_failure_midway_leaves_only_complete_files(tmp_path, weights, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _rgb8(src / "a.png")
    (src / "b.png").write_bytes(b"broken")
    code, _, err = _cli(capsys, src, "-o", tmp_path / "out", "--weights", weights)
    assert code != 0 and "b.png" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]  # complete, no temporary left


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["upscale", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png"), "--debug"])


def test_subprocess_error_has_no_traceback(tmp_path, weights):
    result = subprocess.run([sys.executable, "-m", "din_fast", "upscale", str(tmp_path / "nope.png"),
                             "-o", str(tmp_path / "o.png"), "--weights", str(weights)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"din-fast upscale: error: input not found: {tmp_path / 'nope.png'}"


def test_official_checkpoint_is_detected(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from official_literal import LitDeFiAN

    lit = LitDeFiAN(32, 10, 5, 2).eval()  # DeFiAN-S x2, the authors' layout
    torch.save({"state_dict": lit.state_dict()}, tmp_path / "DeFiAN_S_x2.pth")
    model = load_weights(tmp_path / "DeFiAN_S_x2.pth", "defian-s", 2).eval()
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(x), lit(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pass the model and scale"):
        load_weights(tmp_path / "DeFiAN_S_x2.pth")


def test_missing_default_weights_error_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr("din_fast.models.pretrained.WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"default_x3\.safetensors is missing; pass --weights"):
        default_weights(3)
    with pytest.raises(FileNotFoundError, match="default_x4"):
        resolve_model()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_packaged_default_model(tmp_path, capsys, scale):
    if not (WEIGHTS_DIR / f"default_x{scale}.safetensors").is_file():
        pytest.skip(f"the packaged default weights default_x{scale}.safetensors are not in this checkout yet")
    _rgb8(tmp_path / "in.png", 6, 5)
    code, out, err = _cli(capsys, tmp_path / "in.png", "-o", tmp_path / "out.png", "--scale", str(scale))
    assert code == 0, err
    assert read_image(tmp_path / "out.png").rgb.shape == (3, 6 * scale, 5 * scale)
