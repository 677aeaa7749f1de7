"""Bad arguments to every op raise a ValueError that names the argument, on every route."""

import pytest
import torch

import din_fast
from din_fast import backends
from din_fast.ops._library import _KERNEL_CHECKED, OPS
from op_inputs import ARGS, flat, rebuild


def _routes():
    return ["functional", "op"]


def _call(route, op, args):
    fn = getattr(din_fast.ops, op) if route == "functional" else getattr(torch.ops.din_fast, op)
    return fn(*args)


CASES = [
    ("asyca", lambda a: [a[0], a[1][:, :, :4]] + a[2:], "x2 must have shape"),
    ("asyca", lambda a: [a[0], a[1].float()] + a[2:], "x2 has dtype"),
    ("asyca", lambda a: [a[0], a[1], a[2][:, :-1]] + a[3:], "w_init must have shape"),
    ("asyca", lambda a: a[:7] + [a[7][:-1]], "b_ic must have shape"),
    ("asyca", lambda a: [a[0][:, :, :0], a[1][:, :, :0]] + a[2:], "x1 must not be empty"),
    ("asyca", lambda a: [a[0][0], a[1][0]] + a[2:], r"x1 must have shape \(B, C, H, W\)"),
    ("asyca", lambda a: [a[0].long(), a[1].long()] + a[2:], "x1 must be a floating tensor"),
    ("dwc_sum", lambda a: [[], a[1][:0], a[2]], "non-empty list"),
    ("dwc_sum", lambda a: [a[0], a[1][:2], a[2]], r"weight must have shape \(3, 8\)"),
    ("dwc_sum", lambda a: [a[0][:2] + [a[0][2][:1]], a[1], a[2]], r"inputs\[2\] must have shape"),
    ("dwc_sum", lambda a: [a[0], a[1], a[2][:3]], "bias must have shape"),
    ("mshf", lambda a: [a[0], a[1][:2], a[2]], "weight must have shape"),
    ("mshf", lambda a: [a[0], a[1], a[2].float()], "bias has dtype"),
    ("mshf", lambda a: [a[0][:, :, :0], a[1], a[2]], "x must not be empty"),
    ("dilated_encdec", lambda a: [a[0][:, :2], a[1], a[2]], "h must have 3 channels"),
    ("dilated_encdec", lambda a: [a[0], a[1][:6], a[2]], "weights must be a list of 7"),
    ("dilated_encdec", lambda a: [a[0], a[1][:3] + [a[1][3].transpose(0, 1)] + a[1][4:], a[2]],
     r"weights\[3\] must have shape \(24, 12, 3, 3\)"),
    ("dac_gate", lambda a: [a[0], a[1], a[2].expand(-1, 16, -1, -1)] + a[3:], "v must have shape"),
    ("dac_gate", lambda a: [a[0][:, :, :1, :1], a[1][:, :, :1, :1], a[2][:, :, :1, :1]] + a[3:], "H\\*W > 1"),
    ("dac_gate", lambda a: [a[0], a[1][:1]] + a[2:], "r must have shape"),
    ("dac_gate", lambda a: a[:6] + [a[6][:, :, :, :0]], "w_std2 must have shape"),
    ("criss_cross_attention", lambda a: [a[0], a[1][:, :2], a[2]], "k must have shape"),
    ("criss_cross_attention", lambda a: [a[0], a[1], a[2][:, :, :4]], "v must have shape"),
    ("criss_cross_attention", lambda a: [a[0], a[1], a[2][:1]], "v must have shape"),
    ("criss_cross_attention", lambda a: [a[0], a[1], a[2].float()], "v has dtype"),
    ("criss_cross_attention", lambda a: [a[0][:, :0], a[1][:, :0], a[2]], "q must not be empty"),
    ("criss_cross_attention", lambda a: [a[0][0], a[1][0], a[2]], r"q must have shape \(B, C, H, W\)"),
    ("criss_cross_attention", lambda a: [a[0], a[1], a[2].long()], "v must be a floating tensor"),
    ("channel_attention_residual", lambda a: [a[0], a[1][:, :, :3]] + a[2:], "t must have shape"),
    ("channel_attention_residual", lambda a: [a[0], a[1].float()] + a[2:], "t has dtype"),
    ("channel_attention_residual", lambda a: a[:2] + [a[2][:, :8]] + a[3:], r"w1 must have shape \(2, 16"),
    ("channel_attention_residual", lambda a: a[:4] + [a[4][:, :1]] + a[5:], r"w2 must have shape \(16, 2, 1, 1\)"),
    ("channel_attention_residual", lambda a: a[:5] + [a[5][:3]], "b2 must have shape"),
    ("channel_attention_residual", lambda a: [a[0][:, :, :0], a[1][:, :, :0]] + a[2:], "u must not be empty"),
    ("channel_spatial_attention", lambda a: [a[0], a[1][:, :, :3]] + a[2:], "skip must have shape"),
    ("channel_spatial_attention", lambda a: [a[0], a[1], a[2][:, :8]] + a[3:], r"w_ca1 must have shape \(1, 16"),
    ("channel_spatial_attention", lambda a: a[:5] + [a[5][:3]] + a[6:], "b_ca2 must have shape"),
    ("channel_spatial_attention", lambda a: a[:6] + [a[6][:, :, :5, :5], a[7]], r"w_sa must have shape \(1, 2, 7, 7\)"),
    ("channel_spatial_attention", lambda a: a[:7] + [a[7].float()], "b_sa has dtype"),
    ("channel_spatial_attention", lambda a: [a[0][:, :, :0], a[1][:, :, :0]] + a[2:], "x must not be empty"),
]


@pytest.mark.parametrize("route", _routes())
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("op,mutate,message", CASES)
def test_bad_arguments(route, backend, op, mutate, message):
    args = mutate(ARGS[op]())
    with din_fast.use_backend(backend), pytest.raises(ValueError, match=message):
        _call(route, op, args)


def _mutations(args):
    """Systematic bad variants of a valid argument list: each tensor in turn with the other float dtype,
    one element fewer along each dim, an extra or a missing leading dim, a non-tensor in its place; each
    list argument one element shorter and one longer."""
    tensors = flat(args)
    for i, t in enumerate(tensors):
        variants = [t.to(torch.float32 if t.dtype == torch.float64 else torch.float64), t[None], t[0], 1.0]
        variants += [t.narrow(d, 0, t.shape[d] - 1) for d in range(t.dim())]
        for v in variants:
            yield rebuild(args, tensors[:i] + [v] + tensors[i + 1:])
    for j, a in enumerate(args):
        if isinstance(a, list):
            yield args[:j] + [a[:-1]] + args[j + 1:]
            yield args[:j] + [a + a[:1]] + args[j + 1:]


@pytest.mark.parametrize("op", sorted(ARGS))
def test_kernel_checks_cover_python_checks(op):
    """The eager fast path skips the Python check for kernels in ``_KERNEL_CHECKED`` (FusedOp.__call__):
    on every argument list the Python check rejects, those kernels (forward and backward) must raise
    too, and the public op must raise the Python check's own ValueError."""
    fused = OPS[op]
    args = ARGS[op]()
    grad = torch.ones(fused.output_shape(*args), dtype=torch.float64)
    impls = [impl for impl in _KERNEL_CHECKED if backends.unavailable_reason(op, impl, "cpu", torch.float64) is None]
    if not impls:
        pytest.skip("no kernel-checked implementation is built for this op")
    rejected = 0
    for bad in _mutations(args):
        try:
            fused.check(*bad)
            continue
        except ValueError as e:
            message = str(e)
        rejected += 1
        for impl in impls:
            with pytest.raises(Exception):
                fused.implementation(impl, backward=False)(*bad)
            with pytest.raises(Exception):
                fused.implementation(impl, backward=True)(grad, *bad)
        with pytest.raises(ValueError) as raised:
            getattr(din_fast.ops, op)(*bad)
        assert str(raised.value) == message
    assert rejected >= len(flat(args))  # the mutations did exercise the check
