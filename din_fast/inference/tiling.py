"""``din_fast.upscale``: whole-image inference with tiling, the x8 self-ensemble and automatic tiling.

Tiling. The image is cut into a grid of *cores*, at most ``tile`` x ``tile`` input pixels each and of
near-equal size; each core is run with ``overlap`` pixels of context on every side (clipped at the
image border), and only the core's part of the output, ``scale`` x the core, is kept (cropping). For a
network whose output pixel depends only on inputs within ``r`` pixels (receptive-field radius ``r``), the
kept pixels see exactly the inputs they see in the untiled run when ``overlap >= r``: at the image
border a tile's zero padding *is* the image's, and inside, the context covers the receptive field. So
the tiled result equals the untiled one up to float rounding (convolution algorithms may sum in another
order on another shape).

DIN and DeFiAN are not local: AsyCA and RCAB pool over the whole image, DeFiAN's DAC normalises with
whole-image statistics, and DIN's stack of 3x3 convolutions has a receptive field of hundreds of pixels.
Tiles of these models differ from the untiled run; the larger the tiles, the smaller the difference
(README, "Upscaling and evaluation", gives measured values).

Self-ensemble (DIN+ / "x8"). With ``T`` the eight flips/rotations of the square's symmetry group
(``rot90^k`` for k = 0..3, each with and without a left-right flip)::

    y = 1/8 Σ_T  T⁻¹( f( T(x) ) )

Automatic tiling. With ``tile=None`` the image is run whole; if that runs out of memory (CUDA's
``OutOfMemoryError``, or the CPU allocator's "not enough memory" error), the run is retried with tiles of
half the longer side, then a quarter, ... until it fits (the tile size found is reused for the rest of
the image's passes), and an ``AutoTilingWarning`` says so. On CPU, Linux may kill a process instead of failing an allocation; pass ``tile``
there for images that are large for the machine.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from din_fast.models.blocks import check_image_batch

__all__ = ["AutoTilingWarning", "check_tiling", "upscale", "tile_grid"]

Progress = Callable[[int, int], None]

# smallest core the automatic tiling tries before giving up
_MIN_AUTO_TILE = 16


def check_tiling(tile: int | None, overlap: int, names: tuple[str, str] = ("tile", "overlap")) -> None:
    """ValueError unless ``tile`` is None or a positive integer, ``overlap`` a non-negative integer and
    ``tile >= overlap``; ``names`` are what the messages call them (the command line's option names)."""
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"{names[0]} must be a positive integer, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"{names[1]} must be a non-negative integer, got {overlap!r}")
    if tile is not None and tile < overlap:
        raise ValueError(f"{names[0]} ({tile}) must not be smaller than {names[1]} ({overlap})")


def tile_grid(length: int, tile: int) -> list[tuple[int, int]]:
    """Split ``[0, length)`` into ``ceil(length / tile)`` consecutive cores of near-equal size (≤ tile)."""
    n = math.ceil(length / tile)
    bounds = [round(i * length / n) for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "not enough memory" in text
                                              or "can't allocate memory" in text)


class AutoTilingWarning(UserWarning):
    """The whole image did not fit in memory and is being run in tiles."""


def _model_placement(model: nn.Module, image: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the model's parameters (the image's own without parameters)."""
    param = next(iter(model.parameters()), None)
    return (param.device, param.dtype) if param is not None else (image.device, image.dtype)


class _Runner:
    """Runs ``model`` over an image, whole or tiled, and reports progress over all passes."""

    def __init__(self, model: nn.Module, tile: int | None, overlap: int, passes: int,
                 progress: Progress | None, dtype: torch.dtype) -> None:
        self.model = model
        self.dtype = dtype
        self.tile = tile
        self.auto = tile is None
        self.overlap = overlap
        self.remaining_passes = passes - 1
        self.progress = progress
        self.done = 0
        self.total = 0

    def _forward(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        return self.model(x.to(device, self.dtype, non_blocking=True)).to(x.device)

    def _tick(self, total_this_pass: int) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total + total_this_pass * (self.remaining_passes + 1))

    def run(self, x: torch.Tensor, device: torch.device, remaining_passes: int) -> torch.Tensor:
        self.remaining_passes = remaining_passes
        start = self.done
        while True:
            try:
                if self.tile is None:
                    y = self._forward(x, device)
                    self._tick(1)
                    self.total += 1
                    return y
                return self._tiled(x, device)
            except Exception as exc:
                if not (self.auto and _is_out_of_memory(exc)):
                    raise
                self.done = start  # the failed attempt's calls do not count
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                longest = max(x.shape[-2:]) if self.tile is None else self.tile
                if longest <= _MIN_AUTO_TILE:
                    raise RuntimeError(f"out of memory even with {longest}x{longest} tiles: {exc}") from exc
                tried = "the whole image" if self.tile is None else f"{self.tile}x{self.tile} tiles"
                self.tile = max(_MIN_AUTO_TILE, math.ceil(longest / 2))
                warnings.warn(f"out of memory running {tried}; tiling automatically with {self.tile}x{self.tile} "
                              "tiles (--tile sets the size)", AutoTilingWarning, stacklevel=4)

    def _tiled(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        h, w = x.shape[-2:]
        rows, cols = tile_grid(h, self.tile), tile_grid(w, self.tile)
        count = len(rows) * len(cols)
        out: torch.Tensor | None = None
        scale = 0
        for r0, r1 in rows:
            for c0, c1 in cols:
                t0, t1 = max(r0 - self.overlap, 0), min(r1 + self.overlap, h)
                l0, l1 = max(c0 - self.overlap, 0), min(c1 + self.overlap, w)
                y = self._forward(x[..., t0:t1, l0:l1], device)
                if out is None:
                    scale = y.shape[-2] // (t1 - t0)
                    if y.shape[-2:] != (scale * (t1 - t0), scale * (l1 - l0)):
                        raise ValueError(f"model output {tuple(y.shape)} is not an integer upscaling of "
                                         f"its input {tuple(x[..., t0:t1, l0:l1].shape)}")
                    out = y.new_empty(*y.shape[:-2], scale * h, scale * w)
                out[..., scale * r0:scale * r1, scale * c0:scale * c1] = \
                    y[..., scale * (r0 - t0):scale * (r1 - t0), scale * (c0 - l0):scale * (c1 - l0)]
                self._tick(count)
        self.total += count
        return out


def _transforms() -> list[tuple[int, bool]]:
    """The eight elements of the square's symmetry group as (quarter turns, flip left-right first)."""
    return [(k, flip) for flip in (False, True) for k in range(4)]


def _apply(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = x.flip(-1) if flip else x
    return torch.rot90(x, k, dims=(-2, -1))


def _invert(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if flip else y


def upscale(model: nn.Module, image: torch.Tensor, tile: int | None = None, overlap: int = 16,
            ensemble: bool = False, progress: Progress | None = None) -> torch.Tensor:
    """Super-resolve ``image`` with ``model``, optionally tiled and/or with the x8 self-ensemble.

    Args:
        model: maps (B, 3, H, W) → (B, 3, sH, sW) (any din_fast model, or ``din_fast.optimize(model)``);
            called under ``torch.no_grad``; its mode (train/eval) is left as it is.
        image: float RGB in [0, 1], (3, H, W) or (B, 3, H, W), on any device and of any floating dtype;
            each tile is moved to the model's device and converted to its parameters' dtype, and the
            result is assembled on the image's device.
        tile: core size in input pixels (the model sees up to ``tile + 2 · overlap``); None runs the image
            whole and tiles automatically if it runs out of memory (module doc).
        overlap: context pixels on each side of a core; at most ``tile``.
        ensemble: average the eight flipped/rotated runs (module doc).
        progress: called as ``progress(done, total)`` after each model call.

    Returns:
        (3, sH, sW) or (B, 3, sH, sW), the model's output dtype, on the image's device; not clamped.
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a (3, H, W) or (B, 3, H, W) tensor, got {shape}")
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    check_image_batch(batch)
    check_tiling(tile, overlap)
    device, dtype = _model_placement(model, batch)
    transforms = _transforms() if ensemble else [(0, False)]
    runner = _Runner(model, tile, overlap, len(transforms), progress, dtype)
    total: torch.Tensor | None = None
    with torch.no_grad():
        for i, (k, flip) in enumerate(transforms):
            y = _invert(runner.run(_apply(batch, k, flip), device, len(transforms) - i - 1), k, flip)
            total = y if total is None else total + y
    out = total / len(transforms) if ensemble else total
    return out if image.dim() == 4 else out[0]
