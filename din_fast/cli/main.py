"""The ``din-fast`` command line (also ``python -m din_fast``).

Errors are one line on stderr (``--debug`` shows the traceback); warnings too. SIGTERM is handled like
Ctrl-C (SIGINT): the exception it raises unwinds the command, so temporary files are deleted
(``din_fast.io.atomic``) before the process exits with 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator


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


#: (command, help, module whose ``add_arguments`` adds its arguments, handler).
_COMMANDS = (
    ("upscale", "super-resolve image files and folders", "din_fast.cli.upscale", _upscale),
    ("eval", "PSNR / SSIM (Y channel) of a model on a folder of HR images", "din_fast.cli.evaluate", _eval),
    ("info", "versions, the compiled extension and the implementation of each op", None, _info),
    ("bench", "time whole models per implementation and print a table", "din_fast.bench", _bench),
    ("export", "write a model as ONNX (standard operators) or a torch.export .pt2", "din_fast.cli.export", _export),
    ("train", "train a model on an image folder (one process, or many with torchrun)", "din_fast.train.trainer",
     _train),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The din-fast parser. With ``command`` only that subcommand gets its arguments: the others' modules
    import torch, which ``din-fast --help`` / ``--version`` must not (None: every subcommand's)."""
    from din_fast import __version__

    parser = argparse.ArgumentParser(prog="din-fast", description="Fast DIN / DeFiAN super-resolution.")
    parser.add_argument("--version", action="version", version=f"din-fast {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, module, handler in _COMMANDS:
        sub_parser = sub.add_parser(name, help=help_text)
        if module is not None and command in (None, name):
            importlib.import_module(module).add_arguments(sub_parser)
        sub_parser.set_defaults(func=handler)
    return parser


class Terminated(BaseException):
    """Raised by the SIGTERM handler; a BaseException like KeyboardInterrupt, so no ``except Exception``
    swallows it and every cleanup on the way out runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` while the command runs (the handler is restored afterwards); only the
    main thread can install handlers, so elsewhere (a library caller's thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Warnings printed as ``din-fast COMMAND: warning: ...`` instead of Python's two-line format."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"din-fast {command}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {name for name, *_ in _COMMANDS}
    parser = build_parser(next((a for a in argv if a in commands), ""))  # "": no subcommand's arguments
    args = parser.parse_args(argv)
    from din_fast import allocator

    allocator.keep_freed_memory()  # large feature maps are reused instead of page-faulted again
    try:
        with _terminate_like_interrupt(), _one_line_warnings(args.command):
            return args.func(args)
    except KeyboardInterrupt:
        print("din-fast: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated:
        print("din-fast: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as exc:  # one clear line for users; --debug shows the traceback
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever the exception holds
        print(f"din-fast {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
