"""``din_fast.integrations.spandrel``: official-format and din_fast checkpoints of every model and scale,
saved to files and loaded through ``spandrel.ModelLoader``, give din_fast's model with the right sizes and
the outputs of ``from_official`` / the saved model; other architectures' checkpoints are not claimed.

Needs spandrel (``pip install 'din_fast[spandrel]'``); skipped without it."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from din_fast import create_model, from_official, list_models
from din_fast.models.registry import model_entry
from official_literal import official_case
from spandrel_import import import_spandrel
from tiny_models import TINY

spandrel = import_spandrel()
from din_fast.integrations.spandrel import ARCHITECTURES, install  # noqa: E402  (needs spandrel)

# Depths above 1 on top of the tiny sizes, so that a size counted from the wrong key shows.
DEPTHS = {"din": dict(rdbs=2), "defian": dict(modules=2), "cirn": dict(groups=2), "drfn": dict(blocks=2, block_convs=2)}
# What a state dict cannot tell apart (module docstring): the loaded model's registry name.
SAME_LAYERS = {"din-dehaze": "din-deblur", "defian-l": "defian-s"}
OURS = {arch.id for arch in ARCHITECTURES}


@pytest.fixture(scope="module")
def loader():
    """A ModelLoader over spandrel's own architectures plus ours (a copy: the main registry stays as is)."""
    registry = spandrel.MAIN_REGISTRY.copy()
    install(registry)
    return spandrel.ModelLoader(registry=registry)


def _family(name: str) -> str:
    return next(f for f in DEPTHS if name.startswith(f))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Equal state dicts, key for key and bit for bit (with equal class and config: the same function)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


NATIVE_CASES = [(name, scale) for name in list_models() for scale in model_entry(name).scales]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("name,scale", NATIVE_CASES)
def test_din_fast_weights_load_as_the_model(name, scale, suffix, loader, tmp_path):
    overrides = {**TINY[name][1], **DEPTHS[_family(name)]}
    torch.manual_seed(3)
    model = create_model(name, scale, **overrides).eval()
    path = tmp_path / f"{name}_x{scale}{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        model.save(str(path))  # din_fast's native file (spandrel reads its tensors, not its header)
    descriptor = loader.load_from_file(path)
    expected_name = SAME_LAYERS.get(name, name)
    assert descriptor.architecture.id in OURS
    assert type(descriptor.model) is type(model) and descriptor.model.model_name == expected_name
    assert descriptor.model.config == create_model(expected_name, scale, **overrides).config
    assert (descriptor.scale, descriptor.input_channels, descriptor.output_channels) == (scale, 3, 3)
    assert descriptor.purpose == ("SR" if scale > 1 else "Restoration")
    assert descriptor.tags[0] == expected_name
    _same_weights(descriptor.model, model)
    if scale == TINY[name][0]:  # one run per model (same class, config and weights: the same function)
        x = torch.rand(1, 3, 7, 6)
        with torch.no_grad():
            assert torch.equal(descriptor.model.eval()(x), model(x))
            assert torch.equal(descriptor(x), model(x).clamp(0, 1))


OFFICIAL_CASES = [(name, scale) for name in ("din", "din-ijcai", "defian-s", "defian-l")
                  for scale in model_entry(name).scales]


@pytest.mark.parametrize("name,scale", OFFICIAL_CASES)
def test_official_checkpoint_loads_as_from_official(name, scale, loader, tmp_path):
    lit, overrides = official_case(name, scale)
    state = {k: v.float() for k, v in lit.state_dict().items()}
    path = tmp_path / f"{name}_x{scale}.pth"  # as the authors' training saves it: DataParallel, wrapped
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    descriptor = loader.load_from_file(path)
    expected = from_official(name, state, scale=scale, **overrides).double().eval()
    model = descriptor.model.double().eval()
    assert descriptor.architecture.id in OURS and type(model) is type(expected)
    assert (model.model_name, model.config) == (SAME_LAYERS.get(name, name), expected.config)
    assert (descriptor.scale, descriptor.purpose) == (scale, "SR")
    _same_weights(model, expected)
    if scale == 4:  # one run per model
        x = torch.rand(1, 3, 6, 7, dtype=torch.float64)
        with torch.no_grad():
            out = model(x)
            assert torch.equal(out, expected(x))
            # and the authors' graph (its float64 weights differ from the file's by float32 rounding)
            torch.testing.assert_close(out, lit(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["defian-s", "defian-l"])
def test_presets_are_named_and_tagged(name, loader, tmp_path):
    model = create_model(name, 2)
    path = tmp_path / "w.safetensors"
    model.save(str(path))
    descriptor = loader.load_from_file(path)
    c, m, n = (model.config[k] for k in ("channels", "rcabs", "modules"))
    assert descriptor.model.model_name == name and descriptor.model.config == model.config
    assert descriptor.tags == [name, f"{c}nf", f"{m}rcab", f"{n}mod"]


def _foreign_state_dicts() -> dict[str, dict[str, torch.Tensor]]:
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.RCAN import RCAN

    g = torch.Generator().manual_seed(0)
    lit, _ = official_case("defian-s", 2)
    near_miss = {k: v for k, v in lit.state_dict().items() if k != "body.1.hessian7.0.grad_xy.bias"}
    drfn = create_model("drfn", 2, **TINY["drfn"][1]).state_dict()
    drfn["groups.0.attention.sa.weight"] = drfn["groups.0.attention.sa.weight"][:, :, :5, :5]  # a 5x5 SAM
    return {
        "esrgan": ESRGAN(num_filters=16, num_blocks=2, scale=4).state_dict(),
        # RCAN has DeFiAN's residual channel-attention blocks, under other names
        "rcan": RCAN(n_resgroups=2, n_resblocks=2, n_feats=16, scale=2).state_dict(),
        "random": {f"layer{i}.weight": torch.randn(8, 8, 3, 3, generator=g) for i in range(5)},
        "official defian without a key": near_miss,
        "drfn with another kernel": drfn,
    }


def test_other_checkpoints_are_not_claimed(loader, tmp_path):
    for what, state in _foreign_state_dicts().items():
        assert not any(arch.detect(state) for arch in ARCHITECTURES), what
        path = tmp_path / "foreign.pth"
        torch.save(state, path)
        if what in ("esrgan", "rcan"):
            assert loader.load_from_file(path).architecture.id == {"esrgan": "ESRGAN", "rcan": "RCAN"}[what]
        else:
            with pytest.raises(spandrel.UnsupportedModelError):
                loader.load_from_file(path)


def test_install_targets_the_main_registry_once():
    install()
    assert OURS <= {arch.architecture.id for arch in spandrel.MAIN_REGISTRY}
    assert install() == []
    with pytest.raises(spandrel.DuplicateArchitectureError):
        install(ignore_duplicates=False)
    registry = spandrel.ArchRegistry()
    assert [support.architecture.id for support in install(registry)] == [arch.id for arch in ARCHITECTURES]


def test_default_model_loader_loads_the_packaged_default_weights():
    from din_fast.models.pretrained import default_weights

    install()
    descriptor = spandrel.ModelLoader().load_from_file(default_weights(4))
    assert descriptor.model.model_name == "defian-s" and descriptor.scale == 4


class _Plant:
    """Unpickling this object runs ``open(path, 'w')``: a file appears if the loader executed it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_spandrels_pth_loader_runs_no_pickled_code(loader, tmp_path):
    marker = tmp_path / "pwned"
    state = create_model("drfn", 2, **TINY["drfn"][1]).state_dict()
    path = tmp_path / "planted.pth"
    torch.save({**state, "extra": _Plant(str(marker))}, path)
    with pytest.raises(pickle.UnpicklingError, match="forbidden"):
        loader.load_from_file(path)
    assert not marker.exists()


def test_safetensors_without_header_in_official_layout(loader, tmp_path):
    lit, overrides = official_case("din", 3)
    path = tmp_path / "DIN_x3.safetensors"
    save_file({k: v.float().contiguous() for k, v in lit.state_dict().items()}, str(path))
    descriptor = loader.load_from_file(path)
    assert (descriptor.model.model_name, descriptor.scale) == ("din", 3)
    assert descriptor.model.config == create_model("din", 3, **overrides).config
