"""``mshf`` implementations (cpp; triton under the interpreter) against the float64 reference."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import din_fast
from din_fast import ops
from din_fast.models.defian import MSHF
from impl_checks import (IMPLS, ROUTES, assert_close_to, check_bad_arguments, check_forward,
                         check_forward_and_backward, gradcheck, opcheck, relayouts, run, skip_unless_runs)
from op_inputs import GRAD_SHAPES, mshf_args, requiring_grad

OP = "mshf"

# The Triton interpreter runs each program in Python (about a second per call here): its checks use
# tiny shapes and fewer cases; on a GPU they run everything.
INTERPRETED = not torch.cuda.is_available()

# Odd sizes, B > 1, C = 16 and 33; 5×7 is smaller than the largest halo (3). The cpp forward works in
# row blocks (test_row_blocks_and_threads covers their split), in groups of up to 4 rows i, i + d, … per
# dilation d, on rows rounded up to whole vectors: 37 columns are not a whole number of vectors.
SHAPES = [dict(b=2, c=16, h=5, w=7), dict(b=2, c=33, h=19, w=11), dict(b=1, c=16, h=1, w=9),
          dict(b=2, c=6, h=29, w=37)]
TRITON_SHAPES = [dict(b=2, c=3, h=5, w=7)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_backward_match_reference(impl, dtype):
    check_forward_and_backward("mshf", impl, dtype, TRITON_SHAPES if impl == "triton" else SHAPES, seed=1)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_row_blocks_and_threads(threads):
    """The cpp forward splits H into row blocks whose count depends on B, H and the thread count (about
    24 rows, a count that divides evenly over the threads, at least 8 rows). These heights give blocks of
    8 to 32 rows, uneven last blocks and, per dilation, leftover rows after the full 4-row groups that form
    groups of 1, 2, 3 and 4 rows (e.g. 22 rows at d = 3: rows 12…21 → groups of 4, 3, 3)."""
    skip_unless_runs("mshf", "cpp", torch.float32)
    g = torch.Generator().manual_seed(4)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for b, h in [(1, 17), (1, 22), (1, 29), (1, 45), (1, 64), (3, 40)]:
            args = mshf_args(b=b, c=3, h=h, w=9, generator=g)
            for dtype in (torch.float64, torch.float32):
                check_forward("mshf", "cpp", args, dtype)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", ["channels_last", "non_contiguous"])
def test_layouts(impl, layout):
    skip_unless_runs("mshf", impl, torch.float64)
    x, w, b = mshf_args(b=2, c=5, h=6, w=7)
    expected = ops.reference.mshf(x, w, b)
    got = run("mshf", impl, [relayouts(x)[layout], w, b])
    assert_close_to(got, expected, torch.float64, 64)
    assert got.is_contiguous(memory_format=torch.channels_last if layout == "channels_last"
                             else torch.contiguous_format)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck(impl):
    skip_unless_runs("mshf", impl, torch.float64)
    assert gradcheck("mshf", impl, requiring_grad(mshf_args(**GRAD_SHAPES["mshf"])))


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    skip_unless_runs("mshf", impl, torch.float64)
    opcheck("mshf", impl, requiring_grad(mshf_args(**GRAD_SHAPES["mshf"])))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("zero_bias", [True, False])
def test_constant_input_follows_autograd_of_reference(impl, dtype, zero_bias):
    """Analytic kernels on a constant image: with zero biases the sqrt argument is exactly 0 inside the
    image, where autograd of the reference gives NaN gradients; the fused op must give NaN at exactly
    the same entries (and the same finite values elsewhere). With random biases all is finite."""
    skip_unless_runs("mshf", impl, dtype)
    if impl == "triton" and INTERPRETED and (dtype != torch.float64 or not zero_bias):
        pytest.skip("interpreter: the float64 zero-bias case covers the NaN pattern")
    m = MSHF(4).to(dtype)
    if zero_bias:
        with torch.no_grad():
            m.bias.zero_()
    results = []
    for backend in ("reference", impl):
        x = torch.full((2, 4, 9, 8), 0.5, dtype=dtype, requires_grad=True)
        w, b = (t.detach().clone().requires_grad_(True) for t in (m.weight, m.bias))
        with din_fast.use_backend(backend):
            y = ops.mshf(x, w, b)
            grads = torch.autograd.grad(y, (x, w, b), torch.linspace(-1, 1, y.numel(), dtype=dtype).view_as(y))
        results.append((y, *grads))
    for got, expected in zip(results[1], results[0]):
        assert torch.equal(torch.isnan(got), torch.isnan(expected))
        assert_close_to(got, expected.double(), dtype, 512)
    assert torch.isnan(results[0][1]).any() == zero_bias


def test_mshf_constant_input_gradient_follows_autograd_of_official_formula():
    """Constant input, analytic kernels, zero biases: the sqrt argument is 0 inside the image, where
    autograd of the official formula gives NaN (the forward stays finite). With the random biases
    of a real module the argument is positive and the gradient finite."""
    m = MSHF(4).double()
    with torch.no_grad():
        m.bias.zero_()
    x = torch.full((1, 4, 9, 9), 0.5, dtype=torch.float64, requires_grad=True)
    y = ops.reference.mshf(x, m.weight, m.bias)
    y.sum().backward()
    assert torch.isfinite(y).all()
    assert torch.isnan(x.grad[..., 4, 4]).all()
    m = MSHF(4).double()
    x.grad = None
    ops.reference.mshf(x, m.weight, m.bias).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("impl", ["cpp"])
def test_private_kernels_check_their_arguments(impl):
    skip_unless_runs("mshf", impl, torch.float64)
    x, w, b = mshf_args()
    fwd = getattr(torch.ops.din_fast, f"_mshf_{impl}")
    bwd = getattr(torch.ops.din_fast, f"_mshf_backward_{impl}")
    with pytest.raises(ValueError, match="float32 or float64"):
        fwd(x.half(), w.half(), b.half())
    with pytest.raises(ValueError, match="weight must have shape"):
        fwd(x, w[:, :, :3], b)
    with pytest.raises(ValueError, match="bias has dtype"):
        fwd(x, w, b.float())
    with pytest.raises(ValueError, match="x must not be empty"):
        fwd(x[:, :, :0], w, b)
    with pytest.raises(ValueError, match="grad must have shape"):
        bwd(torch.zeros(2, 2, 5, 7, dtype=torch.float64), x, w, b)


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_narrower_instruction_sets_match_reference(isa):
    """The cpp forward is compiled for AVX-512, AVX2 and the baseline and picks the widest the CPU has;
    DIN_FAST_CPU_ISA caps it, so a fresh process runs the narrower kernels here (float32 and float64,
    the block/group/width cases of SHAPES)."""
    skip_unless_runs("mshf", "cpp", torch.float64)
    code = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})
        import din_fast
        from impl_checks import check_forward
        from op_inputs import mshf_args
        assert din_fast._extension.build_info()["cpu_isa"] in ({isa!r}, "baseline")
        g = torch.Generator().manual_seed(3)
        for shape in {SHAPES!r}:
            args = mshf_args(generator=g, **shape)
            for dtype in (torch.float64, torch.float32):
                check_forward("mshf", "cpp", args, dtype)
        print("ok")
    """)
    env = dict(os.environ, DIN_FAST_CPU_ISA=isa)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


BAD_ARGUMENTS = [
    (lambda a: [a[0], a[1][:2], a[2]], "weight must have shape"),
    (lambda a: [a[0], a[1], a[2].float()], "bias has dtype"),
    (lambda a: [a[0][:, :, :0], a[1], a[2]], "x must not be empty"),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("mutate,message", BAD_ARGUMENTS)
def test_bad_arguments(route, backend, mutate, message):
    """Rejected by the public op, on every route and backend, with a ValueError naming the argument."""
    check_bad_arguments(OP, route, backend, mutate, message)
