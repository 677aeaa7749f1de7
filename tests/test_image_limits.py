"""Images that would exhaust memory or silently lose data (issue 19 items 4, 6, 7): a pixel limit read from
the header, automatic tiling that says so, float16 images, NaN results, ``eval --json`` checked first,
animated files, alpha into JPEG, and an output name that contradicts ``--format``."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import din_fast
from din_fast import create_model
from din_fast.cli import main
from din_fast.inference.tiling import AutoTilingWarning
from din_fast.io.images import DEFAULT_MAX_PIXELS, ImageTooLargeError, read_image, write_image
from din_fast.models.native import save_model

TINY_DIN = dict(num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny_din_x2.safetensors"
    torch.manual_seed(2)
    save_model(create_model("din", scale=2, **TINY_DIN), str(path))
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _declared_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height RGB but whose data is a few bytes (a bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _chunk(b"IEND", b""))
    return path


def test_a_100_megapixel_header_is_refused_before_decoding(tmp_path):
    bomb = _declared_png(tmp_path / "bomb.png", 10_000, 10_000)
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageTooLargeError) as info:
        read_image(bomb)
    assert str(info.value) == (f"{bomb}: 10000x10000 image (100.0 megapixels) is larger than the limit of "
                               f"{DEFAULT_MAX_PIXELS / 1e6:g} megapixels (raise it with --max-pixels)")


def test_max_pixels_sets_the_limit_in_the_cli(tmp_path, weights, capsys):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "in.png")
    args = ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"), "--weights", str(weights)]
    assert main(args + ["--max-pixels", "599"]) == 1
    assert "30x20 image (0.0 megapixels) is larger than the limit of 0.000599 megapixels" in capsys.readouterr().err
    assert main(args + ["--max-pixels", "600"]) == 0
    assert Image.open(tmp_path / "o.png").size == (60, 40)


class _SmallMemory(nn.Module):
    """x2 nearest-neighbour upscaling that runs out of memory above 400 input pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] * x.shape[-2] > 400:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 19.00 GiB")
        return F.interpolate(x, scale_factor=2, mode="nearest") * self.weight


def test_automatic_tiling_says_so():
    x = torch.rand(3, 40, 40)
    with pytest.warns(AutoTilingWarning, match=r"out of memory running the whole image; tiling automatically "
                                               r"with 20x20 tiles"):
        y = din_fast.upscale(_SmallMemory(), x, overlap=0)
    torch.testing.assert_close(y, F.interpolate(x[None], scale_factor=2, mode="nearest")[0])


def test_float16_image_into_a_float32_model():
    torch.manual_seed(0)
    model = create_model("din", scale=2, **TINY_DIN).eval()
    x = torch.rand(3, 10, 12).half()
    y = din_fast.upscale(model, x)
    assert y.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(y, model(x.float()[None])[0], atol=0, rtol=0)


def test_nan_in_the_result_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=f"^cannot write {tmp_path / 'o.png'}: the image holds NaN values$"):
        write_image(tmp_path / "o.png", torch.full((3, 2, 2), float("nan")))


@pytest.mark.parametrize("case", ["missing_folder", "a_folder"])
def test_eval_json_is_checked_before_the_evaluation(tmp_path, weights, capsys, case):
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(hr / "a.png")
    target = tmp_path / "nope" / "r.json" if case == "missing_folder" else tmp_path
    code = main(["eval", "--weights", str(weights), "--hr", str(hr), "--scale", "2", "--json", str(target)])
    out, err = capsys.readouterr()
    assert code == 1 and out == "", out  # nothing evaluated, no table
    assert err.startswith(f"din-fast eval: error: --json {target}"), err


def test_animated_file_says_only_the_first_frame_is_used(tmp_path, weights, capsys):
    frames = [Image.new("RGB", (8, 6), colour) for colour in ("red", "green", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    for name in ("anim.gif", "anim.webp"):
        with pytest.warns(UserWarning, match=f"{name}: (GIF|WEBP) with 3 frames; only the first frame is used"):
            image = read_image(tmp_path / name)
        assert torch.allclose(image.rgb[:, 0, 0], torch.tensor([1.0, 0, 0]), atol=0.02)
    # and the command line prints it as one line
    assert main(["upscale", str(tmp_path / "anim.gif"), "-o", str(tmp_path / "o.png"), "--weights",
                 str(weights)]) == 0
    assert (f"din-fast upscale: warning: {tmp_path / 'anim.gif'}: GIF with 3 frames; only the first frame is used"
            in capsys.readouterr().err.splitlines())


def test_alpha_into_jpeg_warns_only_when_something_is_lost(tmp_path, weights, capsys):
    rgba = np.random.default_rng(0).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "see_through.png")
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    for name in ("see_through", "opaque"):
        assert main(["upscale", str(tmp_path / f"{name}.png"), "-o", str(tmp_path / f"{name}.jpg"), "--weights",
                     str(weights)]) == 0
    err = capsys.readouterr().err
    assert (f"din-fast upscale: warning: {tmp_path / 'see_through.jpg'}: JPEG has no alpha channel; the "
            "transparency is dropped") in err.splitlines()
    assert "opaque" not in err


def test_format_that_contradicts_the_output_name_is_refused(tmp_path, weights, capsys):
    Image.new("RGB", (4, 4)).save(tmp_path / "in.png")
    code = main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.gif"), "--format", "png",
                 "--weights", str(weights)])
    assert code == 1 and "--format png contradicts the output name" in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists()
