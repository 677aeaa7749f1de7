"""The DIN kernels (``asyca``, ``dwc_sum``): every implementation that can run here against the float64
reference, forward and backward (every gradient), on awkward shapes and layouts; gradcheck and
opcheck through each implementation; bad input rejected by the kernels themselves."""

import math

import pytest
import torch

import din_fast
from din_fast import backends
from din_fast.ops._library import _KERNEL_CHECKED, OPS
from op_inputs import ARGS, GRAD_SHAPES, flat, rebuild, requiring_grad

DIN_OPS = ("asyca", "dwc_sum")


def _runnable(impl: str) -> bool:
    return all(backends.unavailable_reason(op, impl, "cpu", torch.float32) is None for op in DIN_OPS)


def _impls(*names):
    return [pytest.param(impl, marks=pytest.mark.skipif(not _runnable(impl), reason=f"{impl} cannot run here"))
            for impl in names]


#: The implementations that run on CPU tensors here; Triton runs in the interpreter (slow, so it gets
#: its own, smaller cases below).
IMPLS = _impls("cpp")
TRITON = _impls("triton")

#: Shapes with odd H and W, B > 1 and C not a multiple of 8 (nor of the SIMD width).
SHAPES = {"asyca": [dict(b=3, c=12, h=7, w=9, reduction=4), dict(b=2, c=5, h=1, w=13, reduction=5)],
          "dwc_sum": [dict(k=4, b=3, c=13, h=7, w=9), dict(k=1, b=2, c=5, h=5, w=1),
                      dict(k=6, b=1, c=3, h=33, w=37),
                      # the C++ kernel's other k-specialised loops (2, 3, 5) and its any-k loops (k > 6)
                      dict(k=2, b=2, c=3, h=5, w=7), dict(k=3, b=1, c=6, h=9, w=3),
                      dict(k=5, b=2, c=17, h=4, w=5), dict(k=7, b=2, c=5, h=3, w=11)]}


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout (feature maps only)."""
    if t.dim() != 4 or t.shape[2] * t.shape[3] == 1 and layout != "transposed":
        return t
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":  # non-contiguous, neither NCHW nor NHWC
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t


def _feature_maps(args):
    """Indices (into flat(args)) of the (B, C, H, W) inputs."""
    first = flat(args)[0]
    return [i for i, t in enumerate(flat(args)) if t.shape == first.shape]


def _relayout(op, args, layouts):
    """args with feature map i in layouts[i % len(layouts)] (mixes layouts between inputs)."""
    maps = _feature_maps(args)
    tensors = flat(args)
    for n, i in enumerate(maps):
        tensors[i] = _layout(tensors[i], layouts[n % len(layouts)])
    return rebuild(args, tensors)


def _tol(dtype: torch.dtype, terms: int) -> float:
    """Relative error bound: rounding the result to ``dtype`` (2 ulps) plus a sum of ``terms`` O(1)
    terms in the accumulation dtype (float64 for float64, else float32: a few ulps times sqrt(terms))."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return 2 * torch.finfo(dtype).eps + 8 * torch.finfo(acc).eps * math.sqrt(terms)


def _assert_close(got, expected64, dtype, terms):
    assert got.dtype == dtype
    tol = _tol(dtype, terms)
    scale = max(expected64.abs().max().item(), 1.0)
    torch.testing.assert_close(got.double(), expected64, rtol=tol, atol=tol * scale)


def _cast(args, dtype):
    return rebuild(args, [t.to(dtype) for t in flat(args)])


def _terms(op, shape):
    """Length of the longest reduction in the op's forward/backward (bounds the rounding error)."""
    hw_b = shape["b"] * shape["h"] * shape["w"]
    return hw_b * 4 * shape["c"] if op == "asyca" else hw_b * shape["k"]


CASES = [(op, i, layouts) for op in DIN_OPS for i in range(len(SHAPES[op]))
         for layouts in (("contiguous",), ("channels_last",), ("transposed",), ("channels_last", "contiguous"))]


def _check_against_reference(impl, dtype, op, shape, layouts):
    """Forward and every gradient of ``impl`` in ``dtype`` against the float64 reference evaluated on
    the same (dtype-rounded) inputs."""
    args64 = _cast(_cast(ARGS[op](**shape), dtype), torch.float64)
    fused = OPS[op]
    expected = fused.reference(*args64)
    grad64 = torch.randn_like(expected).to(dtype).double()
    expected_grads = flat(list(fused.reference_backward(grad64, *args64)))

    args = _relayout(op, _cast(args64, dtype), layouts)
    out = fused.implementation(impl, backward=False)(*args)
    _assert_close(out, expected, dtype, _terms(op, shape))
    grads = flat(list(fused.implementation(impl, backward=True)(grad64.to(dtype), *args)))
    assert len(grads) == len(expected_grads)
    for g, e in zip(grads, expected_grads):
        assert g.shape == e.shape
        _assert_close(g, e, dtype, _terms(op, shape))
    # Through the public op the output keeps the first input's memory format.
    with din_fast.use_backend(impl):
        public = getattr(torch.ops.din_fast, op)(*args)
    first = flat(args)[0]
    if first.dim() == 4 and not first.is_contiguous() and first.is_contiguous(memory_format=torch.channels_last):
        assert public.is_contiguous(memory_format=torch.channels_last)
    else:
        assert public.is_contiguous()
    torch.testing.assert_close(public, out, rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("op,shape_index,layouts", CASES)
def test_forward_and_backward_match_float64_reference(impl, dtype, op, shape_index, layouts):
    _check_against_reference(impl, dtype, op, SHAPES[op][shape_index], layouts)


#: Interpreter-sized cases: odd sizes, B > 1, C not a power of two; k = 7 > 6 runs dwc_sum in two chunks.
TRITON_SHAPES = {"asyca": [dict(b=2, c=5, h=3, w=5, reduction=5)],
                 "dwc_sum": [dict(k=3, b=2, c=5, h=3, w=5), dict(k=7, b=1, c=3, h=2, w=3)]}


@pytest.mark.triton
@pytest.mark.parametrize("impl", TRITON)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layouts", [("contiguous",), ("channels_last", "transposed")])
@pytest.mark.parametrize("op,shape_index", [(op, i) for op in DIN_OPS for i in range(len(TRITON_SHAPES[op]))])
def test_triton_matches_float64_reference(impl, dtype, layouts, op, shape_index):
    _check_against_reference(impl, dtype, op, TRITON_SHAPES[op][shape_index], layouts)


@pytest.mark.parametrize("impl", IMPLS + TRITON)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_asyca_same_tensor_twice(impl, layout):
    """DIN's first node of each branch: x1 is x2, the output is x1 and gradients flow to it twice."""
    x, _, *params = ARGS["asyca"](b=2, c=6, h=3, w=5)
    x = _layout(x, layout)
    fused = OPS["asyca"]
    out = fused.implementation(impl, backward=False)(x, x, *params)
    torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(x)
    expected = fused.reference_backward(g, x, x, *params)
    got = fused.implementation(impl, backward=True)(g, x, x, *params)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", DIN_OPS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck(impl, op, layout):
    args = requiring_grad(_relayout(op, ARGS[op](**GRAD_SHAPES[op]), (layout,)))
    fn = getattr(din_fast.ops, op)
    with din_fast.use_backend(impl):
        assert torch.autograd.gradcheck(lambda *t: fn(*rebuild(args, t)), flat(args))


@pytest.mark.parametrize("impl", IMPLS + TRITON)
@pytest.mark.parametrize("op", DIN_OPS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(impl, op, layout):
    args = requiring_grad(_relayout(op, ARGS[op](**GRAD_SHAPES[op]), (layout,)))
    with din_fast.use_backend(impl):
        torch.library.opcheck(getattr(torch.ops.din_fast, op).default, args)


BAD = [
    ("asyca", lambda a: [a[0], a[1][:, :, :4]] + a[2:], "x2 must have shape"),
    ("asyca", lambda a: [a[0], a[1].float()] + a[2:], "x2 has dtype"),
    ("asyca", lambda a: [a[0], a[1], a[2][:, :-1]] + a[3:], "w_init must have shape"),
    ("asyca", lambda a: a[:4] + [a[4][:, :-1]] + a[5:], "w_dc must have shape"),
    ("asyca", lambda a: a[:5] + [a[5][:-1]] + a[6:], "b_dc must have shape"),
    ("asyca", lambda a: a[:6] + [a[6][:-1]] + a[7:], "w_ic must have shape"),
    ("asyca", lambda a: a[:7] + [a[7][:-1]], "b_ic must have shape"),
    ("asyca", lambda a: [a[0][:, :, :0], a[1][:, :, :0]] + a[2:], "x1 must not be empty"),
    ("asyca", lambda a: [a[0][0], a[1][0]] + a[2:], r"x1 must have shape \(B, C, H, W\)"),
    ("dwc_sum", lambda a: [[], a[1][:0], a[2]], "non-empty list"),
    ("dwc_sum", lambda a: [a[0], a[1][:2], a[2]], r"weight must have shape [(\[]3, 8"),
    ("dwc_sum", lambda a: [a[0][:2] + [a[0][2][:1]], a[1], a[2]], r"inputs\[2\] must have shape"),
    ("dwc_sum", lambda a: [a[0][:1] + [a[0][1].float()] + a[0][2:], a[1], a[2]], r"inputs\[1\] has dtype"),
    ("dwc_sum", lambda a: [a[0], a[1], a[2][:3]], "bias must have shape"),
    ("dwc_sum", lambda a: [[t[:, :, :, :0] for t in a[0]], a[1], a[2]], r"inputs\[0\] must not be empty"),
]


@pytest.mark.parametrize("impl", IMPLS + TRITON)
@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("op,mutate,message", BAD)
def test_kernels_reject_bad_input(impl, backward, op, mutate, message):
    """Called directly (no Python check in front), each implementation names the bad argument."""
    args = mutate(ARGS[op]())
    fn = OPS[op].implementation(impl, backward)
    if backward:
        first = flat(ARGS[op]())[0]
        args = [torch.zeros_like(first)] + args
    with pytest.raises(ValueError, match=message):
        fn(*args)


@pytest.mark.parametrize("impl", IMPLS + TRITON)
@pytest.mark.parametrize("op", DIN_OPS)
def test_kernels_reject_unsupported_dtype_and_bad_grad(impl, op):
    fused = OPS[op]
    if impl == "cpp":  # float16 is a GPU dtype; the CPU kernels say so instead of failing in dispatch
        with pytest.raises(ValueError, match="float32 or float64"):
            fused.implementation(impl, False)(*_cast(ARGS[op](), torch.float16))
    args = ARGS[op]()
    first = flat(args)[0]
    with pytest.raises(ValueError, match="grad must have shape"):
        fused.implementation(impl, True)(first[:, :, :2], *args)


@pytest.mark.parametrize("op", DIN_OPS)
def test_device_mismatch_is_reported(op):
    args = ARGS[op]()
    tensors = flat(args)
    tensors[1] = tensors[1].to("meta")
    with pytest.raises(ValueError, match="is on meta"):
        getattr(din_fast.ops, op)(*rebuild(args, tensors))



@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("op", DIN_OPS)
def test_public_call_checks_arguments_once(op, backend, monkeypatch):
    """The wrapper checks, and the router it calls does not check again (the check is a large part
    of an op call at DIN's small shapes); forward and backward each check once. On the eager fast path
    an implementation in ``_KERNEL_CHECKED`` checks in C++ instead, so the Python check does not run
    (test_op_errors.py holds those kernels' checks to the Python ones)."""
    fused = OPS[op]
    calls = []
    check = fused.check
    monkeypatch.setattr(fused, "check", lambda *a: calls.append(1) or check(*a))
    args = requiring_grad(ARGS[op]())
    with din_fast.use_backend(backend):
        expected = 0 if backends.resolve(op, torch.device("cpu"), torch.float64) in _KERNEL_CHECKED else 1
        out = getattr(din_fast.ops, op)(*args)
        assert len(calls) == expected
        out.sum().backward()
        assert len(calls) == expected


@pytest.mark.parametrize("op,mutate,message", [BAD[0], BAD[11]])
def test_router_still_checks_direct_calls(op, mutate, message):
    """After a checked call through the wrapper, direct torch.ops calls (forward and backward) are checked."""
    good = ARGS[op]()
    getattr(din_fast.ops, op)(*good)
    bad = mutate(ARGS[op]())
    with pytest.raises(ValueError, match=message):
        getattr(torch.ops.din_fast, op)(*bad)
    with pytest.raises(ValueError, match=message):
        getattr(torch.ops.din_fast, f"{op}_backward")(torch.zeros_like(flat(good)[0]), *bad)
