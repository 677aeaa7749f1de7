"""NaN and inf propagate through every fused op exactly as through its reference (issue 19).

A non-finite value is data: an op that turns it into a finite number (a ReLU written ``x > 0 ? x : 0``,
a max that skips NaN) hides a broken input or a diverged training run behind plausible output. For every
op and implementation, with one NaN or one inf planted in a feature-map input, the output and every
gradient must be non-finite at exactly the entries where the float64 reference's are; and with the
poison planted in the upstream gradient instead (finite inputs), every gradient likewise.

NaN against inf is not distinguished, since a fused kernel may legitimately compute ``inf − inf`` where
the reference computes ``inf · 0``. The entries finite in both must agree as in the other op tests (e.g.
ReLU's derivative passes the gradient where its input is NaN, as autograd's threshold_backward does).
The poison sits in batch 1 at an interior pixel, so batch 0 must stay finite wherever the reference's
does. conv3x3 is checked on both of its C++ paths (Winograd and, with Cout <= 4, direct).

One documented exception (din_fast/ops/conv3x3.py): the C++ conv3x3's Winograd transforms mix a whole
tile, so in its feature maps (the forward's output, and the input gradient, which both paths compute by
Winograd) a non-finite value reaches whole 4x4 tiles and their windows instead of only the 3x3
neighbourhood. There the mask must contain the reference's and stay within the reference's mask closed
to whole tiles plus their one-pixel window border (``_winograd_bound``): never hidden, never spread
further.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import din_fast
from din_fast import ops
from impl_checks import FORWARD_EPS, GRAD_EPS, IMPLS, assert_close_to, skip_unless_runs
from op_inputs import ARGS, flat, rebuild, requiring_grad

#: The Triton interpreter's numpy warns at every NaN it computes, which is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

#: (op, builder keyword arguments): each op at its builder's default shape (odd sizes, several Winograd
#: tiles), plus conv3x3's direct path and criss-cross lines longer than a 16-float vector (the C++
#: backward's explicit AVX-512 / AVX2 softmax loop).
CASES = [pytest.param(op, {}, id=op) for op in sorted(ARGS)] + [
    pytest.param("conv3x3", dict(cout=3), id="conv3x3-direct"),
    pytest.param("criss_cross_attention", dict(h=17, w=19), id="criss_cross_attention-long")]
POISONS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
DTYPES = [torch.float64, torch.float32]
#: (op, implementation) whose feature maps may spread a non-finite value over Winograd tiles.
WINOGRAD = {("conv3x3", "cpp")}
#: The Winograd output tile (csrc/cpu/conv3x3.cpp, kOut).
TILE = 4
#: Without a GPU, Triton runs in the interpreter (seconds per call): there it is checked in float32 only
#: (float64 runs the same kernel code with a wider accumulator).
INTERPRETED = not torch.cuda.is_available()


def _skip_unless_runs(op: str, impl: str, dtype: torch.dtype) -> None:
    skip_unless_runs(op, impl, dtype)
    if impl == "triton" and INTERPRETED and dtype != torch.float32:
        pytest.skip("Triton interpreter: float32 covers the kernels' NaN handling")


def _feature_maps(args: list) -> list[int]:
    """Indices (into ``flat(args)``) of the (B, C, H, W) inputs: those with the first input's batch and
    spatial size."""
    first = flat(args)[0]
    return [i for i, t in enumerate(flat(args))
            if t.dim() == 4 and t.shape[0] == first.shape[0] and t.shape[2:] == first.shape[2:]]


def _poisoned(t: torch.Tensor, value: float) -> torch.Tensor:
    """A copy of ``t`` with ``value`` at batch 1 (the last batch if fewer), its last channel, an interior
    pixel."""
    t = t.clone()
    t[-1, -1, t.shape[2] // 2, t.shape[3] // 2] = value
    return t


def _winograd_bound(mask: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) mask closed to the whole TILE x TILE tiles it touches, then grown by one pixel: the
    6x6 windows of those tiles."""
    h, w = mask.shape[-2:]
    tiles = F.max_pool2d(mask.double(), TILE, TILE, ceil_mode=True)
    closed = tiles.repeat_interleave(TILE, -2).repeat_interleave(TILE, -1)[..., :h, :w]
    return F.max_pool2d(closed, 3, 1, padding=1) > 0


def _assert_same_mask(got: torch.Tensor, expected: torch.Tensor, what: str, winograd: bool, k: int) -> None:
    """The same non-finite entries (with ``winograd``, a feature map of a Winograd kernel, extra ones within
    ``_winograd_bound`` of the reference's), and the entries finite in both within ``k`` epsilons."""
    got_bad, expected_bad = ~torch.isfinite(got), ~torch.isfinite(expected)
    extra, missing = got_bad & ~expected_bad, expected_bad & ~got_bad
    if winograd:
        extra &= ~_winograd_bound(expected_bad)
    assert not extra.any() and not missing.any(), (
        f"{what}: {int(got_bad.sum())} non-finite entries where the reference has {int(expected_bad.sum())}; "
        f"{int(extra.sum())} extra, {int(missing.sum())} missing")
    finite = ~got_bad & ~expected_bad
    assert_close_to(got.where(finite, 0), expected.where(finite, 0), got.dtype, k)


def _gradients(op: str, backend: str, args: list, dtype: torch.dtype, grad: torch.Tensor) -> list:
    """The output and every gradient of the public op with ``backend`` on ``args`` cast to ``dtype``."""
    args = requiring_grad(rebuild(args, [t.to(dtype) for t in flat(args)]))
    with din_fast.use_backend(backend):
        out = getattr(ops, op)(*args)
        return [out, *torch.autograd.grad(out, flat(args), grad.to(dtype))]


def _compare(op: str, impl: str, args: list, dtype: torch.dtype, grad: torch.Tensor) -> None:
    expected = _gradients(op, "reference", args, torch.float64, grad)
    got = _gradients(op, impl, args, dtype, grad)
    names = ["output"] + [f"gradient of input {i}" for i in range(len(got) - 1)]
    maps = expected[0].shape[0], expected[0].shape[2:]  # batch and spatial size of the feature maps
    for i, (g, e, name) in enumerate(zip(got, expected, names)):
        feature_map = e.dim() == 4 and (e.shape[0], e.shape[2:]) == maps
        _assert_same_mask(g, e, name, (op, impl) in WINOGRAD and feature_map, GRAD_EPS if i else FORWARD_EPS)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op, shape", CASES)
def test_poisoned_input(op, shape, impl, poison, dtype):
    """One NaN/inf in each feature-map input in turn: output and gradients (finite upstream gradient)."""
    _skip_unless_runs(op, impl, dtype)
    args = ARGS[op](**shape)
    grad = torch.randn_like(getattr(ops.reference, op)(*args))
    for i in _feature_maps(args):
        tensors = flat(args)
        tensors[i] = _poisoned(tensors[i], POISONS[poison])
        _compare(op, impl, rebuild(args, tensors), dtype, grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op, shape", CASES)
def test_poisoned_upstream_gradient(op, shape, impl, poison, dtype):
    """Finite inputs, one NaN/inf in the upstream gradient: every gradient."""
    _skip_unless_runs(op, impl, dtype)
    args = ARGS[op](**shape)
    grad = _poisoned(torch.randn_like(getattr(ops.reference, op)(*args)), POISONS[poison])
    _compare(op, impl, args, dtype, grad)
