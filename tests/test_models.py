"""Models: parameter counts of the official configurations, shapes for every scale, bad input, native
save/load, and every backend giving the same model."""

import pytest
import torch

import din_fast
from din_fast import create_model, list_models, load_model

# Parameter counts of the official classes (shared/reference/official-code.md §1.7 and §2.4).
OFFICIAL_COUNTS = [
    ("din", 2, 19_928_307), ("din", 3, 20_112_947), ("din", 4, 20_076_019), ("din", 8, 20_223_731),
    ("din-ijcai", 2, 19_884_603), ("din-ijcai", 3, 20_069_243), ("din-ijcai", 4, 20_032_315),
    ("defian-s", 2, 1_027_610), ("defian-s", 3, 1_073_690), ("defian-s", 4, 1_064_474),
    ("defian-l", 2, 15_186_057), ("defian-l", 3, 15_370_377), ("defian-l", 4, 15_333_513),
]

TINY = {
    "din": dict(num_features=8, growth_rate=4, branches=2, blocks=2, rdbs=2),
    "din-ijcai": dict(num_features=8, growth_rate=4, branches=3, blocks=2, rdbs=1),
    "defian-s": dict(channels=16, rcabs=1, modules=2),
    "defian-l": dict(channels=16, rcabs=2, modules=1),
    "cirn": dict(channels=8, features=8, groups=2, reduction=4),
    "drfn": dict(channels=16, groups=2, blocks=2),
}
SCALES = {"din": (2, 3, 4, 8), "din-ijcai": (2, 3, 4), "defian-s": (2, 3, 4), "defian-l": (2, 3, 4),
          "cirn": (2, 3, 4, 8), "drfn": (2, 3, 4)}


def test_list_models():
    assert {"din", "din-ijcai", "defian-s", "defian-l", "cirn", "drfn"} <= set(list_models())


@pytest.mark.parametrize("name,scale,count", OFFICIAL_COUNTS)
def test_parameter_count_equals_official(name, scale, count):
    model = create_model(name, scale)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("name", sorted(TINY))
def test_output_shape_every_scale(name):
    for scale in SCALES[name]:
        model = create_model(name, scale, **TINY[name]).eval()
        with torch.no_grad():
            y = model(torch.rand(2, 3, 7, 10))
        assert y.shape == (2, 3, 7 * scale, 10 * scale)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["din", "defian-s"])
def test_full_size_model_runs(name):
    model = create_model(name, 4).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 6, 5))
    assert y.shape == (1, 3, 24, 20) and torch.isfinite(y).all()


def test_classes_are_exported():
    assert isinstance(create_model("din", 2, **TINY["din"]), din_fast.DIN)
    assert isinstance(create_model("defian-s", 2, **TINY["defian-s"]), din_fast.DeFiAN)
    assert din_fast.DIN(scale=2, num_features=8, growth_rate=4, branches=1, blocks=1, rdbs=1).model_name == "din"


@pytest.mark.parametrize("x,message", [
    (torch.rand(1, 4, 8, 8), "expected 3 \\(RGB\\) channels, got 4"),
    (torch.rand(3, 8, 8), r"expected a 4-D .* \(add a batch dimension"),
    (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), "floating-point .* x.float\\(\\) / 255"),
    (torch.rand(1, 3, 0, 8), "non-empty"),
    ("image.png", "expected a torch.Tensor"),
])
@pytest.mark.parametrize("name", ["din", "defian-s"])
def test_bad_input_is_a_clear_error(name, x, message):
    model = create_model(name, 2, **TINY[name])
    with pytest.raises(ValueError, match=message):
        model(x)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown model 'edsr'; available: .*din"):
        create_model("edsr", 2)
    with pytest.raises(ValueError, match="supports scales 2, 3, 4; got scale=8"):
        create_model("defian-s", 8)
    with pytest.raises(ValueError, match="supports scales 2, 3, 4; got scale=8"):
        create_model("din-ijcai", 8)
    with pytest.raises(ValueError, match="unknown override\\(s\\) 'width'"):
        create_model("din", 2, width=3)
    with pytest.raises(ValueError, match="num_features must be a positive integer"):
        create_model("din", 2, num_features=0)
    with pytest.raises(ValueError, match="supports scales"):
        din_fast.DeFiAN(scale=5)


@pytest.mark.parametrize("name", sorted(TINY))
def test_native_round_trip(name, tmp_path):
    model = create_model(name, 3, **TINY[name]).eval()
    path = tmp_path / "w.safetensors"
    model.save(str(path))
    loaded = load_model(str(path)).eval()
    assert loaded.model_name == name and loaded.scale == 3 and loaded.config == model.config
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_load_model_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "missing.safetensors"))
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="no din_fast header"):
        load_model(str(plain))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    # Its first 8 bytes, read as the header length, are ~7e18: refused before anything is allocated.
    with pytest.raises(ValueError, match="corrupt safetensors file .header length .* is above the limit"):
        load_model(str(garbage))


@pytest.mark.parametrize("name", sorted(TINY))
def test_backends_agree_on_whole_model(name):
    model = create_model(name, 2, **TINY[name]).double().eval()
    x = torch.rand(2, 3, 9, 7, dtype=torch.float64)
    with torch.no_grad(), din_fast.use_backend("reference"):
        expected = model(x)
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["din", "defian-s"])
def test_models_compile_without_graph_breaks(name):
    model = create_model(name, 2, **TINY[name]).eval()
    x = torch.rand(1, 3, 6, 7)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
