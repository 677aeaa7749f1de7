"""DIN's restoration models (journal §3.5): din-deblur, din-dehaze, din-derain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import din_fast
from din_fast import create_model
from din_fast.models.din import DINRestoration
from din_fast.train.trainer import TrainConfig, train

TINY = dict(num_features=8, growth_rate=4, branches=2, blocks=2, rdbs=1, reduction=2)
TASKS = ("deblur", "dehaze", "derain")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("size", [(16, 12), (13, 10)])
def test_shapes_and_feature_resolution(task, size):
    model = create_model(f"din-{task}", **TINY)
    assert isinstance(model, DINRestoration) and model.scale == 1 and model.model_name == f"din-{task}"
    seen = {}

    def record(module, inputs, output):  # returns None: the output is left alone
        seen["f0"] = output.shape

    model.head.register_forward_hook(record)
    x = torch.rand(2, 3, *size)
    y = model(x)
    assert y.shape == x.shape
    padded = [-(-s // 4) * 4 for s in size]  # sides rounded up to a multiple of 4 for the strided head
    expected = (2, 8, padded[0] // 4, padded[1] // 4) if task != "derain" else (2, 8, *size)
    assert tuple(seen["f0"]) == expected
    y.abs().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("task", TASKS)
def test_architecture_ends(task):
    """Heads and tails as §3.5 describes them; the interleaved body is DIN's (journal variant)."""
    model = create_model(f"din-{task}", **TINY)
    convs = [m for m in model.head.modules() if isinstance(m, nn.Conv2d)]
    tail = [m for m in model.tail.modules() if isinstance(m, (nn.Conv2d, nn.PixelShuffle))]
    # Conv3x3 is an nn.Conv2d, blocks.PixelShuffle an nn.PixelShuffle
    kinds = [nn.Conv2d if isinstance(m, nn.Conv2d) else nn.PixelShuffle for m in tail]
    if task == "derain":
        assert [(c.kernel_size, c.stride) for c in convs] == [((3, 3), (1, 1))]
        assert kinds == [nn.Conv2d]
    else:
        assert [(c.kernel_size, c.stride) for c in convs] == [((3, 3), (1, 1)), ((8, 8), (4, 4))]
        assert kinds == [nn.Conv2d, nn.PixelShuffle] * 2 + [nn.Conv2d]
        assert [m.upscale_factor for m in tail if isinstance(m, nn.PixelShuffle)] == [2, 2]
    din = create_model("din", 2, **TINY)
    body = {k: v.shape for k, v in din.state_dict().items() if k.startswith(("branches", "fusions", "gff"))}
    assert body == {k: v.shape for k, v in model.state_dict().items() if k.startswith(("branches", "fusions", "gff"))}


@pytest.mark.parametrize("task", TASKS)
def test_global_residual(task):
    """Eq. 19: output = reconstruction + input; with the last conv zeroed the model is the identity."""
    model = create_model(f"din-{task}", **TINY)
    last = model.tail[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    x = torch.rand(1, 3, 11, 9)
    assert torch.equal(model(x), x)


def test_defaults_and_errors():
    model = create_model("din-derain")  # the full journal configuration
    assert model.config == dict(task="derain", num_features=64, growth_rate=32, branches=4, blocks=5, rdbs=3,
                                reduction=4)
    with pytest.raises(ValueError, match="supports scales 1; got scale=2"):
        create_model("din-deblur", 2)
    with pytest.raises(ValueError, match="task must be one of deblur, dehaze, derain"):
        DINRestoration(task="denoise")
    with pytest.raises(ValueError, match="expected 3"):
        create_model("din-dehaze", **TINY)(torch.rand(1, 4, 8, 8))
    with pytest.raises(NotImplementedError):
        model.official_key_map()


def test_short_training_run_on_paired_folders(tmp_path):
    """Restoration trains from (input, target) folders at scale 1; the weights reload by name."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        for folder in ("input", "target"):
            (tmp_path / split / folder).mkdir(parents=True)
        for i in range(count):
            target = rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)
            haze = (0.6 * target + 0.4 * 230).astype(np.uint8)  # a flat, bright veil
            Image.fromarray(target).save(tmp_path / split / "target" / f"{i}.png")
            Image.fromarray(haze).save(tmp_path / split / "input" / f"{i}.png")
    config = TrainConfig(model="din-dehaze", scale=1, hr=str(tmp_path / "train" / "target"),
                         lr=str(tmp_path / "train" / "input"), val=str(tmp_path / "val" / "target"),
                         val_lr=str(tmp_path / "val" / "input"), out=str(tmp_path / "run"), steps=3, batch=2,
                         patch=8, workers=0, log_every=1, model_args=dict(TINY))
    result = train(config)
    assert result.step == 3 and result.best_psnr is not None and np.isfinite(result.best_psnr)
    loaded = din_fast.load_model(str(tmp_path / "run" / "last.safetensors"))
    assert isinstance(loaded, DINRestoration) and loaded.model_name == "din-dehaze"
    x = torch.rand(1, 3, 10, 14)
    assert torch.equal(loaded.eval()(x), result.model.eval()(x))
