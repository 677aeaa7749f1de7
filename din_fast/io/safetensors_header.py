"""The header of a safetensors file, read and checked without loading a tensor: the one reader of it in
din_fast (native weights, official checkpoints in safetensors, the packaged defaults).

Format (huggingface/safetensors): an 8-byte little-endian header length ``n``, ``n`` bytes of JSON, then
the data buffer. The JSON maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets into the buffer) and ``"__metadata__"`` to a ``{str: str}`` dict. A valid file's tensors tile the
buffer exactly: sorted by offset, each begins where the previous ends, ``end − begin = numel · itemsize``,
and the last ends at the end of the file. Every size is checked against the file's length before
anything is read or allocated, so a few bytes cannot make us read or allocate gigabytes.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass

__all__ = ["MAX_HEADER_BYTES", "SafetensorsHeader", "WeightsFileError", "looks_like_safetensors",
           "read_safetensors_header"]

# the safetensors library's own limit on the JSON header
MAX_HEADER_BYTES = 100_000_000
_ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


class WeightsFileError(ValueError):
    """A weights file that cannot be used: truncated, corrupt, or not describing the tensors it holds.
    The message is one line and names the file."""


@dataclass(frozen=True)
class SafetensorsHeader:
    """What a safetensors file declares: ``tensors`` name → (dtype name, shape), and its metadata."""

    tensors: dict[str, tuple[str, tuple[int, ...]]]
    metadata: dict[str, str]


def looks_like_safetensors(path: str | os.PathLike) -> bool:
    """Whether the file starts as a safetensors file does (a length, then ``{``); says nothing about the
    rest. PyTorch checkpoints start with ``PK`` (zip) or a pickle opcode, never like this."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] >= 2


def read_safetensors_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Read and check the header of a safetensors file (module doc).

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: truncated, corrupt or inconsistent, naming ``path`` and what is wrong.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightsFileError(f"{path}: truncated safetensors file ({size} bytes, less than its 8-byte "
                                   "header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise WeightsFileError(f"{path}: corrupt safetensors file (header length {n} bytes is above the "
                                   f"limit of {MAX_HEADER_BYTES})")
        if 8 + n > size:
            raise WeightsFileError(f"{path}: truncated safetensors file (the header needs {8 + n} bytes, the "
                                   f"file has {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsFileError(f"{path}: corrupt safetensors file (its header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise WeightsFileError(f"{path}: corrupt safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsFileError(f"{path}: corrupt safetensors file (__metadata__ is not a map of strings)")
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans = []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            valid = (dtype in _ITEM_BYTES and isinstance(shape, list)
                     and all(type(d) is int and d >= 0 for d in shape)
                     and type(begin) is int and type(end) is int and 0 <= begin <= end)
        except (TypeError, KeyError, ValueError):
            valid = False
        if not valid:
            raise WeightsFileError(f"{path}: corrupt safetensors file (bad entry for tensor {name!r})")
        if end - begin != math.prod(shape) * _ITEM_BYTES[dtype]:
            raise WeightsFileError(f"{path}: corrupt safetensors file (tensor {name!r} of shape {shape} "
                                   f"{dtype} has {end - begin} bytes of data)")
        tensors[name] = (dtype, tuple(shape))
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise WeightsFileError(f"{path}: corrupt safetensors file (tensor {name!r}'s data does not follow "
                                   "the previous tensor's)")
        position = end
    if 8 + n + position != size:
        what = "truncated" if 8 + n + position > size else "corrupt"
        raise WeightsFileError(f"{path}: {what} safetensors file (the tensors need {8 + n + position} bytes, "
                               f"the file has {size})")
    return SafetensorsHeader(tensors, metadata)
