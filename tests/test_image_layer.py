"""One image layer (issue 20 item 3): training and evaluation read the same file to the same pixels."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import din_fast.inference.metrics as metrics
from din_fast import create_model
from din_fast.cli.evaluate import evaluate
from din_fast.io.images import _encode_png16, find_lr, list_images, modcrop
from din_fast.train.data import SRDataset, load_validation_pairs


def _exif_png16(path: Path, samples: np.ndarray, orientation: int) -> None:
    """A 16-bit RGB PNG of ``samples`` (uint16 H x W x 3, stored orientation) with an EXIF orientation tag
    (an eXIf chunk before the image data)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif\0\0") else exif.tobytes()
    png = _encode_png16(samples, None)
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data + struct.pack(">I", zlib.crc32(b"eXIf" + data) & 0xFFFFFFFF)
    idat = png.index(b"IDAT") - 4
    path.write_bytes(png[:idat] + chunk + png[idat:])


def test_a_16bit_exif_rotated_file_gives_the_same_pixels_to_training_and_eval(tmp_path, monkeypatch):
    folder = tmp_path / "hr"
    folder.mkdir()
    stored = np.random.default_rng(0).integers(0, 65536, (26, 31, 3), dtype=np.uint16)
    _exif_png16(folder / "photo.png", stored, orientation=6)  # displayed rotated 90° clockwise: 31 x 26
    # the oracle: rotate by hand, round 16 -> 8 bits as uint8 quantisation does, crop to the scale
    upright = np.rot90(stored, -1)
    expected = np.round(upright.astype(np.float64) / 65535 * 255).astype(np.uint8)[:30, :26]

    dataset = SRDataset(folder, scale=2, patch=4)
    assert dataset.cached
    np.testing.assert_array_equal(modcrop(dataset.images[0][0], 2), expected)
    (_, _, validation_hr), = load_validation_pairs(folder, scale=2)
    np.testing.assert_array_equal(validation_hr, expected)

    seen = []
    psnr = metrics.psnr

    def spy(sr, hr, **kwargs):
        seen.append(hr)
        return psnr(sr, hr, **kwargs)

    monkeypatch.setattr(metrics, "psnr", spy)
    torch.manual_seed(0)
    evaluate(create_model("din", scale=2, num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=2).eval(),
             [str(folder)], 2)
    np.testing.assert_array_equal(seen[0], expected)


def test_one_lister_and_one_lr_matching(tmp_path):
    for name in ("b.png", "a.JPG", ".a.abcdefgh.tmp.png", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.webp"]
    lr = [tmp_path / "lr" / n for n in ("ax2.png", "b_x2.png", "c.png")]
    assert [find_lr(lr, Path(h), 2).name for h in ("a.png", "b.png", "c.png")] == ["ax2.png", "b_x2.png", "c.png"]
    with pytest.raises(ValueError, match=r"no LR image for d.png in .*lr \(looked for d, dx2, d_x2"):
        find_lr(lr, Path("d.png"), 2)
