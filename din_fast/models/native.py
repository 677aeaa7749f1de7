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
from safetensors.torch import load_file, save_file
from torch.nn.modules.module import (register_module_buffer_registration_hook,
                                     register_module_parameter_registration_hook)

from din_fast.io.atomic import atomic_path
from din_fast.io.safetensors_header import WeightsFileError, read_safetensors_header
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


def _parse_header(path: str, metadata: dict[str, str]) -> dict[str, Any]:
    """The din_fast header of a native weights file from its safetensors metadata (checked)."""
    if HEADER_KEY not in metadata:
        raise ValueError(f"{path} has no din_fast header: not a din_fast weights file "
                         "(for the authors' checkpoints use din_fast.from_official)")
    try:
        header = json.loads(metadata[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise WeightsFileError(f"{path}: the din_fast header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WeightsFileError(f"{path}: the din_fast header is not a JSON object")
    if header.get("format") != FORMAT:
        raise WeightsFileError(f"{path} uses din_fast weights format {header.get('format')!r}; this version "
                               f"reads {FORMAT}")
    if not (isinstance(header.get("name"), str) and type(header.get("scale")) is int
            and isinstance(header.get("config"), dict)):
        raise WeightsFileError(f"{path}: the din_fast header needs a model name (string), a scale (integer) "
                               "and a config (object)")
    return header


def read_header(path: str) -> dict[str, Any]:
    """The din_fast header of a native weights file.

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: a truncated or corrupt file, or an unreadable din_fast header.
        ValueError: a valid safetensors file without a din_fast header.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    return _parse_header(path, read_safetensors_header(path).metadata)


def _mismatches(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str:
    """One line listing (at most three of each) missing and unexpected names and differing shapes."""
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    shapes = [f"{k} is {list(found[k])} in the file, {list(expected[k])} in the model"
              for k in sorted(expected.keys() & found.keys()) if expected[k] != found[k]]
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{len(items)} {what}: {', '.join(items[:3])}{more}")
    return "; ".join(parts)


def check_against_tensors(path: str, header: dict[str, Any], tensors: dict[str, tuple[int, ...]]) -> None:
    """Raise WeightsFileError unless the model that ``header`` describes has exactly the tensors (names and
    shapes) that the file holds.

    The model is built on the meta device (no memory for its tensors), and the build is stopped as soon
    as it has registered more parameters and buffers than ``2 · len(tensors) + 64`` (a model may replace
    a few while it is built), so a header that asks for a huge model costs about as much as the file's
    own tensor count, whatever its configuration says.
    """
    from din_fast.models.registry import create_model

    limit = 2 * len(tensors) + 64
    registered = 0

    class _TooLarge(Exception):
        pass

    def count(module: torch.nn.Module, name: str, value: object) -> None:
        nonlocal registered
        registered += 1
        if registered > limit:
            raise _TooLarge

    described = f"{header['name']} x{header['scale']} with config {json.dumps(header['config'])}"
    hooks = [register_module_parameter_registration_hook(count), register_module_buffer_registration_hook(count)]
    try:
        with torch.device("meta"):
            model = create_model(header["name"], header["scale"], **header["config"])
    except _TooLarge:
        raise WeightsFileError(f"{path}: the header describes {described}, a model with more than {limit} "
                               f"tensors, but the file holds {len(tensors)}") from None
    except Exception as exc:  # whatever the model's constructor makes of a crafted config
        raise WeightsFileError(f"{path}: the header's model cannot be built: {described}: "
                               f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    finally:
        for hook in hooks:
            hook.remove()
    problems = _mismatches({k: tuple(v.shape) for k, v in model.state_dict().items()}, tensors)
    if problems:
        raise WeightsFileError(f"{path}: the tensors do not match the header's model ({described}): {problems}")


def load_model(path: str, map_location: str | torch.device = "cpu") -> SRModel:
    """Rebuild the model described by a native weights file and load its weights (strictly).

    The header's model is checked against the file's tensors before it is built (``check_against_tensors``)
    and every tensor must be finite.

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: truncated or corrupt file, unreadable header, a model that does not match the
            tensors, NaN / Inf weights; one line naming the file.
        ValueError: a valid safetensors file without a din_fast header.
    """
    from din_fast.models.registry import create_model

    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    contents = read_safetensors_header(path)
    header = _parse_header(path, contents.metadata)
    check_against_tensors(path, header, {k: shape for k, (_, shape) in contents.tensors.items()})
    try:
        state = load_file(path, device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise WeightsFileError(f"{path}: cannot read the tensors ({' '.join(str(exc).split())})") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsFileError(f"{path}: tensor {name} holds {bad} NaN/Inf value(s); the weights are broken")
    model = create_model(header["name"], header["scale"], **header["config"])
    model.load_state_dict(state)
    return model.to(map_location)
