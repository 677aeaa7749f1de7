"""din_fast's own weights format: a safetensors file whose metadata describes the model.

The header key ``din_fast`` holds JSON ``{"format": 1, "name", "scale", "config", "version"}``, so the
file alone rebuilds the model: ``load_model(path)`` = ``create_model(name, scale, **config)`` + weights.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from din_fast.io.atomic import atomic_path
from din_fast.models.blocks import SRModel

HEADER_KEY = "din_fast"
FORMAT = 1


def save_model(model: SRModel, path: str, extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s weights and description to ``path`` atomically (temporary file + rename).

    ``extra`` (JSON-serialisable) is stored in the header too, e.g. training provenance.
    """
    from din_fast import __version__

    header = {"format": FORMAT, "name": model.model_name, "scale": model.scale, "config": model.config,
              "version": __version__, **({"extra": extra} if extra else {})}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={HEADER_KEY: json.dumps(header)})


def read_header(path: str) -> dict[str, Any]:
    """The din_fast header of a native weights file; ValueError if ``path`` is not one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a safetensors file ({exc})") from None
    if HEADER_KEY not in metadata:
        raise ValueError(f"{path} has no din_fast header: not a din_fast weights file "
                         "(for the authors' checkpoints use din_fast.from_official)")
    header = json.loads(metadata[HEADER_KEY])
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} uses din_fast weights format {header.get('format')!r}; this version reads {FORMAT}")
    return header


def load_model(path: str, map_location: str | torch.device = "cpu") -> SRModel:
    """Rebuild the model described by a native weights file and load its weights (strictly)."""
    from din_fast.models.registry import create_model

    header = read_header(path)
    model = create_model(header["name"], header["scale"], **header["config"])
    state = load_file(path, device=str(map_location))
    missing, unexpected = model.state_dict().keys() - state.keys(), state.keys() - model.state_dict().keys()
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match {header['name']} x{header['scale']}: "
                         f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(state)
    return model.to(map_location)
