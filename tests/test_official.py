"""Loading official-format checkpoints: a literal re-implementation of the authors' graphs
(tests/official_literal.py) provides the official keys and the expected outputs."""

import pytest
import torch

from din_fast import CheckpointError, from_official
from official_literal import official_case


CASES = [("din", 2), ("din", 4), ("din", 8), ("din-ijcai", 3), ("defian-s", 2), ("defian-s", 3), ("defian-l", 4)]


@pytest.mark.parametrize("name,scale", CASES)
@pytest.mark.parametrize("wrapping", ["bare", "dataparallel-checkpoint"])
def test_official_checkpoint_reproduces_official_outputs(name, scale, wrapping):
    lit, overrides = official_case(name, scale)
    state = lit.state_dict()
    if wrapping == "dataparallel-checkpoint":
        state = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    model = from_official(name, state, scale=scale, **overrides).double().eval()
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), lit(x), rtol=1e-10, atol=1e-10)


def test_checkpoint_file_loads_with_weights_only(tmp_path):
    lit, overrides = official_case("defian-s", 2)
    path = tmp_path / "DeFiAN_S_x2.pth"
    torch.save({"epoch": 1, "state_dict": lit.state_dict()}, path)
    model = from_official("defian-s", str(path), scale=2, **overrides).double().eval()
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), lit(x), rtol=1e-10, atol=1e-10)


@pytest.fixture(params=["din", "defian-s"])
def official_state(request):
    name = request.param
    lit, overrides = official_case(name, 2)
    return name, dict(lit.state_dict()), overrides


def test_missing_key_is_named(official_state):
    name, state, overrides = official_state
    key = sorted(state)[7]
    del state[key]
    with pytest.raises(CheckpointError, match=f"1 missing key\\(s\\): {key}"):
        from_official(name, state, scale=2, **overrides)


def test_unexpected_key_is_named(official_state):
    name, state, overrides = official_state
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="1 unexpected key\\(s\\): extra.weight"):
        from_official(name, state, scale=2, **overrides)


def test_wrong_shape_is_named(official_state):
    name, state, overrides = official_state
    key = "WRDB2_3.conv2_1.weight" if name == "din" else "body.1.hessian5.0.grad_xy.weight"
    state[key] = state[key][:-1]
    with pytest.raises(CheckpointError, match=f"key '{key}' has shape"):
        from_official(name, state, scale=2, **overrides)


def test_wrong_scale_checkpoint_is_rejected():
    lit, overrides = official_case("din", 2)
    with pytest.raises(CheckpointError, match="missing key"):
        from_official("din", lit.state_dict(), scale=4, **overrides)


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        from_official("din", str(bad), scale=2)
    with pytest.raises(FileNotFoundError):
        from_official("din", str(tmp_path / "none.pth"), scale=2)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        from_official("din", [1, 2], scale=2)
