"""Side-by-side comparison PNG of an upscaler against bicubic: ``bicubic | din_fast | original``.

The image is taken as the original (HR); its LR is the uint8 MATLAB bicubic ``1/scale`` reduction, which
both bicubic (MATLAB ``imresize``) and the model upscale back. The caption gives each panel's Y-PSNR
against the original (border ``scale`` cropped, as in SR papers).

    python scripts/compare.py din_fast/weights/heldout/mate-ladybird.png --scale 4 -o compare_x4.png
    python scripts/compare.py photo.png --weights my_x2.safetensors --crop 400 300 256 --zoom 2 -o cmp.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import din_fast
from din_fast.train.data import read_image
from din_fast.io.degrade import imresize, round_uint8
from din_fast.inference.metrics import psnr, quantize
from din_fast.models.pretrained import resolve_model

CAPTION = 18  # pixels of caption under the panels
GAP = 4


@torch.inference_mode()
def panels(hr: np.ndarray, model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(bicubic, model, original) uint8 images of the same size and the two Y-PSNRs against the original."""
    s = model.scale
    hr = hr[:hr.shape[0] - hr.shape[0] % s, :hr.shape[1] - hr.shape[1] % s]
    lr = round_uint8(imresize(hr, 1.0 / s))
    bicubic = round_uint8(imresize(lr, s))
    ours = quantize(model(torch.from_numpy(lr).permute(2, 0, 1).float().div(255.0)[None])[0])
    return bicubic, ours, hr, psnr(bicubic, hr, crop_border=s), psnr(ours, hr, crop_border=s)


def side_by_side(hr: np.ndarray, model: torch.nn.Module, zoom: int = 1) -> Image.Image:
    """The comparison image: three panels (nearest-neighbour ``zoom``), captions under each."""
    bicubic, ours, original, p_bicubic, p_ours = panels(hr, model)
    h, w = original.shape[0] * zoom, original.shape[1] * zoom
    sheet = Image.new("RGB", (3 * w + 2 * GAP, h + CAPTION), "white")
    draw = ImageDraw.Draw(sheet)
    captions = (f"bicubic x{model.scale}: {p_bicubic:.2f} dB", f"din_fast x{model.scale}: {p_ours:.2f} dB",
                "original (Y-PSNR vs this)")
    for i, (img, caption) in enumerate(zip((bicubic, ours, original), captions)):
        panel = Image.fromarray(img).resize((w, h), Image.NEAREST)
        sheet.paste(panel, (i * (w + GAP), 0))
        draw.text((i * (w + GAP) + 3, h + 3), caption, fill="black")
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path, help="the original (HR) image")
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    parser.add_argument("--scale", type=int, default=None, help="factor (default: the weights'; packaged: 4)")
    parser.add_argument("--weights", default=None, help="din_fast weights file (default: the packaged model)")
    parser.add_argument("--crop", type=int, nargs=3, metavar=("LEFT", "TOP", "SIZE"), default=None,
                        help="compare this square of the image only")
    parser.add_argument("--zoom", type=int, default=1, help="enlarge the panels (nearest neighbour)")
    args = parser.parse_args(argv)
    if args.zoom < 1:
        parser.error(f"--zoom must be a positive integer, got {args.zoom}")
    hr = read_image(args.image)
    if args.crop is not None:
        left, top, size = args.crop
        if size < 1 or left < 0 or top < 0 or left + size > hr.shape[1] or top + size > hr.shape[0]:
            parser.error(f"--crop {left} {top} {size} is not inside {args.image} "
                         f"({hr.shape[1]}x{hr.shape[0]})")
        hr = hr[top:top + size, left:left + size]
    model = resolve_model(None, args.scale, args.weights).eval()
    if min(hr.shape[:2]) < 2 * model.scale:
        parser.error(f"{args.image}: too small to compare at x{model.scale}")
    side_by_side(hr, model, args.zoom).save(args.output, optimize=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
