r"""Training data: image folders → random (LR, HR) patch pairs, with the degradations of din_fast.io.degrade.

Two sources
-----------
* **HR folder only** (``SRDataset(hr_dir, scale, degradation=...)``): every HR image is first cropped to
  a multiple of the scale (``modcrop``, as the official data scripts do) and the LR patch is made on
  the fly with ``degradation`` = ``"BI"`` (MATLAB bicubic), ``"BD"`` (7×7 Gaussian blur, σ = 1.6, then
  bicubic) or ``"DN"`` (bicubic, then Gaussian noise of std ``noise_sigma / 255``), see
  ``din_fast.io.degrade``. The LR patch is computed from an HR window that extends ``margin`` LR pixels
  past the patch on every side (clamped to the image), so it equals the same crop of the degraded
  *whole* image, not a patch whose borders were mirrored: the bicubic kernel at ``1/s`` reaches
  ``1.5 s + 0.5`` HR pixels, the 7×7 blur 3 more, and ``margin = 2 + ceil(3 / s)`` LR pixels covers both.
* **HR and LR folders** (``lr_dir=...``): pairs matched by file name (the LR stem is the HR stem, or
  the HR stem followed by ``x{scale}``, the DIV2K convention, or ``_x{scale}``); every LR image must be exactly
  ``HR size / scale``. With ``scale=1`` this is the paired (input, target) dataset of the restoration
  tasks (deblurring, dehazing, deraining).

Sampling
--------
``patch`` is the LR (network input) patch side; the HR patch is ``scale * patch``. A sample is addressed
by its global sample number ``n`` (not by image index): ``n`` picks image ``perm_e[n mod N]`` of the
epoch ``e = n // N`` (``perm_e`` a permutation seeded by ``(seed, e)``), and the crop position, the
augmentation (one of the 8 flips / 90° rotations) and the DN noise are drawn from a generator seeded by
``(seed, n)``. The data stream is therefore a pure function of ``(seed, n)``: it does not depend on the
number of DataLoader workers, and resuming at step ``t`` only needs ``t`` (``StepSampler``).

Images are read by the image layer, as evaluation and upscaling read them (``din_fast.io.images``:
folder listing, EXIF orientation, 16-bit files rounded to 8 bits, grey replicated, alpha left out, LR
file matching, modcrop), decoded once at start-up and kept in memory (uint8) when their total size fits
in ``cache_bytes``; otherwise each sample decodes its file. Unreadable images are skipped with a warning
and counted in ``skipped``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from din_fast.io.degrade import bicubic_degrade, blur_degrade
from din_fast.io.images import find_lr, image_size, list_images, modcrop, verify_image
from din_fast.io.images import read_rgb8 as read_image

__all__ = ["DEGRADATIONS", "list_images", "read_image", "modcrop", "degrade", "SRDataset", "StepSampler",
           "augment", "to_tensor", "load_validation_pairs"]

DEGRADATIONS = ("BI", "BD", "DN")
#: Default in-memory cache budget for decoded images (uint8 bytes).
DEFAULT_CACHE_BYTES = 8 << 30


def degrade(hr: np.ndarray, scale: int, degradation: str, noise_sigma: float = 30.0,
            rng: np.random.Generator | None = None) -> np.ndarray:
    """LR image of a float ``HxWxC`` HR image in [0, 1] for ``degradation`` in BI / BD / DN (float64).

    DN adds ``noise_sigma / 255 * rng.standard_normal`` to the bicubic LR (``rng`` required).
    """
    if degradation == "BI":
        return bicubic_degrade(hr, scale)
    if degradation == "BD":
        return blur_degrade(hr, scale)
    if degradation == "DN":
        if rng is None:
            raise ValueError("the DN degradation needs a random generator (rng)")
        lr = bicubic_degrade(hr, scale)
        return lr + noise_sigma / 255.0 * rng.standard_normal(lr.shape)
    raise ValueError(f"degradation must be one of {', '.join(DEGRADATIONS)}; got {degradation!r}")


def augment(arrays: Sequence[np.ndarray], mode: int) -> list[np.ndarray]:
    """Apply the same element of the dihedral group D4 to every ``HxWxC`` array.

    ``mode`` in 0..7: bit 0 flips vertically, bit 1 flips horizontally, bit 2 transposes (H ↔ W); the
    eight combinations are all flips and 90° rotations.
    """
    if not 0 <= mode < 8:
        raise ValueError(f"augmentation mode must be in 0..7, got {mode}")
    out = []
    for a in arrays:
        if mode & 1:
            a = a[::-1]
        if mode & 2:
            a = a[:, ::-1]
        if mode & 4:
            a = a.transpose(1, 0, 2)
        out.append(np.ascontiguousarray(a))
    return out


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``HxWxC`` uint8 (0..255) or float ([0, 1]) array → float32 ``(C, H, W)`` tensor in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    return x.float().div_(255.0) if img.dtype == np.uint8 else x.float()


def _pair_files(hr_files: list[Path], lr_files: list[Path], scale: int) -> list[tuple[Path, Path]]:
    return [(hr, find_lr(lr_files, hr, scale)) for hr in hr_files]


def _image_size(path: Path) -> tuple[int, int] | None:
    """(H, W) in display orientation from the file header, or None if the file cannot be opened."""
    try:
        return image_size(path)
    except ValueError:
        return None


class SRDataset(torch.utils.data.Dataset):
    """Random (LR, HR) patch pairs; item ``n`` is global sample number ``n`` (see the module doc).

    Args:
        hr_dir: folder of HR (target) images.
        scale: SR factor (1 for the restoration tasks, which need ``lr_dir``).
        patch: LR patch side in pixels; the HR patch is ``scale * patch``.
        lr_dir: folder of LR (input) images matching ``hr_dir``; ``None`` makes LR with ``degradation``.
        degradation: ``"BI"``, ``"BD"`` or ``"DN"`` (only without ``lr_dir``).
        noise_sigma: DN noise std on the 0-255 scale.
        augment: random flips and 90° rotations.
        seed: seeds the epoch permutations and every sample's crop / augmentation / noise.
        cache_bytes: decode all images up front and keep them when their uint8 size fits in this.

    Returns per item: ``(lr, hr)`` float32 tensors ``(3, patch, patch)`` and ``(3, s·patch, s·patch)``,
    in [0, 1] except for bicubic overshoot and DN noise, which are not clipped.

    Raises:
        FileNotFoundError / ValueError: missing or empty folder, no readable image, an image smaller than
            the patch, LR/HR names that do not pair up or LR sizes that are not HR size / scale.
    """

    def __init__(self, hr_dir: str | os.PathLike, scale: int, patch: int, lr_dir: str | os.PathLike | None = None,
                 degradation: str = "BI", noise_sigma: float = 30.0, augment: bool = True, seed: int = 0,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if not isinstance(patch, int) or patch < 1:
            raise ValueError(f"patch must be a positive integer, got {patch!r}")
        if lr_dir is None:
            if scale == 1:
                raise ValueError("scale 1 (restoration) needs an input folder (lr_dir) paired with the targets")
            if degradation not in DEGRADATIONS:
                raise ValueError(f"degradation must be one of {', '.join(DEGRADATIONS)}; got {degradation!r}")
        self.scale, self.patch, self.degradation = scale, patch, degradation
        self.noise_sigma, self.augment, self.seed = float(noise_sigma), augment, seed
        self.margin = 2 + math.ceil(3 / scale)  # LR pixels of context around a patch (module doc)

        hr_files = list_images(hr_dir)
        pairs: list[tuple[Path, Path | None]]
        pairs = _pair_files(hr_files, list_images(lr_dir), scale) if lr_dir is not None else [(p, None) for p in hr_files]
        self.skipped: list[Path] = []
        entries: list[tuple[Path, Path | None, tuple[int, int], tuple[int, int] | None]] = []
        for hr, lr in pairs:
            hr_size, lr_size = _image_size(hr), None if lr is None else _image_size(lr)
            if hr_size is None or (lr is not None and lr_size is None):
                self._skip(hr if hr_size is None else lr, "cannot be read as an image")
                continue
            entries.append((hr, lr, hr_size, lr_size))
        nbytes = sum(3 * h * w * (1 + (1 / scale**2 if lr_dir is not None else 0)) for _, _, (h, w), _ in entries)
        self.cached = nbytes <= cache_bytes
        self.images: list[tuple[np.ndarray, np.ndarray | None] | tuple[Path, Path | None]] = []
        for hr, lr, hr_size, lr_size in entries:
            try:  # a valid header does not make a valid file: decode (cached) or verify (PNG CRCs etc.)
                if self.cached:
                    arrays = (read_image(hr), None if lr is None else read_image(lr))
                else:
                    for path in (hr, lr) if lr is not None else (hr,):
                        verify_image(path)
            except (OSError, ValueError) as exc:
                self._skip(hr if lr is None else f"{hr} / {lr}", f"failed to decode ({exc})")
                continue
            self._check_pair(hr, lr, hr_size, lr_size)
            self.images.append(arrays if self.cached else (hr, lr))
        if not self.images:
            raise ValueError(f"no readable images in {hr_dir} ({len(self.skipped)} skipped)")

    def _skip(self, path: object, why: str) -> None:
        warnings.warn(f"skipping {path}: {why}", stacklevel=3)
        self.skipped.append(Path(str(path)))

    def _check_pair(self, hr: Path, lr: Path | None, hr_size: tuple[int, int], lr_size: tuple[int, int] | None) -> None:
        s, p = self.scale, self.patch
        if lr_size is not None:
            expected = (hr_size[0] // s, hr_size[1] // s)
            if tuple(lr_size) != expected or hr_size[0] % s or hr_size[1] % s:
                raise ValueError(f"LR image {lr} is {lr_size[0]}x{lr_size[1]} but HR image {hr} is "
                                 f"{hr_size[0]}x{hr_size[1]}: at scale {s} the LR must be HR / {s} "
                                 f"({hr_size[0] / s:g}x{hr_size[1] / s:g})")
        if min(hr_size[0] // s, hr_size[1] // s) < p:
            raise ValueError(f"image {hr} is {hr_size[0]}x{hr_size[1]}, smaller than the patch "
                             f"({p} LR pixels = {s * p} HR pixels at scale {s})")

    def __len__(self) -> int:
        """Number of distinct images (one epoch); any non-negative sample number is a valid index."""
        return len(self.images)

    def _arrays(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        entry = self.images[i]
        if self.cached:
            return entry  # type: ignore[return-value]
        hr, lr = entry
        return read_image(hr), None if lr is None else read_image(lr)

    def image_index(self, n: int) -> int:
        """Index of the image that global sample ``n`` is cut from."""
        epoch, pos = divmod(n, len(self.images))
        perm = np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.images))
        return int(perm[pos])

    def __getitem__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if n < 0:
            raise IndexError(f"sample numbers are non-negative, got {n}")
        rng = np.random.default_rng([self.seed, 1, n])
        hr_img, lr_img = self._arrays(self.image_index(n))
        s, p = self.scale, self.patch
        if lr_img is None:
            hr_img = modcrop(hr_img, s)
        lh, lw = hr_img.shape[0] // s, hr_img.shape[1] // s
        y, x = int(rng.integers(0, lh - p + 1)), int(rng.integers(0, lw - p + 1))
        hr = hr_img[s * y: s * (y + p), s * x: s * (x + p)]
        if lr_img is not None:
            lr = lr_img[y: y + p, x: x + p]
        else:
            m = self.margin
            y0, x0 = max(0, y - m), max(0, x - m)
            y1, x1 = min(lh, y + p + m), min(lw, x + p + m)
            window = hr_img[s * y0: s * y1, s * x0: s * x1].astype(np.float64) / 255.0
            lr = degrade(window, s, self.degradation, self.noise_sigma, rng)[y - y0: y - y0 + p, x - x0: x - x0 + p]
        if self.augment:
            lr, hr = augment([lr, hr], int(rng.integers(0, 8)))
        return to_tensor(lr), to_tensor(hr)


class StepSampler(torch.utils.data.Sampler[int]):
    """Infinite stream of global sample numbers for one rank, starting at sample ``start_sample``.

    Each step consumes a global batch of ``B = batch · world_size`` consecutive sample numbers; rank ``r``
    takes the ``r``-th contiguous chunk of ``batch``. The union over ranks of one step's samples is exactly
    the single-process batch of size ``B`` (DistributedSampler's sharding, without epochs), and a run
    resumed at step ``t`` continues at ``start_sample = t · B``.
    """

    def __init__(self, batch: int, start_sample: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if batch < 1 or start_sample < 0:
            raise ValueError(f"need batch >= 1 and start_sample >= 0, got {batch} and {start_sample}")
        self.batch, self.start_sample, self.rank, self.world_size = batch, start_sample, rank, world_size

    def __iter__(self) -> Iterator[int]:
        first = self.start_sample + self.rank * self.batch
        while True:
            yield from range(first, first + self.batch)
            first += self.batch * self.world_size


def load_validation_pairs(hr_dir: str | os.PathLike, scale: int, lr_dir: str | os.PathLike | None = None,
                          degradation: str = "BI", noise_sigma: float = 30.0,
                          seed: int = 0) -> list[tuple[str, torch.Tensor, np.ndarray]]:
    """Whole-image validation set: ``(name, lr (1, 3, h, w) float32, hr uint8 HxWx3)`` per image.

    Without ``lr_dir`` the HR image is modcropped and degraded (DN noise seeded by ``(seed, index)``, so
    every validation sees the same inputs). Unreadable images are skipped with a warning.
    """
    hr_files = list_images(hr_dir)
    pairs = (_pair_files(hr_files, list_images(lr_dir), scale) if lr_dir is not None
             else [(p, None) for p in hr_files])
    out = []
    for i, (hr_path, lr_path) in enumerate(pairs):
        try:
            hr = read_image(hr_path)
            lr_arr = None if lr_path is None else read_image(lr_path)
        except (OSError, ValueError) as exc:
            warnings.warn(f"skipping validation image {hr_path}: {exc}", stacklevel=2)
            continue
        if lr_arr is None:
            hr = modcrop(hr, scale)
            lr = degrade(hr.astype(np.float64) / 255.0, scale, degradation, noise_sigma,
                         np.random.default_rng([seed, 2, i]))
        else:
            if lr_arr.shape[0] * scale != hr.shape[0] or lr_arr.shape[1] * scale != hr.shape[1]:
                raise ValueError(f"validation LR {lr_path} is {lr_arr.shape[0]}x{lr_arr.shape[1]} but HR "
                                 f"{hr_path} is {hr.shape[0]}x{hr.shape[1]} (scale {scale})")
            lr = lr_arr
        out.append((hr_path.name, to_tensor(lr).unsqueeze(0), hr))
    if not out:
        raise ValueError(f"no readable validation images in {hr_dir}")
    return out
