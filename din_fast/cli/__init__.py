"""The ``din-fast`` command line: ``main`` (the console script) and one module per command that needs
more than a few lines (``upscale``, ``evaluate``)."""

from din_fast.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
