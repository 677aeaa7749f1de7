"""The ``din-fast`` command line (also ``python -m din_fast``)."""

from __future__ import annotations

import argparse
import sys


def _info(args: argparse.Namespace) -> int:
    from din_fast.info import report

    print(report())
    return 0


def _bench(args: argparse.Namespace) -> int:
    from din_fast.bench import run_cli

    return run_cli(args)


def _train(args: argparse.Namespace) -> int:
    from din_fast.train.trainer import run_cli

    return run_cli(args)


def _upscale(args: argparse.Namespace) -> int:
    from din_fast.cli.upscale import run_cli

    return run_cli(args)


def _eval(args: argparse.Namespace) -> int:
    from din_fast.cli.evaluate import run_cli

    return run_cli(args)


def _export(args: argparse.Namespace) -> int:
    from din_fast.cli.export import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="din-fast", description="Fast DIN / DeFiAN super-resolution.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    from din_fast.cli.evaluate import add_arguments as add_eval_arguments
    from din_fast.cli.upscale import add_arguments as add_upscale_arguments

    upscale = sub.add_parser("upscale", help="super-resolve image files and folders")
    add_upscale_arguments(upscale)
    upscale.set_defaults(func=_upscale)
    evaluate = sub.add_parser("eval", help="PSNR / SSIM (Y channel) of a model on a folder of HR images")
    add_eval_arguments(evaluate)
    evaluate.set_defaults(func=_eval)
    info = sub.add_parser("info", help="versions, the compiled extension and the implementation of each op")
    info.set_defaults(func=_info)
    from din_fast.bench import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="time whole models per implementation and print a table")
    add_bench_arguments(bench)
    bench.set_defaults(func=_bench)
    from din_fast.cli.export import add_arguments as add_export_arguments

    export = sub.add_parser("export", help="write a model as ONNX (standard operators) or a torch.export .pt2")
    add_export_arguments(export)
    export.set_defaults(func=_export)
    from din_fast.train.trainer import add_arguments as add_train_arguments

    train = sub.add_parser("train", help="train a model on an image folder (one process, or many with torchrun)")
    add_train_arguments(train)
    train.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from din_fast import allocator

    allocator.keep_freed_memory()  # large feature maps are reused instead of page-faulted again
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("din-fast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for users; --debug shows the traceback
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever the exception holds
        print(f"din-fast {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
