"""Crafted and broken weights files (issue 19 items 4 and 6): refused before anything large is built, each
with one line that names the file and the problem."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.nn.modules.module import register_module_parameter_registration_hook

from din_fast import create_model, load_model
from din_fast.cli import main
from din_fast.io.safetensors_header import WeightsFileError, read_safetensors_header
from din_fast.models.native import HEADER_KEY, save_model
from din_fast.models.pretrained import load_weights

TINY_DEFIAN = dict(channels=8, rcabs=1, modules=1, reduction=4)


@pytest.fixture
def good(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "good.safetensors"
    save_model(create_model("defian-s", scale=2, **TINY_DEFIAN), str(path))
    return path


def _with_header(good: Path, target: Path, header: dict | str) -> Path:
    """``good``'s tensors with another din_fast header (a dict as JSON, or raw text)."""
    data = good.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])
    meta["__metadata__"] = {HEADER_KEY: header if isinstance(header, str) else json.dumps(header)}
    raw = json.dumps(meta).encode()
    target.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    return target


def _din_header(good: Path) -> dict:
    with open(good, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(json.loads(f.read(n))["__metadata__"][HEADER_KEY])


def test_a_header_asking_for_200000_modules_is_refused_before_building_them(tmp_path, good):
    header = _din_header(good)
    crafted = _with_header(good, tmp_path / "crafted.safetensors",
                           {**header, "config": {**header["config"], "modules": 200_000}})
    assert crafted.stat().st_size < 100_000
    registered = 0

    def count(module, name, param):
        nonlocal registered
        registered += 1

    hook = register_module_parameter_registration_hook(count)
    try:
        with pytest.raises(WeightsFileError) as info:
            load_weights(crafted)
    finally:
        hook.remove()
    message = str(info.value)
    assert message.startswith(f"{crafted}: ") and "\n" not in message
    assert '"modules": 200000' in message and "the file holds 31" in message, message
    # the check stops the (meta-device) build after about twice the file's tensors; the real model is
    # never built: a built one would have registered > 200000 parameters
    assert registered <= 2 * 31 + 64 + 1, registered


@pytest.mark.parametrize("case, expected", [
    ("truncated", "truncated safetensors file (the tensors need"),
    ("truncated_header", "truncated safetensors file (the header needs"),
    ("corrupt_json", "corrupt safetensors file (its header is not JSON"),
    ("metadata_json", "the din_fast header is not valid JSON"),
    ("mismatch", "the tensors do not match the header's model"),
    ("missing_tensor", "1 missing: "),
    ("nan", "holds 1 NaN/Inf value(s); the weights are broken"),
    ("bad_config", "the header's model cannot be built"),
])
def test_broken_weights_give_one_line_naming_the_file(tmp_path, good, case, expected):
    bad = tmp_path / f"{case}.safetensors"
    data = good.read_bytes()
    header = _din_header(good)
    if case == "truncated":
        bad.write_bytes(data[:len(data) // 2])
    elif case == "truncated_header":
        bad.write_bytes(data[:40])
    elif case == "corrupt_json":
        bad.write_bytes(data[:8] + b"{" + b"\xff" * (len(data) - 9))
    elif case == "metadata_json":
        _with_header(good, bad, "{not json")
    elif case == "mismatch":
        _with_header(good, bad, {**header, "config": {**header["config"], "channels": 12}})
    elif case in ("missing_tensor", "nan"):
        state = create_model("defian-s", scale=2, **TINY_DEFIAN).state_dict()
        if case == "nan":
            state["input.weight"].view(-1)[3] = float("nan")
        else:
            del state["input.weight"]
        save_file(state, str(bad), metadata={HEADER_KEY: json.dumps(header)})
    elif case == "bad_config":
        _with_header(good, bad, {**header, "config": {**header["config"], "channels": "eight"}})
    with pytest.raises(WeightsFileError) as info:
        load_weights(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: ") and expected in message, message
    assert "\n" not in message and len(message) < 600, message
    assert "for an official checkpoint" not in message


def test_cli_reports_broken_weights_in_one_line(tmp_path, good, capsys):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(good.read_bytes()[:-100])
    (tmp_path / "in.png").write_bytes((Path(__file__).parents[1] / "din_fast/assets/sample.png").read_bytes())
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"), "--weights", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"din-fast upscale: error: {bad}: truncated safetensors file (the tensors need "
                   f"{bad.stat().st_size + 100} bytes, the file has {bad.stat().st_size})")


def test_good_file_still_loads_and_the_header_reader_agrees_with_safetensors(good):
    header = read_safetensors_header(good)
    model = load_model(str(good))
    state = model.state_dict()
    assert {k: shape for k, (_, shape) in header.tensors.items()} == {k: tuple(v.shape) for k, v in state.items()}
    assert HEADER_KEY in header.metadata
