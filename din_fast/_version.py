"""din_fast's version: the one place it is written (pyproject.toml reads it; imports nothing)."""

__version__ = "0.1.0"
