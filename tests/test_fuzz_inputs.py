"""Random and crafted files into the readers (issue 19): whatever the bytes, ``read_image`` raises only its
documented exceptions (FileNotFoundError, ValueError and its subclass ImageTooLargeError) and
``load_model`` only FileNotFoundError / ValueError (WeightsFileError and its parent), each naming the file.
Example counts are modest: this runs in CI."""

from __future__ import annotations

import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from din_fast import create_model, load_model
from din_fast.io.images import read_image
from din_fast.models.native import HEADER_KEY, save_model

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png_bytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _read_and_check(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multi-frame or odd files may warn; only the errors matter here
        try:
            read_image(path, max_pixels=1_000_000)
        except (FileNotFoundError, ValueError) as exc:
            assert str(path) in str(exc), str(exc)
            assert "\n" not in str(exc)


@SETTINGS
@given(data=st.binary(max_size=512))
def test_random_bytes(tmp_path, data):
    path = tmp_path / "random.png"
    path.write_bytes(data)
    _read_and_check(path)


@SETTINGS
@given(cut=st.integers(0, len(PNG)), flips=st.lists(st.tuples(st.integers(0, len(PNG) - 1), st.integers(1, 255)),
                                                    max_size=4))
def test_truncated_and_damaged_png(tmp_path, cut, flips):
    data = bytearray(PNG)
    for position, xor in flips:
        data[position] ^= xor
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(data[:cut]))
    _read_and_check(path)


@SETTINGS
@given(width=st.integers(0, 2**32 - 1), height=st.integers(0, 2**32 - 1), depth=st.sampled_from([1, 2, 4, 8, 16, 3]),
       colour=st.sampled_from([0, 2, 3, 4, 6, 1]), interlace=st.integers(0, 2),
       body=st.binary(max_size=64))
def test_random_png_headers(tmp_path, width, height, depth, colour, interlace, body):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    path = tmp_path / "header.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(body))
                     + _chunk(b"IEND", b""))
    _read_and_check(path)


def _weights(tmp_path: Path) -> bytes:
    path = tmp_path / "tiny.safetensors"
    torch.manual_seed(0)
    save_model(create_model("defian-s", scale=2, channels=8, rcabs=1, modules=1, reduction=4), str(path))
    return path.read_bytes()


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=12)


@SETTINGS
@given(header=st.fixed_dictionaries({}, optional={
    "format": st.one_of(st.just(1), _JSON), "name": st.one_of(st.sampled_from(["defian-s", "din", "cirn"]), _JSON),
    "scale": st.one_of(st.sampled_from([2, 3, 4]), _JSON),
    "config": st.one_of(st.fixed_dictionaries({}, optional={
        "channels": st.integers(-3, 10**6), "rcabs": st.integers(-3, 10**6), "modules": st.integers(-3, 10**6),
        "reduction": st.integers(-3, 100)}), _JSON)}),
    raw=st.booleans(), junk=st.text(max_size=30))
def test_random_weights_headers(tmp_path, header, raw, junk):
    good = _weights(tmp_path)
    (n,) = struct.unpack("<Q", good[:8])
    meta = json.loads(good[8:8 + n])
    meta["__metadata__"] = {HEADER_KEY: junk if raw else json.dumps(header)}
    text = json.dumps(meta).encode()
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + good[8 + n:])
    try:
        load_model(str(path))
    except ValueError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc), str(exc)


@SETTINGS
@given(data=st.binary(max_size=256), length=st.integers(0, 2**64 - 1), keep_length=st.booleans())
def test_random_weights_bytes(tmp_path, data, length, keep_length):
    path = tmp_path / "random.safetensors"
    path.write_bytes((data[:8] if keep_length else struct.pack("<Q", length)) + b"{" + data)
    try:
        load_model(str(path))
    except ValueError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc), str(exc)
