"""Loading the authors' checkpoints (official key names and layouts) into din_fast models."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from din_fast.models.blocks import SRModel
from din_fast.models.registry import create_model


class CheckpointError(ValueError):
    """An official checkpoint does not match the model: a missing, unexpected or mis-shaped key."""


def read_state_dict(checkpoint: str | os.PathLike | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of an official checkpoint: a path (loaded with ``weights_only=True``) or a mapping;
    unwraps ``{'state_dict': …}`` and strips DataParallel's ``module.`` prefix."""
    if isinstance(checkpoint, (str, os.PathLike)):
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        try:
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip or weights_only errors all mean "not a usable checkpoint"
            raise CheckpointError(f"cannot read {os.fspath(checkpoint)} as a PyTorch checkpoint: {exc}") from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"expected a state dict or a {{'state_dict': ...}} checkpoint, got "
                              f"{type(checkpoint).__name__}")
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        checkpoint = checkpoint["state_dict"]
    state = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


def convert_official(model: SRModel, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert an official state dict (already unwrapped) to ``model``'s keys; CheckpointError on any
    missing, unexpected or mis-shaped key, naming it."""
    entries = model.official_key_map()
    expected = {k for _, keys, _ in entries for k in keys}
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): "
                         f"{', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
        raise CheckpointError(f"checkpoint does not match {model.model_name} x{model.scale}: " + "; ".join(parts))
    own = model.state_dict()
    out = {}
    for ours, keys, shape in entries:
        for k in keys:
            if tuple(state[k].shape) != shape:
                raise CheckpointError(f"checkpoint key {k!r} has shape {tuple(state[k].shape)}, expected {shape} "
                                      f"for {model.model_name} x{model.scale}")
        value = state[keys[0]] if len(keys) == 1 else torch.stack([state[k] for k in keys])
        out[ours] = value.reshape(own[ours].shape).to(own[ours].dtype)
    return out


def from_official(name: str, checkpoint: str | os.PathLike | Mapping[str, Any], scale: int = 4,
                  **overrides: Any) -> SRModel:
    """Build model ``name`` and load an official-format checkpoint into it.

    Accepts a path or a state dict, bare or wrapped in ``{'state_dict': …}``, with or without the
    ``module.`` prefix; DIN's ``WRDB{m}_{d}`` / ``AsyCA{m}_{d}`` names, DeFiAN's ``.0.`` nesting and its
    nine Hessian convs per module are mapped onto din_fast's layout. Any mismatch is a CheckpointError.
    """
    model = create_model(name, scale, **overrides)
    model.load_state_dict(convert_official(model, read_state_dict(checkpoint)))
    return model
