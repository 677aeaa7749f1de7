"""Shared checks of one op implementation (cpp, triton, cuda) against the float64 reference, used by the
per-op tests of tests/ops/ (one file per op) and the cross-op tables of tests/test_every_op.py.

``IMPLS`` are pytest params that skip with the backend's own reason where an implementation cannot run
here (e.g. triton without the interpreter). Tolerances are derived from the dtype: ``k`` machine
epsilons relative to the magnitude of the float64 reference result (``assert_close_to``), or, for the
kernels called directly (``check_kernels_against_reference``), from the length of the longest sum
(``summed_tol``).
"""

import math

import pytest
import torch

import din_fast
from din_fast import backends, ops
from din_fast.ops._library import _KERNEL_CHECKED, OPS
from op_inputs import ARGS, cast, flat, rebuild, requiring_grad

#: Implementations checked on CPU tensors (triton runs under TRITON_INTERPRET=1, set by conftest).
IMPLS = ("cpp", pytest.param("triton", marks=pytest.mark.triton))
#: Epsilons of forward error (a few dozen rounding steps per output) and of gradients, which sum
#: B·H·W terms per parameter.
FORWARD_EPS, GRAD_EPS = 64, 512


def skip_unless_runs(op: str, impl: str, dtype: torch.dtype) -> None:
    reason = backends.unavailable_reason(op, impl, "cpu", dtype)
    if reason is not None:
        pytest.skip(reason)


def runs_here(op: str, impl: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> bool:
    return backends.unavailable_reason(op, impl, device, dtype) is None


def impl_params(op: str, *impls: str) -> list:
    """pytest params of ``impls``, each skipped at collection where it cannot run ``op`` on CPU tensors
    (for tests that call an implementation directly, where ``skip_unless_runs`` would come too late)."""
    return [pytest.param(impl, marks=pytest.mark.skipif(not runs_here(op, impl),
                                                        reason=f"{impl} cannot run {op} here"))
            for impl in impls]


def assert_close_to(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, k: int) -> None:
    """|got − expected| ≤ k·eps(dtype)·(|expected| + max(1, max|expected|)), NaNs in the same places.

    The inputs are O(1) (tests/op_inputs.py), so the terms summed into a result are O(1) even where
    they cancel to a tiny value (e.g. a weight gradient summed over a batch): the absolute part of the
    tolerance is relative to at least 1."""
    eps = torch.finfo(dtype).eps
    scale = max(float(expected.detach().nan_to_num().abs().max()), 1.0)
    torch.testing.assert_close(got.to(expected.dtype), expected, rtol=k * eps, atol=k * eps * scale,
                               equal_nan=True)


def summed_tol(dtype: torch.dtype, terms: int) -> float:
    """Relative error bound: rounding the result to ``dtype`` (2 ulps) plus a sum of ``terms`` O(1)
    terms in the accumulation dtype (float64 for float64, else float32: a few ulps times sqrt(terms))."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return 2 * torch.finfo(dtype).eps + 8 * torch.finfo(acc).eps * math.sqrt(terms)


def assert_close_summed(got: torch.Tensor, expected64: torch.Tensor, dtype: torch.dtype, terms: int) -> None:
    assert got.dtype == dtype
    tol = summed_tol(dtype, terms)
    scale = max(expected64.abs().max().item(), 1.0)
    torch.testing.assert_close(got.double(), expected64, rtol=tol, atol=tol * scale)


def gradcheck(op: str, impl: str, args: list, fast: bool | None = None) -> bool:
    """float64 gradcheck of the public op with backend ``impl``. Under the Triton interpreter every call
    costs seconds, so there it checks random projections of the Jacobian (fast mode); ``fast`` overrides."""
    if fast is None:
        fast = impl == "triton" and not torch.cuda.is_available()
    with din_fast.use_backend(impl):
        return torch.autograd.gradcheck(lambda *t: getattr(ops, op)(*rebuild(args, t)), flat(args),
                                        fast_mode=fast)


def run(op: str, impl: str, args: list) -> torch.Tensor:
    """The public op with backend ``impl`` (routing, checks and memory-format handling included)."""
    with din_fast.use_backend(impl):
        return getattr(torch.ops.din_fast, op)(*args)


def opcheck(op: str, impl: str, args: list) -> None:
    """torch.library.opcheck of the public op with backend ``impl``."""
    with din_fast.use_backend(impl):
        torch.library.opcheck(getattr(torch.ops.din_fast, op).default, args)


def check_forward(op: str, impl: str, args64: list, dtype: torch.dtype) -> torch.Tensor:
    """The implementation on ``args64`` cast to ``dtype`` against the float64 reference."""
    expected = getattr(ops.reference, op)(*args64)
    args = cast(args64, dtype)
    got = run(op, impl, args)
    assert got.dtype == dtype and got.shape == expected.shape
    assert_close_to(got, expected, dtype, FORWARD_EPS)
    return got


def check_backward(op: str, impl: str, args64: list, dtype: torch.dtype, generator: torch.Generator) -> None:
    """Every gradient of the implementation (through autograd of the public op) against the
    reference's, for one random upstream gradient."""
    ref_args = requiring_grad(args64)
    out = getattr(ops.reference, op)(*ref_args)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=generator)
    expected = torch.autograd.grad(out, flat(ref_args), grad)
    args = requiring_grad(cast(args64, dtype))
    with din_fast.use_backend(impl):
        got = torch.autograd.grad(getattr(ops, op)(*args), flat(args), grad.to(dtype))
    for g, e in zip(got, expected):
        assert g.dtype == dtype
        assert_close_to(g, e, dtype, GRAD_EPS)


def check_forward_and_backward(op: str, impl: str, dtype: torch.dtype, shapes: list, seed: int) -> None:
    """``check_forward`` and ``check_backward`` on ``ARGS[op]`` at each of ``shapes`` (builder keyword
    arguments), all drawn from one generator seeded ``seed``; skipped where ``impl`` cannot run."""
    skip_unless_runs(op, impl, dtype)
    g = torch.Generator().manual_seed(seed)
    for shape in shapes:
        args = ARGS[op](generator=g, **shape)
        check_forward(op, impl, args, dtype)
        check_backward(op, impl, args, dtype, g)


def relayout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in memory layout ``layout``: "contiguous" (``t`` itself), "channels_last" or
    "non_contiguous" (W-major strides, neither NCHW nor NHWC)."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "non_contiguous":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t


def relayouts(t: torch.Tensor) -> dict:
    """The same values as channels_last and as a non-contiguous (W-major) view."""
    return {layout: relayout(t, layout) for layout in ("channels_last", "non_contiguous")}


def with_layouts(args: list, layouts: tuple) -> list:
    """``args`` with feature map i (the inputs of the first input's shape) in ``layouts[i % len(layouts)]``
    (mixes layouts between inputs); a 1x1 map stays as it is unless non-contiguous."""
    tensors = flat(args)
    first = tensors[0]
    maps = [i for i, t in enumerate(tensors) if t.shape == first.shape]
    for n, i in enumerate(maps):
        t, layout = tensors[i], layouts[n % len(layouts)]
        if t.dim() == 4 and (t.shape[2] * t.shape[3] != 1 or layout == "non_contiguous"):
            tensors[i] = relayout(t, layout)
    return rebuild(args, tensors)


# -- the kernels called directly (FusedOp.implementation): no Python check in front ---------------------

def check_kernels_against_reference(op: str, impl: str, dtype: torch.dtype, shape: dict, layouts: tuple,
                                    terms: int) -> None:
    """Forward and every gradient of ``impl`` in ``dtype`` against the float64 reference evaluated on
    the same (dtype-rounded) inputs, the feature maps in ``layouts`` (``with_layouts``); ``terms``: the
    length of the longest reduction in the op's forward/backward (bounds the rounding error). Through the
    public op the output keeps the first input's memory format."""
    args64 = cast(cast(ARGS[op](**shape), dtype), torch.float64)
    fused = OPS[op]
    expected = fused.reference(*args64)
    grad64 = torch.randn_like(expected).to(dtype).double()
    expected_grads = flat(list(fused.reference_backward(grad64, *args64)))

    args = with_layouts(cast(args64, dtype), layouts)
    out = fused.implementation(impl, backward=False)(*args)
    assert_close_summed(out, expected, dtype, terms)
    grads = flat(list(fused.implementation(impl, backward=True)(grad64.to(dtype), *args)))
    assert len(grads) == len(expected_grads)
    for g, e in zip(grads, expected_grads):
        assert g.shape == e.shape
        assert_close_summed(g, e, dtype, terms)
    with din_fast.use_backend(impl):
        public = getattr(torch.ops.din_fast, op)(*args)
    first = flat(args)[0]
    if (first.dim() == 4 and not first.is_contiguous()
            and first.is_contiguous(memory_format=torch.channels_last)):
        assert public.is_contiguous(memory_format=torch.channels_last)
    else:
        assert public.is_contiguous()
    torch.testing.assert_close(public, out, rtol=0, atol=0)


def check_kernel_rejects(op: str, impl: str, backward: bool, mutate, message: str) -> None:
    """Called directly (no Python check in front), the implementation names the bad argument."""
    args = mutate(ARGS[op]())
    fn = OPS[op].implementation(impl, backward)
    if backward:
        first = flat(ARGS[op]())[0]
        args = [torch.zeros_like(first)] + args
    with pytest.raises(ValueError, match=message):
        fn(*args)


def check_kernel_rejects_unsupported_dtype_and_bad_grad(op: str, impl: str) -> None:
    fused = OPS[op]
    if impl == "cpp":  # float16 is a GPU dtype; the CPU kernels say so instead of failing in dispatch
        with pytest.raises(ValueError, match="float32 or float64"):
            fused.implementation(impl, False)(*cast(ARGS[op](), torch.float16))
    args = ARGS[op]()
    first = flat(args)[0]
    with pytest.raises(ValueError, match="grad must have shape"):
        fused.implementation(impl, True)(first[:, :, :2], *args)


# -- the public op's argument checks --------------------------------------------------------------------

#: How a bad argument list reaches the checks: the Python wrapper (din_fast.ops) or torch.ops.din_fast.
ROUTES = ["functional", "op"]


def check_bad_arguments(op: str, route: str, backend: str, mutate, message: str) -> None:
    """``mutate`` of valid arguments raises a ValueError matching ``message`` on ``route`` and ``backend``."""
    args = mutate(ARGS[op]())
    fn = getattr(din_fast.ops, op) if route == "functional" else getattr(torch.ops.din_fast, op)
    with din_fast.use_backend(backend), pytest.raises(ValueError, match=message):
        fn(*args)


def check_device_mismatch_is_reported(op: str) -> None:
    args = ARGS[op]()
    tensors = flat(args)
    tensors[1] = tensors[1].to("meta")
    with pytest.raises(ValueError, match="is on meta"):
        getattr(din_fast.ops, op)(*rebuild(args, tensors))


def check_public_call_checks_arguments_once(op: str, backend: str, monkeypatch) -> None:
    """The wrapper checks, and the router it calls does not check again (the check is a large part
    of an op call at DIN's small shapes); forward and backward each check once. On the eager fast path
    an implementation in ``_KERNEL_CHECKED`` checks in C++ instead, so the Python check does not run
    (tests/test_every_op.py::test_kernel_checks_cover_python_checks holds those kernels' checks to the
    Python ones)."""
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


def check_router_still_checks_direct_calls(op: str, mutate, message: str) -> None:
    """After a checked call through the wrapper, direct torch.ops calls (forward and backward) are checked."""
    good = ARGS[op]()
    getattr(din_fast.ops, op)(*good)
    bad = mutate(ARGS[op]())
    with pytest.raises(ValueError, match=message):
        getattr(torch.ops.din_fast, op)(*bad)
    with pytest.raises(ValueError, match=message):
        getattr(torch.ops.din_fast, f"{op}_backward")(torch.zeros_like(flat(good)[0]), *bad)


# -- the C++ kernels' own checks (attention ops) --------------------------------------------------------

def check_cpp_layouts_match_contiguous(op: str) -> None:
    """channels_last and non-contiguous feature maps give the contiguous inputs' values and gradients bit
    for bit through the cpp implementation; channels_last stays channels_last."""
    skip_unless_runs(op, "cpp", torch.float32)
    args = ARGS[op](b=2, h=6, w=5, dtype=torch.float32)
    expected = run(op, "cpp", args)
    plain = requiring_grad(args)
    want = torch.autograd.grad(run(op, "cpp", plain), flat(plain), torch.ones_like(expected))
    for layout in ("channels_last", "non_contiguous"):
        moved = rebuild(args, [relayout(t, layout) if t.dim() == 4 and t.shape[2:] == expected.shape[2:]
                               else t for t in flat(args)])
        got = run(op, "cpp", moved)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        if layout == "channels_last":
            assert got.is_contiguous(memory_format=torch.channels_last)
        inputs = requiring_grad(moved)
        grads = torch.autograd.grad(run(op, "cpp", inputs), flat(inputs), torch.ones_like(expected))
        for got_grad, want_grad in zip(grads, want):
            torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=0)


def check_cpp_kernel_rejects(op: str, mutate, message: str) -> None:
    """The private C++ op ``_<op>_cpp`` checks its inputs itself (ValueError naming the argument)."""
    skip_unless_runs(op, "cpp", torch.float64)
    args = mutate(ARGS[op]())
    with pytest.raises(ValueError, match=message):
        getattr(torch.ops.din_fast, f"_{op}_cpp")(*args)
