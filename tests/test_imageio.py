"""din_fast.io.images: formats, 16-bit PNG, grey and alpha, EXIF orientation, atomic writes."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from din_fast.io.images import find_images, read_image, write_image


def _png16_bytes(arr: np.ndarray) -> bytes:
    """A 16-bit PNG written independently of din_fast: row r uses filter r mod 5 (None, Sub, Up,
    Average, Paeth, as the PNG specification defines them), so reading must undo all five."""
    h, w, c = arr.shape
    bpp = 2 * c
    raw = arr.astype(">u2").view(np.uint8).reshape(h, w * bpp).astype(np.int64)
    out = bytearray()
    for r in range(h):
        ftype = r % 5
        line, prev = raw[r], raw[r - 1] if r else np.zeros_like(raw[r])
        enc = []
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            cc = prev[i - bpp] if i >= bpp else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            else:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            enc.append((line[i] - pred) % 256)
        out += bytes([ftype] + enc)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(out)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_read_exactly_with_every_filter(tmp_path, channels):
    rng = np.random.default_rng(channels)
    arr = rng.integers(0, 65536, (7, 5, channels), dtype=np.uint16)
    path = tmp_path / "a.png"
    path.write_bytes(_png16_bytes(arr))
    img = read_image(path)
    assert img.bits == 16 and img.format == "PNG"
    assert img.grey == (channels <= 2) and (img.alpha is not None) == (channels in (2, 4))
    colour = arr[..., :3] if channels >= 3 else np.repeat(arr[..., :1], 3, axis=2)
    expected = torch.from_numpy(colour.astype(np.float32) / 65535).permute(2, 0, 1)
    torch.testing.assert_close(img.rgb, expected, atol=0, rtol=0)
    if img.alpha is not None:
        torch.testing.assert_close(img.alpha[0], torch.from_numpy(arr[..., -1].astype(np.float32) / 65535),
                                   atol=0, rtol=0)


@pytest.mark.parametrize("grey, alpha", [(False, False), (False, True), (True, False), (True, True)])
def test_16bit_png_round_trip(tmp_path, grey, alpha):
    levels = torch.randint(0, 65536, (4, 6, 5)).float() / 65535
    rgb = levels[:1].expand(3, -1, -1) if grey else levels[:3]
    a = levels[3:4] if alpha else None
    path = tmp_path / "b.png"
    write_image(path, rgb, a, grey=grey, bits=16)
    back = read_image(path)
    assert (back.bits, back.grey, back.alpha is not None) == (16, grey, alpha)
    # grey is stored as 0.299 R + 0.587 G + 0.114 B of equal channels: the same level up to float rounding
    torch.testing.assert_close(back.rgb, rgb, atol=0.5 / 65535, rtol=0)
    if alpha:
        torch.testing.assert_close(back.alpha, a, atol=0, rtol=0)
    with Image.open(path) as im:  # Pillow reads our file too (narrowing RGB to the high byte)
        im.load()
        if grey and not alpha:
            assert np.array_equal(np.asarray(im), np.round(rgb[0].numpy() * 65535).astype(np.uint16))
        elif not grey:
            hi = np.asarray(im)[..., :3]
            assert np.array_equal(hi, (np.round(rgb.permute(1, 2, 0).numpy() * 65535).astype(np.uint16) >> 8))


@pytest.mark.parametrize("ext, lossless", [(".png", True), (".bmp", True), (".tif", True), (".jpg", False),
                                           (".webp", False)])
def test_8bit_formats(tmp_path, ext, lossless):
    arr = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    path = tmp_path / f"c{ext}"
    Image.fromarray(arr).save(path)
    img = read_image(path)
    with Image.open(path) as im:
        decoded = np.asarray(im.convert("RGB"))
    assert img.bits == 8 and not img.grey and img.alpha is None and img.rgb.shape == (3, 9, 11)
    np.testing.assert_array_equal(np.round(img.rgb.permute(1, 2, 0).numpy() * 255).astype(np.uint8), decoded)
    if lossless:
        np.testing.assert_array_equal(decoded, arr)
    out = tmp_path / f"d{ext}"
    write_image(out, img.rgb)
    with Image.open(out) as im:
        assert im.format == img.format
        if lossless:
            np.testing.assert_array_equal(np.asarray(im), arr)


def test_grey_and_rgba_8bit(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (6, 7), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.grey and img.alpha is None and torch.equal(img.rgb[0], img.rgb[2])
    write_image(tmp_path / "g2.png", img.rgb, grey=True)
    with Image.open(tmp_path / "g2.png") as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), grey)

    rgba = np.random.default_rng(2).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert not img.grey and img.alpha.shape == (1, 6, 7)
    write_image(tmp_path / "a2.png", img.rgb, img.alpha)
    with Image.open(tmp_path / "a2.png") as im:
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im), rgba)
    with pytest.warns(UserWarning, match="a3.jpg: JPEG has no alpha channel; the transparency is dropped"):
        write_image(tmp_path / "a3.jpg", img.rgb, img.alpha)
    with Image.open(tmp_path / "a3.jpg") as im:
        assert im.mode == "RGB"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    arr = np.random.default_rng(3).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "e.png"
    im.save(path, exif=exif)
    with Image.open(path) as ref:
        upright = np.asarray(ImageOps.exif_transpose(ref))  # Pillow's own transform is the oracle
    got = np.round(read_image(path).rgb.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, upright)


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot read .*bad.png"):
        read_image(tmp_path / "bad.png")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, "PNG")
    (tmp_path / "truncated.png").write_bytes(buf.getvalue()[:60])
    with pytest.raises(ValueError, match="cannot read"):
        read_image(tmp_path / "truncated.png")
    with pytest.raises(FileNotFoundError, match="image not found"):
        read_image(tmp_path / "missing.png")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "x.png", torch.rand(3, 4, 4))
    assert os.listdir(tmp_path) == []


def test_written_file_has_default_permissions(tmp_path):
    write_image(tmp_path / "p.png", torch.rand(3, 4, 4))
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(tmp_path / "p.png").st_mode & 0o777 == 0o666 & ~mask


def test_find_images(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt", "C.webp"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in find_images([tmp_path])] == ["C.webp", "a.jpg", "b.png"]
    assert find_images([tmp_path / "b.png"]) == [tmp_path / "b.png"]
    with pytest.raises(ValueError, match="no images in folder"):
        find_images([tmp_path / "sub"])
    with pytest.raises(FileNotFoundError, match="input not found"):
        find_images([tmp_path / "nope.png"])


def test_unknown_output_format(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the image format"):
        write_image(tmp_path / "x.xyz", torch.rand(3, 4, 4))
