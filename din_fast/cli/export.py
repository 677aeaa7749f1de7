"""``din-fast export``: write a model as ONNX or a torch.export program (``din_fast.export``)."""

from __future__ import annotations

import argparse

import torch

from din_fast.deploy.exporter import FORMATS, export, format_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``din-fast export``."""
    parser.add_argument("-o", "--output", required=True, help="output file: NAME.onnx or NAME.pt2")
    parser.add_argument("--model", default=None, help="registered model name (default: the packaged model)")
    parser.add_argument("--scale", type=int, default=None,
                        help="upscaling factor (default: the weights' scale; 4 for the packaged model)")
    parser.add_argument("--weights", default=None,
                        help="din_fast .safetensors file or an official checkpoint (needs --model, --scale)")
    parser.add_argument("--random-weights", action="store_true",
                        help="export --model at --scale with random weights (to benchmark a runtime)")
    parser.add_argument("--format", default=None, choices=FORMATS, help="default: from the output's suffix")
    parser.add_argument("--size", type=int, default=32, help="side of the square example traced (LR pixels)")
    parser.add_argument("--static", action="store_true",
                        help="fix batch 1 and the example's size instead of dynamic batch, height, width")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch.onnx's)")


def run_cli(args: argparse.Namespace) -> int:
    """``din-fast export``: resolve the model as ``din-fast upscale`` does (or build it with random weights),
    then :func:`export` it."""
    from din_fast.models.registry import create_model
    from din_fast.models.pretrained import resolve_model

    fmt = format_of(args.output, args.format)
    if args.random_weights:
        if args.model is None or args.weights is not None:
            raise ValueError("--random-weights needs --model (and no --weights)")
        model = create_model(args.model, args.scale)
    else:
        model = resolve_model(args.model, args.scale, args.weights)
    if args.size < 2:
        raise ValueError(f"--size must be at least 2, got {args.size}")
    param = next(model.parameters())
    example = torch.rand(1, 3, args.size, args.size, dtype=param.dtype)
    path = export(model, args.output, fmt, example=example, dynamic=not args.static, opset=args.opset)
    shape = "1x3x{0}x{0}".format(args.size) if args.static else "dynamic batch, height and width"
    print(f"exported {model.model_name} x{model.scale} to {path} ({fmt}, {shape})")
    return 0
