"""din_fast.upscale: tiling equals the untiled run for local models, the x8 ensemble, automatic tiling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import din_fast
from din_fast import create_model, upscale
from din_fast.inference.tiling import tile_grid


class LocalNet(nn.Module):
    """Purely convolutional x2 network: three 3x3 convs (receptive-field radius 3) + pixel shuffle.
    The last conv is deliberately asymmetric, so the network is not flip/rotation equivariant."""

    radius = 3

    def __init__(self) -> None:
        super().__init__()
        self.scale = 2
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture
def net() -> LocalNet:
    return LocalNet().double()


def test_tile_grid_covers_the_axis_with_near_equal_cores():
    for length in (1, 7, 16, 17, 100):
        for tile in (1, 4, 16, 33):
            cores = tile_grid(length, tile)
            assert cores[0][0] == 0 and cores[-1][1] == length
            assert all(a1 == b0 for (_, a1), (b0, _) in zip(cores, cores[1:]))
            sizes = [b - a for a, b in cores]
            assert max(sizes) <= tile and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("tile", [4, 9])
def test_tiled_equals_untiled_when_overlap_covers_receptive_field(net, tile):
    x = torch.rand(2, 3, 13, 17, dtype=torch.float64)
    with torch.no_grad():
        whole = net(x)
    calls = []
    tiled = upscale(net, x, tile=tile, overlap=net.radius, progress=lambda d, t: calls.append((d, t)))
    assert tiled.shape == (2, 3, 26, 34)
    # float64: only the summation order of the convolutions can differ between shapes
    torch.testing.assert_close(tiled, whole, atol=1e-12, rtol=0)
    n = len(tile_grid(13, tile)) * len(tile_grid(17, tile))
    assert calls == [(i, n) for i in range(1, n + 1)]


def test_too_little_overlap_shows_seams(net):
    """The check above can fail: with less context than the receptive field, tiles differ."""
    x = torch.rand(1, 3, 19, 23, dtype=torch.float64)
    with torch.no_grad():
        whole = net(x)
    assert (upscale(net, x, tile=6, overlap=net.radius - 1) - whole).abs().max() > 1e-6


def test_single_image_and_device_round_trip(net):
    x = torch.rand(3, 10, 9, dtype=torch.float64)
    y = upscale(net, x, tile=4, overlap=3)
    assert y.shape == (3, 20, 18)
    with torch.no_grad():
        torch.testing.assert_close(y, net(x[None])[0], atol=1e-12, rtol=0)


def _dihedral(x: torch.Tensor, transpose: bool, flip_h: bool, flip_v: bool) -> torch.Tensor:
    x = x.transpose(-2, -1) if transpose else x
    x = x.flip(-1) if flip_h else x
    return x.flip(-2) if flip_v else x


def _undo(y: torch.Tensor, transpose: bool, flip_h: bool, flip_v: bool) -> torch.Tensor:
    y = y.flip(-2) if flip_v else y
    y = y.flip(-1) if flip_h else y
    return y.transpose(-2, -1) if transpose else y


def _ensemble_by_hand(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The eight symmetries written as (transpose?, flip left-right?, flip up-down?): a different
    parametrisation of the same group than din_fast's (quarter turns, flip)."""
    outs = []
    with torch.no_grad():
        for t in (False, True):
            for fh in (False, True):
                for fv in (False, True):
                    outs.append(_undo(model(_dihedral(x, t, fh, fv)), t, fh, fv))
    return torch.stack(outs).mean(0)


def test_ensemble_is_the_mean_of_the_eight_transformed_runs(net):
    x = torch.rand(2, 3, 9, 13, dtype=torch.float64)
    expected = _ensemble_by_hand(net, x)
    torch.testing.assert_close(upscale(net, x, ensemble=True), expected, atol=1e-12, rtol=0)
    with torch.no_grad():
        assert (expected - net(x)).abs().max() > 1e-3  # the network is not equivariant: the ensemble matters
    # tiled ensemble: the same, since every pass is exact
    tiled = upscale(net, x, tile=5, overlap=3, ensemble=True)
    torch.testing.assert_close(tiled, expected, atol=1e-12, rtol=0)


def test_ensemble_of_a_din_model_matches_by_hand():
    model = create_model("din", scale=2, num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=2).eval()
    x = torch.rand(1, 3, 7, 10)
    torch.testing.assert_close(upscale(model, x, ensemble=True), _ensemble_by_hand(model, x),
                               atol=1e-5, rtol=1e-5)


class RunsOutOfMemory(nn.Module):
    """Wraps a model and raises the allocator's error for inputs larger than ``limit`` pixels."""

    def __init__(self, inner: nn.Module, limit: int, error: type[Exception] = torch.OutOfMemoryError) -> None:
        super().__init__()
        self.inner, self.limit, self.error, self.sizes = inner, limit, error, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] * x.shape[-1] > self.limit:
            if self.error is RuntimeError:
                raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes")
            raise self.error("boom" if self.error is ValueError else "CUDA out of memory")
        self.sizes.append(tuple(x.shape[-2:]))
        return self.inner(x)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])
def test_automatic_tiling_when_the_image_does_not_fit(net, error):
    x = torch.rand(1, 3, 64, 48, dtype=torch.float64)
    with torch.no_grad():
        whole = net(x)
    limited = RunsOutOfMemory(net, limit=40 * 40, error=error)
    y = upscale(limited, x, overlap=3, ensemble=True)
    torch.testing.assert_close(y, _ensemble_by_hand(net, x), atol=1e-12, rtol=0)
    assert limited.sizes and all(h * w <= 40 * 40 for h, w in limited.sizes)
    with torch.no_grad():
        torch.testing.assert_close(upscale(limited, x, overlap=3), whole, atol=1e-12, rtol=0)


def test_automatic_tiling_gives_up_with_a_clear_error(net):
    with pytest.raises(RuntimeError, match="out of memory even with 16x16 tiles"):
        upscale(RunsOutOfMemory(net, limit=10), torch.rand(1, 3, 40, 40, dtype=torch.float64))


def test_other_errors_are_not_retried(net):
    with pytest.raises(ValueError, match="boom"):
        upscale(RunsOutOfMemory(net, limit=0, error=ValueError), torch.rand(1, 3, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("kwargs, message", [
    (dict(tile=8, overlap=9), r"tile \(8\) must not be smaller than overlap \(9\)"),
    (dict(tile=0), "tile must be a positive integer"),
    (dict(overlap=-1), "overlap must be a non-negative integer"),
])
def test_bad_tiling_arguments(net, kwargs, message):
    with pytest.raises(ValueError, match=message):
        upscale(net, torch.rand(3, 8, 8, dtype=torch.float64), **kwargs)


@pytest.mark.parametrize("image, message", [
    (torch.rand(8, 8), "must be a .3, H, W. or .B, 3, H, W. tensor"),
    (torch.rand(1, 4, 8, 8), "expected 3 .RGB. channels"),
    (torch.randint(0, 255, (3, 8, 8)), "floating-point"),
])
def test_bad_images(net, image, message):
    with pytest.raises(ValueError, match=message):
        upscale(net, image)


def test_exported_from_the_package():
    assert din_fast.upscale is upscale and "upscale" in din_fast.__all__
