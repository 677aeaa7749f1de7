"""Finding and loading weights: the packaged default model, din_fast's native files and the authors'
checkpoints (detected from the file's contents, not its name).

- Native: a safetensors file with a ``din_fast`` header (``din_fast.models.native``); the header names
  the model and scale, so nothing else is needed.
- Official: a PyTorch checkpoint (``torch.load``-able, optionally ``{'state_dict': ...}`` and DataParallel
  ``module.`` prefixes) or a safetensors file without a din_fast header; the file does not say which
  model it is for, so the model name and scale must be given (``from_official`` checks every key/shape).
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import load_file

from din_fast.io.safetensors_header import looks_like_safetensors, read_safetensors_header
from din_fast.models.blocks import SRModel
from din_fast.models.native import HEADER_KEY, load_model
from din_fast.models.official import from_official

__all__ = ["DEFAULT_SCALE", "WEIGHTS_DIR", "default_weights", "load_weights", "resolve_model"]

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
# the scale ``din-fast upscale`` uses when neither --scale nor --weights says
DEFAULT_SCALE = 4


def default_weights(scale: int) -> Path:
    """Path of the packaged default weights for ``scale`` (``din_fast/weights/default_x{scale}.safetensors``).

    Raises:
        FileNotFoundError: naming the missing file and how to pass weights instead.
    """
    path = WEIGHTS_DIR / f"default_x{scale}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no packaged default weights for x{scale}: {path} is missing; pass --weights "
                                "FILE (a din_fast .safetensors file, or an official checkpoint with --model and "
                                "--scale)")
    return path


def load_weights(path: str | os.PathLike, model: str | None = None, scale: int | None = None) -> SRModel:
    """Load a native or official weights file (detected), checking it against ``model`` / ``scale``.

    Args:
        path: the weights file.
        model: registered model name; required for official checkpoints, checked for native files.
        scale: upscaling factor; required for official checkpoints, checked for native files.

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: a truncated or corrupt safetensors file, a native file whose header does not match
            its tensors or whose weights are not finite (``din_fast.models.native.load_model``).
        ValueError: a native file for another model or scale; an official checkpoint without model and
            scale; ``CheckpointError`` (a ValueError) when an official checkpoint does not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    # a file that starts like safetensors must be a valid one: a truncated or corrupt file is reported as
    # such, not mistaken for another format
    metadata = read_safetensors_header(path).metadata if looks_like_safetensors(path) else None
    if metadata is not None and HEADER_KEY in metadata:
        loaded = load_model(str(path))
        if model is not None and model != loaded.model_name:
            raise ValueError(f"{path} holds weights for {loaded.model_name} x{loaded.scale}, not {model}")
        if scale is not None and scale != loaded.scale:
            raise ValueError(f"{path} holds weights for {loaded.model_name} x{loaded.scale}, not x{scale}")
        return loaded
    if model is None or scale is None:
        raise ValueError(f"{path} is not a din_fast weights file; for an official checkpoint pass the model "
                         "and scale it was trained for (--model NAME --scale S)")
    checkpoint = load_file(str(path)) if metadata is not None else path
    return from_official(model, checkpoint, scale)


def resolve_model(model: str | None = None, scale: int | None = None, weights: str | os.PathLike | None = None
                  ) -> SRModel:
    """The model the command line runs: ``weights`` if given (``load_weights``), else the packaged default
    for ``scale`` (``DEFAULT_SCALE`` if None), which must be the requested ``model`` if one is named."""
    if weights is not None:
        return load_weights(weights, model, scale)
    loaded = load_model(str(default_weights(DEFAULT_SCALE if scale is None else scale)))
    if model is not None and model != loaded.model_name:
        raise ValueError(f"no packaged weights for {model} (the packaged default model is "
                         f"{loaded.model_name}); pass --weights FILE")
    return loaded
