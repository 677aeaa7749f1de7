"""How far tiled inference is from the untiled run for a model (the README's tiling caveat).

DIN and DeFiAN pool over the whole image (AsyCA, RCAB, DAC statistics), so tiles cannot reproduce the
untiled output exactly; this prints the largest per-pixel difference (on the 0-255 scale, after
quantisation as written files are) and the PSNR between the two, for a few tile sizes.

    python scripts/tile_error.py --model defian-s --scale 2 [--weights W] [--size 128] [--tiles 32,64]

The image is scikit-image's astronaut sample (a dev dependency), resized to --size with the MATLAB
bicubic. Without --weights the model has random weights (say so when quoting the numbers).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import din_fast
from din_fast.inference.metrics import psnr, quantize
from din_fast.io.degrade import imresize
from din_fast.models.pretrained import load_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="defian-s")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--size", type=int, default=128, help="LR image side")
    parser.add_argument("--tiles", default="32,64")
    parser.add_argument("--overlap", type=int, default=16)
    args = parser.parse_args()

    from skimage import data

    torch.manual_seed(0)
    model = (load_weights(args.weights, args.model, args.scale) if args.weights
             else din_fast.create_model(args.model, args.scale)).eval()
    hr = data.astronaut().astype(np.float64)  # 512 x 512
    lr = np.clip(imresize(hr, output_shape=(args.size, args.size)) / 255, 0, 1)
    x = torch.from_numpy(lr).permute(2, 0, 1).float()
    whole = quantize(din_fast.upscale(model, x)).astype(np.float64)
    print(f"{args.model} x{args.scale} ({'weights ' + args.weights if args.weights else 'random weights'}), "
          f"{args.size}x{args.size} LR, overlap {args.overlap}")
    for tile in map(int, args.tiles.split(",")):
        tiled = quantize(din_fast.upscale(model, x, tile=tile, overlap=args.overlap)).astype(np.float64)
        diff = np.abs(tiled - whole)
        close = psnr(tiled.astype(np.uint8), whole.astype(np.uint8), y_channel=False)
        print(f"  tile {tile:4d}: max |tiled - untiled| = {diff.max():.0f}/255, mean {diff.mean():.3f}/255, "
              f"PSNR(tiled, untiled) = {close:.1f} dB")


if __name__ == "__main__":
    main()
