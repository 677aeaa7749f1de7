"""``din-fast eval``: PSNR / SSIM of a model on a folder of high-resolution images, as the SR papers
measure them (``din_fast.inference.metrics``: MATLAB luma, uint8 quantisation, ``scale``-pixel border crop,
11 x 11 Gaussian SSIM).

For each HR image (sorted): the HR is cropped to a multiple of the scale ("modcrop"); the LR input is
the matching file of ``--lr`` (same stem, or the stem followed by ``x{s}`` / ``_x{s}``; the HR is then
cropped to ``scale`` x the LR's size), or, without ``--lr``, ``round_uint8(imresize(HR, 1/scale))`` —
MATLAB's ``imresize(HR, 1/scale, 'bicubic')`` on uint8 (``din_fast.io.degrade``). The SR output is quantised
with ``din_fast.inference.metrics.quantize`` and compared with the HR on the Y channel. ``--bicubic`` adds the
baseline of MATLAB bicubic upscaling of the same LR (``round_uint8(imresize(LR, scale))``). Grey images
are compared as RGB with equal channels; 16-bit images are measured at 8 bits, as the metrics define.

An image that cannot be read or measured does not stop the others (as in ``din-fast upscale``): it is
reported with its reason, the table holds the rest, and the exit status is 1 (``--fail-fast`` stops at
the first). ``--json PATH`` is checked (a writable folder, not a folder itself) before anything runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from din_fast.backends import BACKENDS
from din_fast.io.images import DEFAULT_MAX_PIXELS

__all__ = ["add_arguments", "evaluate", "format_table", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``din-fast eval``."""
    parser.add_argument("--model", default=None, help="registered model name (default: the packaged model)")
    parser.add_argument("--weights", default=None,
                        help="din_fast .safetensors file or an official checkpoint (needs --model)")
    parser.add_argument("--hr", required=True, help="folder (or file) of high-resolution ground truth")
    parser.add_argument("--lr", default=None,
                        help="folder of matching LR images (default: MATLAB bicubic of HR)")
    parser.add_argument("--scale", type=int, required=True, help="upscaling factor")
    parser.add_argument("--ssim-variant", default="standard", choices=["standard", "defian"],
                        help="'defian': DeFiAN's luma-offset SSIM (din_fast.inference.metrics)")
    parser.add_argument("--bicubic", action="store_true", help="add the bicubic-upscaling baseline")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--tile", type=int, default=None,
                        help="tile size in LR pixels (default: whole image)")
    parser.add_argument("--tile-overlap", type=int, default=16, help="context pixels around each tile")
    parser.add_argument("--self-ensemble", action="store_true", help="x8 flip/rotate ensemble (DIN+)")
    parser.add_argument("--backend", default=None, choices=BACKENDS, help="fused-op implementation")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")
    from din_fast.cli.upscale import add_batch_arguments

    add_batch_arguments(parser)


def _measure(model: torch.nn.Module, path: Path, lr_images: list[Path] | None, scale: int, ssim_variant: str,
             bicubic: bool, tile: int | None, overlap: int, ensemble: bool, max_pixels: int | None) -> dict:
    """The metrics of one HR image (module doc)."""
    from din_fast.cli.upscale import run_model
    from din_fast.inference.metrics import psnr, quantize, ssim
    from din_fast.io.degrade import imresize, round_uint8
    from din_fast.io.images import find_lr, modcrop, read_rgb8

    hr = read_rgb8(path, max_pixels)
    source = path
    if lr_images is not None:
        source = find_lr(lr_images, path, scale)
        lr = read_rgb8(source, max_pixels)
        h, w = lr.shape[0] * scale, lr.shape[1] * scale
        if hr.shape[0] < h or hr.shape[1] < w:
            raise ValueError(f"{path}: HR {hr.shape[1]}x{hr.shape[0]} is smaller than {scale} x "
                             f"its LR ({lr.shape[1]}x{lr.shape[0]})")
        hr = hr[:h, :w]
    else:
        hr = modcrop(hr, scale)
        if hr.size == 0:
            raise ValueError(f"{path}: smaller than the scale {scale}")
        lr = round_uint8(imresize(hr, 1 / scale))
    x = torch.from_numpy(lr).permute(2, 0, 1).float() / 255
    name = getattr(model, "model_name", None) or getattr(getattr(model, "model", None), "model_name", "model")
    sr = quantize(run_model(model, name, source, x, tile=tile, overlap=overlap, ensemble=ensemble))
    row = {"image": path.name, "psnr": psnr(sr, hr, crop_border=scale),
           "ssim": ssim(sr, hr, crop_border=scale, variant=ssim_variant)}
    if bicubic:
        bic = round_uint8(imresize(lr, scale))
        row["bicubic_psnr"] = psnr(bic, hr, crop_border=scale)
        row["bicubic_ssim"] = ssim(bic, hr, crop_border=scale, variant=ssim_variant)
    return row


def evaluate(model: torch.nn.Module, hr_inputs: list[str], scale: int, lr_dir: str | None = None,
             ssim_variant: str = "standard", bicubic: bool = False, tile: int | None = None,
             overlap: int = 16, ensemble: bool = False, progress: bool = False,
             failures: list[tuple[Path, str]] | None = None,
             max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[dict]:
    """Per-image metrics (module doc): dicts with ``image``, ``psnr``, ``ssim`` and, with ``bicubic``,
    ``bicubic_psnr`` and ``bicubic_ssim``.

    ``failures``: None raises the first image's error; a list receives ``(path, one-line reason)`` for
    each image that fails, and the others are measured. ``max_pixels``: ``read_image``'s size limit.
    """
    from tqdm import tqdm

    from din_fast.cli.upscale import describe_failure
    from din_fast.io.images import find_images

    hr_paths = find_images(hr_inputs)
    lr_images = find_images([lr_dir]) if lr_dir is not None else None
    rows = []
    for path in tqdm(hr_paths, unit="img", disable=None if progress else True):
        try:
            rows.append(_measure(model, path, lr_images, scale, ssim_variant, bicubic, tile, overlap, ensemble,
                                 max_pixels))
        except Exception as exc:
            if failures is None:
                raise
            failures.append((path, describe_failure(exc, path)))
            tqdm.write(f"din-fast eval: error: {failures[-1][1]}", file=sys.stderr)
    return rows


def _mean(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k != "image"]
    return {"image": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in keys}}


def format_table(rows: list[dict]) -> str:
    """Fixed-width table of the per-image rows and their mean."""
    headers = {"psnr": "PSNR (dB)", "ssim": "SSIM", "bicubic_psnr": "bicubic PSNR",
               "bicubic_ssim": "bicubic SSIM"}
    keys = [k for k in rows[0] if k != "image"]
    table = rows + [_mean(rows)]
    width = max(len("image"), *(len(r["image"]) for r in table))
    lines = ["  ".join([f"{'image':<{width}}"] + [f"{headers[k]:>12}" for k in keys])]
    for i, row in enumerate(table):
        if i == len(rows):
            lines.append("-" * len(lines[0]))
        cells = [f"{row[k]:>12.2f}" if "psnr" in k else f"{row[k]:>12.4f}" for k in keys]
        lines.append("  ".join([f"{row['image']:<{width}}"] + cells))
    return "\n".join(lines)


def check_json_output(path: str) -> None:
    """Raise before the evaluation when ``--json PATH`` could not be written: a folder, a missing or
    unwritable parent folder, or an existing file that is not writable."""
    target = Path(path)
    parent = target.parent
    if target.is_dir():
        raise ValueError(f"--json {path} is a folder; give a file name")
    if not parent.is_dir():
        raise FileNotFoundError(f"--json {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise PermissionError(f"--json {path}: not writable")


def run_cli(args: argparse.Namespace) -> int:
    """``din-fast eval``: load the model, measure every HR image, print the table (and write JSON)."""
    from din_fast.backends import use_backend
    from din_fast.cli.upscale import check_options, select_device
    from din_fast.inference.optimize import optimize
    from din_fast.io.atomic import atomic_path
    from din_fast.models.pretrained import resolve_model

    check_options(args)
    if args.scale < 1:
        raise ValueError(f"--scale must be a positive integer, got {args.scale}")
    if args.json:
        check_json_output(args.json)
    device = select_device(args.device)
    model = resolve_model(args.model, args.scale, args.weights).to(device)
    fast = optimize(model, dtype=torch.float32)
    failures: list[tuple[Path, str]] | None = None if args.fail_fast or getattr(args, "debug", False) else []
    with use_backend(args.backend) if args.backend else nullcontext():
        rows = evaluate(fast, [args.hr], args.scale, args.lr, args.ssim_variant, args.bicubic, args.tile,
                        args.tile_overlap, args.self_ensemble, progress=True, failures=failures,
                        max_pixels=args.max_pixels)
    failed = len(failures or [])
    print(f"{model.model_name} x{args.scale} on {args.hr} ({len(rows)} images; Y channel, {args.scale}-pixel "
          f"border crop, SSIM {args.ssim_variant})")
    if rows:
        print(format_table(rows))
    print(f"{len(rows)} evaluated, {failed} failed")
    if args.json:
        result = {"model": model.model_name, "scale": args.scale, "weights": args.weights,
                  "ssim_variant": args.ssim_variant, "lr": "given" if args.lr else "matlab-bicubic",
                  "images": rows, "mean": {k: v for k, v in _mean(rows).items() if k != "image"} if rows else None,
                  "failed": [{"image": p.name, "error": why} for p, why in failures or []]}
        try:
            with atomic_path(args.json) as tmp, open(tmp, "w") as f:
                json.dump(result, f, indent=1)  # identical images give PSNR inf, written as Infinity
        except OSError as exc:
            raise OSError(f"cannot write {args.json}: {exc.strerror or exc}") from None
        print(f"wrote {args.json}")
    return 1 if failed else 0
