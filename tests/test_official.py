"""Loading official-format checkpoints: a literal re-implementation of the authors' graphs
(tests/official_literal.py) provides the official keys and the expected outputs."""

import pytest
import torch

from din_fast import CheckpointError, from_official
from official_literal import LitDeFiAN, LitDIN


def _perturb(module):
    """Random, non-analytic weights everywhere (the Hessian convs included)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    return module


def _din_case(name, scale):
    lit = _perturb(LitDIN(8, 4, scale, enhanced=(name == "din"))).double().eval()
    return lit, dict(num_features=8, growth_rate=4)


def _defian_case(name, scale):
    return _perturb(LitDeFiAN(16, 2, 2, scale)).double().eval(), dict(channels=16, rcabs=2, modules=2)


CASES = [("din", 2, _din_case), ("din", 4, _din_case), ("din", 8, _din_case), ("din-ijcai", 3, _din_case),
         ("defian-s", 2, _defian_case), ("defian-s", 3, _defian_case), ("defian-l", 4, _defian_case)]


@pytest.mark.parametrize("name,scale,case", CASES)
@pytest.mark.parametrize("wrapping", ["bare", "dataparallel-checkpoint"])
def test_official_checkpoint_reproduces_official_outputs(name, scale, case, wrapping):
    lit, overrides = case(name, scale)
    state = lit.state_dict()
    if wrapping == "dataparallel-checkpoint":
        state = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    model = from_official(name, state, scale=scale, **overrides).double().eval()
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), lit(x), rtol=1e-10, atol=1e-10)


def test_checkpoint_file_loads_with_weights_only(tmp_path):
    lit, overrides = _defian_case("defian-s", 2)
    path = tmp_path / "DeFiAN_S_x2.pth"
    torch.save({"epoch": 1, "state_dict": lit.state_dict()}, path)
    model = from_official("defian-s", str(path), scale=2, **overrides).double().eval()
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), lit(x), rtol=1e-10, atol=1e-10)


@pytest.fixture(params=["din", "defian-s"])
def official_state(request):
    name = request.param
    lit, overrides = (_din_case if name.startswith("din") else _defian_case)(name, 2)
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
    lit, overrides = _din_case("din", 2)
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
