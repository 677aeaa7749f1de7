"""``conv3x3`` (Winograd F(4x4, 3x3) on CPU) against the float64 reference ``F.conv2d(padding=1)``."""

import math

import pytest
import torch
import torch.nn.functional as F

import din_fast
from din_fast import ops
from din_fast.models.blocks import Conv3x3
from din_fast.ops.conv3x3 import winograd_tiles
from impl_checks import (assert_close_to, check_backward, check_forward, check_forward_and_backward,
                         gradcheck, opcheck, relayouts, run, skip_unless_runs)
from op_inputs import GRAD_SHAPES, conv3x3_args, requiring_grad

# Odd sizes (partial 4x4 tiles on both axes), B > 1, one row / one column images, a tile-aligned size.
# Cout <= 4 runs the direct convolution (several 8-row blocks and 64-pixel blocks at 19 x 70), larger Cout
# Winograd.
SHAPES = [dict(b=2, cin=5, cout=7, h=9, w=13), dict(b=3, cin=33, cout=16, h=19, w=11),
          dict(b=2, cin=4, cout=3, h=1, w=9), dict(b=1, cin=3, cout=5, h=7, w=1), dict(b=2, cin=8, cout=8, h=8, w=12),
          dict(b=2, cin=6, cout=3, h=19, w=70), dict(b=1, cin=5, cout=1, h=9, w=4)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_backward_match_reference(dtype):
    check_forward_and_backward("conv3x3", "cpp", dtype, SHAPES, seed=3)


@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_strips(monkeypatch, rows, threads):
    """The op runs strip by strip (a few tile rows of one image each; neighbouring strips share two image rows
    of dx, each thread keeps its own dweight sum). Force strip heights that cut 6 tile rows unevenly and
    thread counts that give threads several or no strips."""
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    monkeypatch.setenv("DIN_FAST_CONV3X3_STRIP_ROWS", str(rows))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(rows * 10 + threads)
        args = conv3x3_args(b=2, cin=6, cout=5, h=23, w=11, generator=g)
        check_forward("conv3x3", "cpp", args, torch.float64)
        check_backward("conv3x3", "cpp", args, torch.float64, g)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_direct_rows_over_threads(threads):
    """Cout <= 4: the direct convolution, 8 output rows per work item; heights that leave a short last block,
    thread counts that give threads several or no blocks."""
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(threads)
        args = conv3x3_args(b=2, cin=7, cout=4, h=21, w=9, generator=g)
        check_forward("conv3x3", "cpp", args, torch.float64)
        check_backward("conv3x3", "cpp", args, torch.float64, g)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("cout", [4, 6])  # direct, Winograd
@pytest.mark.parametrize("layout", ["channels_last", "non_contiguous", "channel_slice"])
def test_layouts(layout, cout):
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    x, w, b = conv3x3_args(b=2, cin=5, cout=cout, h=6, w=7)
    if layout == "channel_slice":  # how DIN's dense block reads its buffer: rows contiguous, batch strided
        buf = torch.randn(2, 9, 6, 7, dtype=torch.float64)
        buf[:, :5] = x
        x_in = buf[:, :5]
    else:
        x_in = relayouts(x)[layout]
    got = run("conv3x3", "cpp", [x_in, w, b])
    assert_close_to(got, ops.reference.conv3x3(x, w, b), torch.float64, 64)
    assert got.is_contiguous(memory_format=torch.channels_last if layout == "channels_last"
                             else torch.contiguous_format)


def test_float32_error_at_model_sizes():
    """At DIN's widest conv (224 → 64, 48×48) Winograd's float32 error stays within 128 eps of the output
    scale (measured ~76; the direct convolution's is ~3: the transforms amplify rounding, ~5·sqrt(Cin))."""
    skip_unless_runs("conv3x3", "cpp", torch.float32)
    args = conv3x3_args(b=1, cin=224, cout=64, h=48, w=48, generator=torch.Generator().manual_seed(0))
    check = run("conv3x3", "cpp", [t.float() for t in args])
    assert_close_to(check, ops.reference.conv3x3(*args), torch.float32, 128)


def test_gradcheck():
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    assert gradcheck("conv3x3", "cpp", requiring_grad(conv3x3_args(**GRAD_SHAPES["conv3x3"])))


def test_opcheck():
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    opcheck("conv3x3", "cpp", requiring_grad(conv3x3_args(**GRAD_SHAPES["conv3x3"])))


@pytest.mark.parametrize("strip_rows", [None, "1"])
def test_non_finite_input_stays_within_its_tiles(monkeypatch, strip_rows):
    """A Winograd tile mixes the 6x6 window it reads, so an inf in x turns the whole 4x4 output tiles whose
    windows contain it non-finite (documented in din_fast/ops/conv3x3.py) — and nothing else: other tiles,
    including the padding tile that ends each tile row, and other strips are finite and correct."""
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    if strip_rows:
        monkeypatch.setenv("DIN_FAST_CONV3X3_STRIP_ROWS", strip_rows)
    x, w, b = conv3x3_args(b=1, cin=2, cout=5, h=9, w=10)  # Cout > 4: Winograd
    x[0, 1, 4, 5] = math.inf  # inside the windows of tile rows 0-1 (input rows -1..4, 3..8), tile column 1
    got = run("conv3x3", "cpp", [x, w, b])
    far = torch.ones_like(got, dtype=torch.bool)
    far[..., 0:8, 4:8] = False
    assert not torch.isfinite(got[..., 4, 5]).any()
    assert torch.isfinite(got[far]).all()
    assert_close_to(got[far], F.conv2d(x, w, b, padding=1)[far], torch.float64, 64)


def test_non_finite_input_direct():
    """Cout <= 4 convolves directly: an inf pixel reaches its 3x3 neighbourhood only, as in F.conv2d."""
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    x, w, b = conv3x3_args(b=1, cin=2, cout=3, h=9, w=10)
    x[0, 1, 4, 5] = math.inf
    got = run("conv3x3", "cpp", [x, w, b])
    near = torch.zeros_like(got, dtype=torch.bool)
    near[..., 3:6, 4:7] = True
    assert not torch.isfinite(got[near]).any()
    assert_close_to(got[~near], F.conv2d(x, w, b, padding=1)[~near], torch.float64, 64)


def test_module_matches_nn_conv2d_and_keeps_its_keys():
    conv = Conv3x3(6, 5, bias=False).double()
    plain = torch.nn.Conv2d(6, 5, 3, padding=1, bias=False).double()
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 7, 9, dtype=torch.float64)
    for backend in ("reference", "auto"):
        with din_fast.use_backend(backend):
            assert_close_to(conv(x), plain(x), torch.float64, 64)
    assert list(conv.state_dict()) == ["weight"]


def test_errors():
    x, w, b = conv3x3_args()
    with pytest.raises(ValueError, match="weight must have shape"):
        ops.conv3x3(x, w[:, :, :2], b)
    with pytest.raises(ValueError, match=r"weight must have shape \(7, 5, 3, 3\)"):
        ops.conv3x3(x, w[:, :4], b)
    with pytest.raises(ValueError, match="bias must have shape"):
        ops.conv3x3(x, w, b[:3])
    with pytest.raises(ValueError, match="weight has dtype"):
        ops.conv3x3(x, w.float(), b)
    with pytest.raises(ValueError, match="x must not be empty"):
        ops.conv3x3(x[:0], w, b)
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\)"):
        ops.conv3x3(x[0], w, b)


def test_private_kernels_check_their_arguments():
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    x, w, b = conv3x3_args()
    fwd, bwd = torch.ops.din_fast._conv3x3_cpp, torch.ops.din_fast._conv3x3_backward_cpp
    with pytest.raises(ValueError, match="float32 or float64"):
        fwd(x.half(), w.half(), b.half())
    with pytest.raises(ValueError, match="weight must have shape"):
        fwd(x, w[:, :3], b)
    with pytest.raises(ValueError, match="bias has dtype"):
        fwd(x, w, b.float())
    with pytest.raises(ValueError, match="x must not be empty"):
        fwd(x[:, :, :0], w, b)
    with pytest.raises(ValueError, match="grad must have shape"):
        bwd(torch.zeros(2, 5, 9, 13, dtype=torch.float64), x, w, b)


def test_winograd_building_blocks_compose_over_a_shared_buffer():
    """DIN's dense block transforms each feature once into channels of one (36, C, tiles) buffer and runs a
    conv over any prefix of it; the same for the adjoints (tests/ops/test_dense_block.py covers the block)."""
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    wino = torch.ops.din_fast
    g = torch.Generator().manual_seed(5)
    feats = [torch.randn(2, c, 7, 9, dtype=torch.float64, generator=g) for c in (3, 2)]
    V = torch.empty(36, 5, 2 * winograd_tiles(7, 9), dtype=torch.float64)
    wino._winograd_input_cpp(feats[0], V, 0)
    wino._winograd_input_cpp(feats[1], V, 3)
    _, w, b = conv3x3_args(b=2, cin=5, cout=4, h=7, w=9, generator=g)
    x = torch.cat(feats, 1)
    out = torch.empty(2, 6, 7, 9, dtype=torch.float64)[:, 1:5]  # a channel slice: rows stay contiguous
    wino._winograd_output_cpp(torch.bmm(wino._winograd_kernel_cpp(w), V), b, 0.2, out)
    assert_close_to(out, F.leaky_relu(F.conv2d(x, w, b, padding=1), 0.2), torch.float64, 64)
    grad = torch.randn(2, 4, 7, 9, dtype=torch.float64, generator=g)
    dV = torch.bmm(wino._winograd_kernel_cpp(w).transpose(1, 2), wino._winograd_output_adjoint_cpp(grad))
    dx = torch.empty(2, 2, 7, 9, dtype=torch.float64)
    wino._winograd_input_adjoint_cpp(dV, 3, dx)
    expected = torch.ops.aten.convolution_backward(grad, x, w, [4], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                   [True, False, False])[0]
    assert_close_to(dx, expected[:, 3:], torch.float64, 64)


def test_winograd_tiles_is_the_documented_layout():
    """⌈H/4⌉ tile rows of ⌈W/4⌉ + 1 tiles, rounded up to 16; the extension's answer is the kernels' own."""
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    for h, w in [(1, 1), (5, 6), (7, 9), (48, 48), (33, 64), (96, 17)]:
        tiles = -(-h // 4) * (-(-w // 4) + 1)
        assert winograd_tiles(h, w) == -(-tiles // 16) * 16
    with pytest.raises(ValueError, match="H, W >= 1"):
        winograd_tiles(0, 4)


def test_winograd_building_blocks_check_their_arguments():
    skip_unless_runs("conv3x3", "cpp", torch.float64)
    wino = torch.ops.din_fast
    x = torch.randn(1, 3, 5, 6, dtype=torch.float64)
    tiles = winograd_tiles(5, 6)
    with pytest.raises(ValueError, match="channels 2..5 do not fit"):
        wino._winograd_input_cpp(x, torch.empty(36, 4, tiles, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match=r"must be a contiguous \(36, C, 16\)"):
        wino._winograd_input_cpp(x, torch.empty(36, 3, tiles + 16, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match="dtype and device"):
        wino._winograd_input_cpp(x, torch.empty(36, 3, tiles), 0)
    with pytest.raises(ValueError, match="out must have contiguous rows"):
        wino._winograd_output_cpp(torch.empty(36, 3, tiles, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                                  1.0, x.transpose(2, 3))
    with pytest.raises(ValueError, match="weight must have shape"):
        wino._winograd_kernel_cpp(torch.empty(4, 3, 5, 5, dtype=torch.float64))
