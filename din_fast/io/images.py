"""Reading and writing images for ``din-fast upscale`` / ``eval``: Pillow formats, 16-bit PNG, grey and
alpha, EXIF orientation, atomic writes.

Reading (``read_image``) returns an :class:`ImageData`: RGB as a float32 tensor ``(3, H, W)`` in [0, 1]
(grey images are replicated to three channels and flagged ``grey``), the alpha channel separately as
``(1, H, W)`` (or None), the bit depth (8 or 16) and the file's format. The EXIF orientation tag is
applied, so pixels are in display orientation (the tag is not written back).

16-bit PNG: Pillow decodes 16-bit grey natively (mode ``I;16``) but narrows 16-bit RGB, RGBA and
grey+alpha to 8 bits. Its PNG decoder still does the unfiltering; only the final unpacking drops the low
byte. So for those colour types the file is decoded twice, once keeping the high byte of every sample
(rawmode ``RGB;16B``) and once the low byte (``RGB;16L``, same 48-bit stride, so the same unfiltering),
and ``value = 256 hi + lo`` is exact. Grey+alpha (32 bits a pixel) is decoded as raw 8-bit RGBA, whose
stride is the same, and the byte pairs are recombined.

Writing (``write_image``) quantises ``round(clamp(x, 0, 1) · (2^bits − 1))``, writes to a temporary name
in the target folder and renames it into place, so an interrupted or failed write never leaves a partial
file. 16 bits are kept for PNG (any channel layout; written by the small encoder below, since Pillow
cannot write 16-bit RGB) and for grey TIFF; other formats store 8 bits. Formats without alpha (JPEG)
drop it; WebP and BMP, which have no grey+alpha mode, store grey+alpha as RGBA.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from din_fast.io.atomic import atomic_path

__all__ = ["DEFAULT_MAX_PIXELS", "FORMATS", "ImageData", "ImageTooLargeError", "find_images", "find_lr",
           "format_for", "image_size", "list_images", "modcrop", "read_image", "read_rgb8", "verify_image",
           "write_image"]

#: Largest image (width x height) that ``read_image`` decodes unless told otherwise: a 40-megapixel RGB
#: image is 480 MB as float32, and its x4 result 7.7 GB; the check reads only the file's header.
DEFAULT_MAX_PIXELS = 40_000_000

# file extension -> Pillow format name; the first extension of each format is the one written
FORMATS: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                           ".tiff": "TIFF", ".webp": "WEBP"}
EXTENSION: dict[str, str] = {}
for _ext, _fmt in FORMATS.items():
    EXTENSION.setdefault(_fmt, _ext)

# EXIF orientation (tag 0x0112) -> the transform that brings the stored pixels (H x W x C) upright
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],                       # mirrored left-right
    3: lambda a: a[::-1, ::-1],                    # rotated 180°
    4: lambda a: a[::-1],                          # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),                 # transposed
    6: lambda a: np.rot90(a, -1),                  # rotate 90° clockwise to display
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),    # transverse
    8: lambda a: np.rot90(a, 1),                   # rotate 90° counter-clockwise to display
}
_EXIF_ORIENTATION = 0x0112
# ITU-R 601 luma weights, Pillow's RGB -> L conversion: how an upscaled grey image is turned back to grey
_GREY_WEIGHTS = (0.299, 0.587, 0.114)


class ImageTooLargeError(ValueError):
    """An image whose declared size is above the pixel limit of ``read_image``."""


# Pillow's own decompression-bomb check (a warning above 89 MP, an error above 179 MP, in Image.open) is
# replaced by ``read_image``'s limit, which the caller can raise; it is switched off while we open a file.
_PIL_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_size_check_off() -> Iterator[None]:
    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@dataclass
class ImageData:
    """A decoded image.

    Attributes:
        rgb: float32 ``(3, H, W)`` in [0, 1], display orientation (grey replicated to 3 channels).
        alpha: float32 ``(1, H, W)`` in [0, 1], or None.
        grey: the file stored one colour channel.
        bits: bits per sample in the file, 8 or 16.
        format: Pillow format name of the file (``"PNG"``, ``"JPEG"``, ...).
        icc_profile: the embedded ICC profile (bytes) or None; written back unchanged.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    grey: bool
    bits: int
    format: str
    icc_profile: bytes | None = None


def format_for(path: str | os.PathLike) -> str | None:
    """The Pillow format name that ``path``'s extension stands for, or None if it is not an image name."""
    return FORMATS.get(Path(path).suffix.lower())


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder`` (by extension, ``FORMATS``; never dotfiles, which
    include ``din_fast.io.atomic``'s temporary files), sorted by name.

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a folder.
        ValueError: it holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    images = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and format_for(p))
    if not images:
        raise ValueError(f"no images in folder {folder} (looked for {', '.join(sorted(FORMATS))})")
    return images


def find_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into the image files to process: each folder's images (``list_images``),
    files as given. FileNotFoundError / ValueError for a missing path or a folder without images."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += list_images(item)
        elif item.is_file():
            found.append(item)
        else:
            raise FileNotFoundError(f"input not found: {item}")
    return found


def find_lr(lr_images: Sequence[Path], hr: Path, scale: int) -> Path:
    """The LR image of HR image ``hr`` among ``lr_images``: the same stem, or the stem followed by
    ``x{scale}`` (DIV2K) or ``_x{scale}``. ValueError naming what was looked for if there is none."""
    stems = {p.stem: p for p in lr_images}
    candidates = (hr.stem, f"{hr.stem}x{scale}", f"{hr.stem}_x{scale}")
    for stem in candidates:
        if stem in stems:
            return stems[stem]
    where = f" in {lr_images[0].parent}" if lr_images else ""
    raise ValueError(f"no LR image for {hr.name}{where} (looked for {', '.join(candidates)} with an image "
                     "extension)")


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop ``img`` (``HxW[xC]``) at the bottom/right to a multiple of ``scale`` in both dimensions."""
    h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    return img[:h, :w]


def _png16_colour_type(im: Image.Image) -> int | None:
    """PNG colour type of a 16-bit PNG whose samples Pillow would narrow (2 RGB, 4 grey+alpha, 6 RGBA)."""
    if im.format != "PNG" or not im.tile or not str(im.tile[0].args).endswith(";16B"):
        return None
    return {"RGB;16B": 2, "LA;16B": 4, "RGBA;16B": 6}.get(im.tile[0].args)


def _decode_png16(path: Path, colour_type: int) -> np.ndarray:
    """The uint16 ``H x W x C`` samples of a 16-bit RGB / grey+alpha / RGBA PNG (see the module doc)."""

    def decode(mode: str | None, rawmode: str) -> np.ndarray:
        with _pillow_size_check_off(), Image.open(path) as im:
            if mode is not None:
                im._mode = mode  # a mode of the same stride, so Pillow's unfiltering is unchanged
            im.tile = [t._replace(args=rawmode) for t in im.tile]
            im.load()
            return np.asarray(im)

    if colour_type == 4:
        raw = decode("RGBA", "RGBA").astype(np.uint16)  # bytes: L hi, L lo, A hi, A lo
        return (raw[..., 0::2] << 8) | raw[..., 1::2]
    name = "RGB" if colour_type == 2 else "RGBA"
    hi = decode(None, f"{name};16B").astype(np.uint16)
    lo = decode(None, f"{name};16L").astype(np.uint16)
    return (hi << 8) | lo


def _samples(im: Image.Image) -> tuple[np.ndarray, int, bool, bool]:
    """(samples H x W x C as uint8/uint16, bits, grey, has alpha) in stored orientation, for every image
    but the 16-bit PNGs of ``_decode_png16``."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.clip(np.asarray(im).astype(np.int64), 0, 65535).astype(np.uint16)
        return arr[..., None], 16, True, False
    if mode == "F":
        raise ValueError("floating-point images (Pillow mode F) are not supported")
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"))[..., None], 8, True, False
    if mode in ("LA", "La"):
        return np.asarray(im.convert("LA")), 8, True, True
    has_alpha = "A" in mode or "a" in mode or (mode == "P" and "transparency" in im.info)
    return np.asarray(im.convert("RGBA" if has_alpha else "RGB")), 8, False, has_alpha


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageData:
    """Decode an image file (PNG, JPEG, BMP, TIFF, WebP, or anything else Pillow reads).

    Of an animated or multi-frame file only the first frame is read (with a warning).

    Args:
        path: the file.
        max_pixels: refuse images whose declared width x height is above this, before decoding them
            (None: no limit).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageTooLargeError: the image is larger than ``max_pixels`` (a ValueError).
        ValueError: the file is not a readable image (unknown format, truncated or corrupt data).
        Every message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with _pillow_size_check_off():
            im = Image.open(path)
        with im:
            width, height = im.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{path}: {width}x{height} image ({width * height / 1e6:.1f} megapixels) is larger than "
                    f"the limit of {max_pixels / 1e6:g} megapixels (raise it with --max-pixels)")
            frames = getattr(im, "n_frames", 1)
            colour_type = _png16_colour_type(im)  # first: load() (also run by getexif) empties im.tile
            fmt = im.format or "PNG"
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            icc = im.info.get("icc_profile")
            if colour_type is not None:
                arr, bits = _decode_png16(path, colour_type), 16
                grey, has_alpha = colour_type == 4, colour_type != 2
            else:
                im.load()
                arr, bits, grey, has_alpha = _samples(im)
    except (FileNotFoundError, ImageTooLargeError):
        raise
    except Exception as exc:  # Pillow's decoders fail in many ways on a broken file; all mean the same
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"cannot read {path}: not a valid image ({reason})") from None
    if frames > 1:
        warnings.warn(f"{path}: {fmt} with {frames} frames; only the first frame is used", stacklevel=2)
    if orientation in _ORIENT:
        arr = _ORIENT[orientation](arr)
    pixels = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32) / (2 ** bits - 1)).permute(2, 0, 1)
    colour = pixels[:-1] if has_alpha else pixels
    rgb = colour.expand(3, -1, -1) if grey else colour
    alpha = pixels[-1:].contiguous() if has_alpha else None
    return ImageData(rgb.contiguous(), alpha, grey, bits, fmt, icc)


def read_rgb8(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``read_image(path).rgb`` as uint8 ``H x W x 3``, ``round(255 · x)``: the pixels training and
    evaluation work on (16-bit files are rounded to 8 bits, grey is replicated, alpha is left out)."""
    return _quantise(read_image(path, max_pixels).rgb, 8)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file in display orientation (EXIF applied), from its header only.
    ValueError naming the file if it cannot be opened as an image."""
    try:
        with _pillow_size_check_off(), Image.open(path) as im:
            width, height = im.size
            transposed = im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    except Exception as exc:  # as in read_image: every decoder failure means "not an image"
        raise ValueError(f"cannot read {path}: not a valid image ({' '.join(str(exc).split())})") from None
    return (width, height) if transposed else (height, width)


def verify_image(path: str | os.PathLike) -> None:
    """Check a file's integrity without decoding its pixels (Pillow's ``verify``: PNG CRCs, structure).
    ValueError naming the file if it is broken."""
    try:
        with _pillow_size_check_off(), Image.open(path) as im:
            im.verify()
    except Exception as exc:  # as in read_image
        raise ValueError(f"cannot read {path}: not a valid image ({' '.join(str(exc).split())})") from None


def _quantise(x: torch.Tensor, bits: int) -> np.ndarray:
    """float ``(C, H, W)`` in [0, 1] -> ``H x W x C`` uint8/uint16, ``round(clamp(x) · (2^bits − 1))``."""
    q = (x.detach().float().cpu().clamp(0, 1) * (2 ** bits - 1)).round().permute(1, 2, 0).numpy()
    return q.astype(np.uint16 if bits == 16 else np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _encode_png16(arr: np.ndarray, icc_profile: bytes | None) -> bytes:
    """A 16-bit PNG of uint16 ``H x W x C`` (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA); every row uses
    the Sub filter (byte minus the same byte of the previous pixel, mod 256), which compresses photos
    well and vectorises."""
    h, w, c = arr.shape
    rows = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    bpp = 2 * c
    filtered = rows.copy()
    filtered[:, bpp:] -= rows[:, :-bpp]  # uint8 arithmetic wraps mod 256, as the PNG filter requires
    data = np.concatenate([np.ones((h, 1), np.uint8), filtered], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    if icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    chunks += [_png_chunk(b"IDAT", zlib.compress(data, 6)), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def write_image(path: str | os.PathLike, rgb: torch.Tensor, alpha: torch.Tensor | None = None, *,
                grey: bool = False, bits: int = 8, format: str | None = None,
                icc_profile: bytes | None = None) -> None:
    """Write an image atomically (temporary file in the same folder, then rename).

    Args:
        path: destination; its folder must exist.
        rgb: float ``(3, H, W)`` in [0, 1] (values outside are clamped).
        alpha: float ``(1, H, W)`` in [0, 1] or None.
        grey: store one channel, ``0.299 R + 0.587 G + 0.114 B``.
        bits: 8 or 16; 16 is kept for PNG and grey TIFF, other formats get 8.
        format: Pillow format name; default from ``path``'s extension.
        icc_profile: ICC profile to embed (PNG, JPEG, TIFF, WebP).
    """
    path = Path(path)
    fmt = (format or format_for(path) or "").upper()
    if fmt not in EXTENSION:
        raise ValueError(f"cannot tell the image format of {path}: use one of {', '.join(sorted(FORMATS))} "
                         "or pass a format")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if rgb.dim() != 3 or rgb.shape[0] != 3:
        raise ValueError(f"rgb must be (3, H, W), got {tuple(rgb.shape)}")
    if alpha is not None and (alpha.dim() != 3 or alpha.shape[0] != 1 or alpha.shape[1:] != rgb.shape[1:]):
        raise ValueError(f"alpha must be (1, H, W) matching rgb, got {tuple(alpha.shape)}")
    if fmt == "JPEG":
        if alpha is not None and _quantise(alpha, 8).min() < 255:
            warnings.warn(f"{path}: JPEG has no alpha channel; the transparency is dropped", stacklevel=2)
        alpha = None
    if grey and fmt in ("WEBP", "BMP") and alpha is not None:
        grey = False
    colour = rgb.float()
    if grey:
        w = torch.tensor(_GREY_WEIGHTS, dtype=colour.dtype, device=colour.device).view(3, 1, 1)
        colour = (colour * w).sum(0, keepdim=True)
    planes = colour if alpha is None else torch.cat([colour, alpha.to(colour)])
    if torch.isnan(planes).any():
        raise ValueError(f"cannot write {path}: the image holds NaN values")
    if not (fmt == "PNG" or (fmt == "TIFF" and planes.shape[0] == 1)):
        bits = 8
    arr = _quantise(planes, bits)

    with atomic_path(path) as tmp:
        if bits == 16 and fmt == "PNG":
            Path(tmp).write_bytes(_encode_png16(arr, icc_profile))
        else:
            # Pillow infers L / LA / RGB / RGBA from uint8 layouts and I;16 from 2-D uint16
            im = Image.fromarray(arr[..., 0].astype("<u2") if bits == 16 else
                                 (arr[..., 0] if arr.shape[2] == 1 else arr))
            if fmt == "WEBP" and im.mode == "L":
                im = im.convert("RGB")
            options: dict = {"icc_profile": icc_profile} if icc_profile and fmt != "BMP" else {}
            if fmt in ("JPEG", "WEBP"):
                options["quality"] = 95
            im.save(tmp, format=fmt, **options)
