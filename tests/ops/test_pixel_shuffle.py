"""models.blocks.PixelShuffle: torch's pixel_shuffle values and gradients, bit for bit, from strided copies."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import din_fast
from din_fast.models.blocks import PixelShuffle
from impl_checks import relayout


class _AtenOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("r", [2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "non_contiguous"])
def test_matches_torch_bit_for_bit(r, layout):
    g = torch.Generator().manual_seed(r)
    x = torch.randn(2, 3 * r * r, 5, 7, dtype=torch.float64, generator=g)
    x_in = relayout(x, layout).requires_grad_()
    grad = torch.randn(2, 3, 5 * r, 7 * r, dtype=torch.float64, generator=g)
    out = PixelShuffle(r)(x_in)
    assert torch.equal(out, F.pixel_shuffle(x, r))
    (dx,) = torch.autograd.grad(out, x_in, grad)
    assert torch.equal(dx, F.pixel_unshuffle(grad, r))


def test_reference_backend_runs_torchs_kernel():
    x = torch.randn(1, 8, 3, 4)
    with din_fast.use_backend("reference"), _AtenOps() as seen:
        PixelShuffle(2)(x)
    assert "pixel_shuffle" in seen.names
    with din_fast.use_backend("auto"), _AtenOps() as seen:
        PixelShuffle(2)(x)
    assert "pixel_shuffle" not in seen.names


def test_bad_channel_count_gives_torchs_error():
    with pytest.raises(RuntimeError, match="divisible by"):
        PixelShuffle(2)(torch.randn(1, 6, 3, 3))
