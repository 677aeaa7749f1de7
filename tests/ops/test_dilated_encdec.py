"""The implementations of ``dilated_encdec`` (DeFiAN's DiEnDec + gate) against the float64 reference:
forward and every gradient, odd sizes, batches, layouts, bands that straddle the image border, images
smaller than the 14-pixel halo, gradcheck, opcheck and bad input. Triton runs on the GPU when there is
one, else in the interpreter on tiny shapes (each layer unrolls up to 216 taps, slow to interpret)."""

import pytest
import torch

import din_fast
from din_fast.ops import reference
from impl_checks import ROUTES, check_bad_arguments, impl_params, opcheck, relayout, runs_here
from op_inputs import cast, dilated_encdec_args, flat, rebuild, requiring_grad

OP = "dilated_encdec"


GPU = torch.cuda.is_available()
TRITON_DEVICE = "cuda" if GPU else "cpu"

IMPLS = impl_params(OP, "cpp")


def NEEDS_TRITON(test):
    """Marks a Triton test, skipped where Triton cannot run."""
    skip = pytest.mark.skipif(not runs_here(OP, "triton", TRITON_DEVICE), reason="Triton cannot run here")
    return pytest.mark.triton(skip(test))

# Each output is a chain of seven sums of up to 216 products: a few hundred roundings of the
# accumulation dtype (float32 for half inputs), relative to the size of the activations (O(1) with
# these inputs). Half-precision results are compared with the reference on the same rounded inputs,
# so what remains is the rounding of the half-precision outputs: two units in the last place.
TOL = {torch.float64: 1e-11, torch.float32: 2e-5, torch.float16: 2 * 2**-10, torch.bfloat16: 2 * 2**-7}

# (B, H, W): smaller than the halo in both directions, odd sizes, a batch, wider than a vector block.
SHAPES = [(1, 5, 7), (2, 13, 37), (3, 17, 6), (1, 30, 53)]


def _reference_grads(args, grad):
    ra = requiring_grad(args)
    return torch.autograd.grad(reference.dilated_encdec(*ra), flat(ra), grad)


def _check_against_reference(impl, args, dtype, seed=0, device="cpu"):
    """Forward and all 15 gradients of ``impl`` in ``dtype`` on ``device`` against the float64 reference
    (on the inputs rounded to ``dtype``)."""
    on_device = rebuild(args, [t.to(device, dtype) for t in flat(args)])
    args = cast(cast(args, dtype), torch.float64)
    expected = reference.dilated_encdec(*args)
    grad = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    grad = grad.to(dtype).double()
    expected_grads = _reference_grads(args, grad)
    fwd = din_fast.ops._library.OPS[OP].implementation(impl, backward=False)
    bwd = din_fast.ops._library.OPS[OP].implementation(impl, backward=True)
    got = fwd(*on_device)
    assert got.dtype == dtype and got.shape == expected.shape and got.device.type == device
    torch.testing.assert_close(got.cpu().double(), expected, rtol=TOL[dtype], atol=TOL[dtype])
    dh, dws, dbs = bwd(grad.to(device, dtype), *on_device)
    for name, g, e in zip(["dh"] + [f"dweights[{i}]" for i in range(7)] + [f"dbiases[{i}]" for i in range(7)],
                          [dh, *dws, *dbs], expected_grads):
        assert g.dtype == dtype and g.shape == e.shape, name
        # Weight gradients sum over every pixel: scale the tolerance by the gradient's magnitude.
        scale = max(1.0, e.abs().max().item())
        torch.testing.assert_close(g.cpu().double(), e, rtol=TOL[dtype], atol=TOL[dtype] * scale, msg=name)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_float64_reference(impl, dtype, shape):
    b, h, w = shape
    g = torch.Generator().manual_seed(h * 100 + w)
    _check_against_reference(impl, dilated_encdec_args(b=b, h=h, w=w, generator=g), dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("threads", [1, 2])
def test_bands_straddling_the_border(impl, threads):
    """A tall image is split into several bands (more than 128 rows, or one band per thread), so band
    halos cross band edges and the image's top and bottom borders."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(7)
        _check_against_reference(impl, dilated_encdec_args(b=1, h=301, w=5, generator=g), torch.float64)
        _check_against_reference(impl, dilated_encdec_args(b=1, h=29, w=3, generator=g), torch.float64)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("impl", IMPLS)
def test_inactive_units_have_zero_gradient(impl):
    """With negative biases most units are off (ReLU at or below 0): gradients still match."""
    g = torch.Generator().manual_seed(3)
    h, weights, biases = dilated_encdec_args(b=2, h=9, w=11, generator=g)
    biases = [b - 0.5 for b in biases]
    _check_against_reference(impl, [h, weights, biases], torch.float64)


@pytest.mark.parametrize("impl", IMPLS)
def test_layouts(impl):
    """channels_last and non-contiguous h and weights give the reference's values; the output keeps h's
    memory format."""
    g = torch.Generator().manual_seed(5)
    h, weights, biases = dilated_encdec_args(b=2, h=11, w=9, generator=g)
    expected = reference.dilated_encdec(h, weights, biases)
    strided_weights = [w.transpose(0, 1).contiguous().transpose(0, 1) for w in weights]
    for moved in (relayout(h, "channels_last"), relayout(h, "non_contiguous"),
                  torch.stack([h, -h], 2)[:, :, 0]):
        with din_fast.use_backend(impl):
            got = din_fast.ops.dilated_encdec(moved, strided_weights, biases)
        torch.testing.assert_close(got, expected, rtol=TOL[torch.float64], atol=TOL[torch.float64])
    with din_fast.use_backend(impl):
        got = din_fast.ops.dilated_encdec(relayout(h, "channels_last"), weights, biases)
    assert got.shape == (2, 1, 11, 9)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck(impl):
    """Full Jacobian with respect to h; random projections (fast mode) for all 6,871 parameters."""
    h, weights, biases = requiring_grad(dilated_encdec_args(b=2, h=4, w=5))
    with din_fast.use_backend(impl):
        assert torch.autograd.gradcheck(lambda x: din_fast.ops.dilated_encdec(x, weights, biases), [h])
        args = [h, weights, biases]
        assert torch.autograd.gradcheck(lambda *t: din_fast.ops.dilated_encdec(*rebuild(args, t)), flat(args),
                                        fast_mode=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    opcheck(OP, impl, requiring_grad(dilated_encdec_args(b=2, h=6, w=7)))


BAD = [
    (lambda a: [a[0][:, :2], a[1], a[2]], "h must have 3 channels"),
    (lambda a: [a[0][:, :, :0], a[1], a[2]], "h must not be empty"),
    (lambda a: [a[0][0], a[1], a[2]], r"h must have shape \(B, C, H, W\)"),
    (lambda a: [a[0], a[1][:6], a[2]], "weights must be a list of 7"),
    (lambda a: [a[0], a[1], a[2] + a[2][:1]], "biases must be a list of 7"),
    (lambda a: [a[0], a[1][:3] + [a[1][3].transpose(0, 1)] + a[1][4:], a[2]],
     r"weights\[3\] must have shape"),
    (lambda a: [a[0], a[1], a[2][:6] + [a[2][6][:0]]], r"biases\[6\] must have shape"),
    (lambda a: [a[0], a[1][:1] + [a[1][1].float()] + a[1][2:], a[2]], r"weights\[1\] has dtype"),
    (lambda a: [a[0].half(), [w.half() for w in a[1]], [b.half() for b in a[2]]], "float32 or float64"),
]


@pytest.mark.skipif(not runs_here(OP, "cpp"), reason="C++ kernels not built")
@pytest.mark.parametrize("mutate,message", BAD)
def test_cpp_kernel_rejects_bad_input(mutate, message):
    """The C++ kernels check their arguments themselves (they are reachable without the Python checks)."""
    args = mutate(dilated_encdec_args())
    with pytest.raises(ValueError, match=message):
        torch.ops.din_fast._dilated_encdec_cpp(*args)
    grad = torch.zeros(args[0].shape[0], 1, *args[0].shape[2:], dtype=args[0].dtype) if args[0].dim() == 4 \
        else torch.zeros(1)
    with pytest.raises(ValueError, match=message):
        torch.ops.din_fast._dilated_encdec_backward_cpp(grad, *args)


@pytest.mark.skipif(not runs_here(OP, "cpp"), reason="C++ kernels not built")
def test_cpp_backward_rejects_bad_grad():
    args = dilated_encdec_args(b=2, h=5, w=7)
    with pytest.raises(ValueError, match="grad must have shape"):
        torch.ops.din_fast._dilated_encdec_backward_cpp(torch.zeros(2, 3, 5, 7, dtype=torch.float64), *args)
    with pytest.raises(ValueError, match="grad has dtype"):
        torch.ops.din_fast._dilated_encdec_backward_cpp(torch.zeros(2, 1, 5, 7), *args)


@pytest.mark.parametrize("impl", IMPLS)
def test_device_mismatch_is_reported(impl):
    h, weights, biases = dilated_encdec_args()
    weights = weights[:6] + [weights[6].to("meta")]
    message = r"weights\[6\] is on meta but h is on cpu"
    with din_fast.use_backend(impl), pytest.raises(ValueError, match=message):
        din_fast.ops.dilated_encdec(h, weights, biases)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("mutate,message", [
    (lambda a: [a[0][:, :2], a[1], a[2]], "h must have 3 channels"),
    (lambda a: [a[0], a[1][:6], a[2]], "weights must be a list of 7"),
    (lambda a: [a[0], a[1][:3] + [a[1][3].transpose(0, 1)] + a[1][4:], a[2]],
     r"weights\[3\] must have shape \(24, 12, 3, 3\)"),
])
def test_bad_arguments(route, backend, mutate, message):
    """Rejected by the public op, on every route and backend, with a ValueError naming the argument."""
    check_bad_arguments(OP, route, backend, mutate, message)


# -- Triton ------------------------------------------------------------------------------------------

TRITON_CASES = [((1, 5, 7), torch.float64), ((2, 3, 4), torch.float32), ((1, 4, 6), torch.float16)]
if GPU:  # the interpreter cannot run bfloat16 (Triton stores it as raw bits there)
    TRITON_CASES += [(shape, dtype) for shape in SHAPES
                     for dtype in (torch.float32, torch.float16, torch.bfloat16)]


@NEEDS_TRITON
@pytest.mark.parametrize("shape,dtype", TRITON_CASES)
def test_triton_matches_float64_reference(shape, dtype):
    b, h, w = shape
    g = torch.Generator().manual_seed(h * 100 + w)
    args = dilated_encdec_args(b=b, h=h, w=w, generator=g)
    _check_against_reference("triton", args, dtype, device=TRITON_DEVICE)


@NEEDS_TRITON
@pytest.mark.skipif(not GPU, reason="gradcheck and opcheck run the op dozens of times: too slow to interpret")
def test_triton_gradcheck_and_opcheck():
    h, weights, biases = requiring_grad(dilated_encdec_args(b=2, h=4, w=5, device="cuda"))
    with din_fast.use_backend("triton"):
        assert torch.autograd.gradcheck(lambda x: din_fast.ops.dilated_encdec(x, weights, biases), [h])
        torch.library.opcheck(torch.ops.din_fast.dilated_encdec.default, [h, weights, biases])
