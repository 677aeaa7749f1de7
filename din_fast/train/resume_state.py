"""The resume state of a training run (``RUN_DIR/state.pt``): written with ``torch.save``, read back with
``torch.load(weights_only=True)`` only, so a planted or shared run folder cannot run code on ``--resume``.

The file holds plain data: tensors, numbers, strings, booleans, None, lists, tuples and dicts (and the
``collections.Counter`` of MultiStepLR's milestones, which the weights-only unpickler accepts). The random
number generators' states are stored as tensors:

- ``rng["torch"]``: ``torch.get_rng_state()`` (uint8), ``rng["cuda"]`` likewise on a GPU;
- ``rng["numpy"]``: the MT19937 key as an int64 tensor (624 words) plus ``pos``, ``has_gauss`` and
  ``cached_gaussian`` of ``np.random.get_state()``;
- ``rng["python"]``: ``random.getstate()``'s 625 words as an int64 tensor plus its version number.

Format 1 (din_fast before this module) pickled numpy arrays and cannot be read without running the
general unpickler; it is refused with a message saying so.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from din_fast.io.atomic import atomic_path

__all__ = ["STATE_FORMAT", "StateError", "load_state", "rng_state", "save_state", "set_rng_state"]

STATE_FORMAT = 2
#: keys every resume state has (din_fast.train writes them)
REQUIRED_KEYS = ("format", "step", "model_identity", "model", "optimizer", "scheduler", "scaler", "rng",
                 "next_sample", "global_batch", "best_psnr", "elapsed_s")


class StateError(ValueError):
    """A resume-state file that cannot be used (unsafe, corrupt, or of another format)."""


def rng_state(device: torch.device) -> dict[str, Any]:
    """The torch, numpy, Python (and CUDA on a GPU) random states as tensors and numbers."""
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, words, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "words": torch.tensor(words, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore the states ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(w) for w in p["words"].tolist()), p["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (plain data and tensors only) atomically and durably (fsync before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)  # a file object: torch.save would name its zip records after the temp path
        f.flush()
        os.fsync(f.fileno())


def _unsafe_detail(exc: BaseException) -> str | None:
    """The one informative line of torch's weights-only refusal (e.g. ``Unsupported global: GLOBAL
    io.open``, ``Unsupported operand 110``) without its advice to load the file unsafely; None for any
    other unpickling error."""
    match = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global.*)?$", str(exc), re.M)
    return match.group(1).strip() if match else None


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a resume state with ``torch.load(weights_only=True)`` and check its format and keys.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StateError: the file holds anything but plain data and tensors (nothing in it is run), is not a
            torch file or is truncated, is of another format, or lacks a key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unsafe_detail(exc)
        if detail is None or "global" not in detail.lower():  # no reference to a function or class: garbage
            detail = detail or " ".join(str(exc).split())[:200]
            raise StateError(f"{path}: not a readable resume state (corrupt or truncated: {detail})") from None
        raise StateError(f"{path}: refused to load: it holds Python objects other than tensors and plain data "
                         f"({detail}); resume states are only read with torch.load(weights_only=True) "
                         f"(a state.pt of an older din_fast, format 1, cannot be resumed)") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
        raise StateError(f"{path}: not a readable resume state (corrupt or truncated: "
                         f"{' '.join(str(exc).split())[:200]})") from None
    if not isinstance(state, dict):
        raise StateError(f"{path}: not a din_fast resume state (a {type(state).__name__}, not a dict)")
    if state.get("format") != STATE_FORMAT:
        raise StateError(f"{path}: resume-state format {state.get('format')!r}; this version reads {STATE_FORMAT}")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise StateError(f"{path}: not a complete din_fast resume state (missing {', '.join(missing)})")
    return state
