"""The eager fast path of ``din_fast.ops.<name>`` (FusedOp.__call__ calling the implementation directly,
with its own autograd node) against the dispatcher path (``torch.ops.din_fast.<name>``): the same values
bit for bit, the same gradients, the same memory formats; and the cases that must leave the fast path
(dispatch modes, fake tensors) still work through the dispatcher."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import din_fast
from din_fast import backends
from din_fast.backends import op_names
from din_fast.ops._library import memory_format_of
from op_inputs import ARGS, flat, rebuild, requiring_grad

OPS = op_names()


def _skip_unless_cpp(op: str) -> None:
    reason = backends.unavailable_reason(op, "cpp", "cpu", torch.float64)
    if reason is not None:
        pytest.skip(reason)


def _relayout(args, layout: str):
    """Feature maps (4-D tensors of the first input's shape) in ``layout``; "mixed" alternates
    channels_last and a non-contiguous (transposed) view between them."""
    tensors = flat(args)
    shape = tensors[0].shape
    n = 0
    for i, t in enumerate(tensors):
        if t.dim() == 4 and t.shape == shape:
            kind = layout if layout != "mixed" else ("channels_last", "transposed")[n % 2]
            if kind == "channels_last":
                tensors[i] = t.contiguous(memory_format=torch.channels_last)
            elif kind == "transposed":
                tensors[i] = t.transpose(2, 3).contiguous().transpose(2, 3)
            n += 1
    return rebuild(args, tensors)


def _formats(ts):
    return [(t.is_contiguous(), t.is_contiguous(memory_format=torch.channels_last)) for t in ts]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "mixed"])
@pytest.mark.parametrize("op", OPS)
def test_fast_path_matches_dispatcher_path(op, layout):
    _skip_unless_cpp(op)
    args = _relayout(ARGS[op](), layout)
    fast_fn, dispatch_fn = getattr(din_fast.ops, op), getattr(torch.ops.din_fast, op)
    with torch.no_grad():
        fast, slow = fast_fn(*args), dispatch_fn(*args)
    torch.testing.assert_close(fast, slow, rtol=0, atol=0)
    assert _formats([fast]) == _formats([slow])
    leaves = requiring_grad(args)
    out = fast_fn(*leaves)
    assert out.grad_fn is not None and "EagerAutograd" in type(out.grad_fn).__name__
    grad = torch.randn_like(out)
    fast_grads = torch.autograd.grad(out, flat(leaves), grad)
    slow_grads = torch.autograd.grad(dispatch_fn(*leaves), flat(leaves), grad)
    for f, s in zip(fast_grads, slow_grads):
        torch.testing.assert_close(f, s, rtol=0, atol=0)
    assert _formats(fast_grads) == _formats(slow_grads)
    # the contract: each gradient in its input's format (non-contiguous inputs: contiguous)
    assert all(g.is_contiguous(memory_format=memory_format_of(t)) for g, t in zip(fast_grads, flat(leaves)))


def test_fast_path_without_grad_builds_no_graph():
    _skip_unless_cpp("dwc_sum")
    args = ARGS["dwc_sum"]()
    assert din_fast.ops.dwc_sum(*args).grad_fn is None  # nothing requires grad
    leaves = requiring_grad(args)
    with torch.no_grad():
        assert not din_fast.ops.dwc_sum(*leaves).requires_grad


def test_fast_path_follows_backend_switches():
    """The fast path's per-(device, dtype, backend) route cache: after a cpp call, switching the backend
    switches the implementation (the reference builds a plain autograd graph), and back again."""
    _skip_unless_cpp("dwc_sum")
    leaves = requiring_grad(ARGS["dwc_sum"]())

    def node():
        return type(din_fast.ops.dwc_sum(*leaves).grad_fn).__name__

    assert "EagerAutograd" in node()
    with din_fast.use_backend("reference"):
        assert "EagerAutograd" not in node()
    assert "EagerAutograd" in node()
    with din_fast.use_backend("cuda"), pytest.raises(RuntimeError, match="cannot run dwc_sum"):
        din_fast.ops.dwc_sum(*leaves)  # explicit backend that cannot run here: raises every time
    assert "EagerAutograd" in node()


def test_fast_path_refuses_double_backward():
    """create_graph=True still gives the first-order gradients; differentiating them again raises."""
    _skip_unless_cpp("dwc_sum")
    leaves = requiring_grad(ARGS["dwc_sum"]())
    out = din_fast.ops.dwc_sum(*leaves)
    (g,) = torch.autograd.grad(out.square().sum(), [leaves[1]], create_graph=True)
    (plain,) = torch.autograd.grad(din_fast.ops.dwc_sum(*leaves).square().sum(), [leaves[1]])
    torch.testing.assert_close(g, plain, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        g.sum().backward()


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_dispatch_mode_sees_the_public_op():
    """Under a dispatch mode the call takes the dispatcher, so the mode sees din_fast::dwc_sum."""
    _skip_unless_cpp("dwc_sum")
    args = ARGS["dwc_sum"]()
    with _Recorder() as rec:
        out = din_fast.ops.dwc_sum(*args)
    assert "din_fast.dwc_sum.default" in rec.ops
    torch.testing.assert_close(out, din_fast.ops.reference.dwc_sum(*args))


def test_fake_tensors_take_the_dispatcher():
    from torch._subclasses.fake_tensor import FakeTensorMode

    _skip_unless_cpp("dwc_sum")
    with FakeTensorMode() as mode:
        args = rebuild(ARGS["dwc_sum"](), [mode.from_tensor(t) for t in flat(ARGS["dwc_sum"]())])
        out = din_fast.ops.dwc_sum(*args)
    assert out.shape == args[0][0].shape and type(out).__name__ == "FakeTensor"

