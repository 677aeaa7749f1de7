"""The eager fast path of ``din_fast.ops.<name>`` (FusedOp.__call__ calling the implementation directly,
with its own autograd node) against the dispatcher path (``torch.ops.din_fast.<name>``): the same values
bit for bit, the same gradients, the same memory formats; and the cases that must leave the fast path
(dispatch modes, fake tensors) still work through the dispatcher."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import din_fast
from din_fast import backends
from din_fast.ops import _library
from din_fast.op_contract import memory_format_of
from op_inputs import ARGS, flat, rebuild, requiring_grad

OPS = sorted(_library.OPS)  # the FusedOp ops (dense_block has its own tests)


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



# -- the C++ eager path (din_fast._C.eager_call, csrc/eager_autograd.cpp) -----------------------------------

OPS_BY_NAME = _library.OPS


def _cpp_kernels(op: str):
    """din_fast._C and the eager_kernels handle of ``op``'s cpp kernels (float64 CPU)."""
    _skip_unless_cpp(op)
    from din_fast import _extension

    impl, _, kernels = OPS_BY_NAME[op]._eager_route(torch.zeros(1, dtype=torch.float64))
    assert impl == "cpp" and kernels is not None
    return _extension.module(), kernels


@pytest.mark.parametrize("op", OPS)
def test_cpp_node_runs_without_the_python_path(op, monkeypatch):
    """With the cpp implementation the node is the C++ one: forward and backward give the same values and
    gradients with FusedOp's Python runners disabled."""
    _skip_unless_cpp(op)
    leaves = requiring_grad(ARGS[op]())
    out = getattr(din_fast.ops, op)(*leaves)
    grad = torch.randn_like(out)
    expected = torch.autograd.grad(out, flat(leaves), grad)

    def fail(*_):
        raise AssertionError("the Python runner ran")

    monkeypatch.setattr(OPS_BY_NAME[op], "_run_forward", fail)
    monkeypatch.setattr(OPS_BY_NAME[op], "_run_backward", fail)
    out2 = getattr(din_fast.ops, op)(*leaves)
    assert type(out2.grad_fn).__name__ == "EagerAutogradBackward"
    torch.testing.assert_close(out2, out, rtol=0, atol=0)
    for g, e in zip(torch.autograd.grad(out2, flat(leaves), grad), expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("op", OPS)
def test_fast_path_with_some_inputs_not_requiring_grad(op):
    """Only the inputs that require grad get gradients (the dispatcher path's, bit for bit); the others
    are left alone, and a call where none requires grad builds no graph."""
    _skip_unless_cpp(op)
    tensors = flat(ARGS[op]())
    tensors = [t.clone().requires_grad_(i % 2 == 1) for i, t in enumerate(tensors)]
    args = rebuild(ARGS[op](), tensors)
    wanted = [t for t in tensors if t.requires_grad]
    out = getattr(din_fast.ops, op)(*args)
    grad = torch.randn_like(out)
    out.backward(grad)
    slow = torch.autograd.grad(getattr(torch.ops.din_fast, op)(*args), wanted, grad)
    for t, s in zip(wanted, slow):
        torch.testing.assert_close(t.grad, s, rtol=0, atol=0)
    assert all(t.grad is None for t in tensors if not t.requires_grad)
    plain = rebuild(args, [t.detach() for t in tensors])
    assert getattr(din_fast.ops, op)(*plain).grad_fn is None


def test_cpp_node_graph_rules():
    """The C++ node follows autograd's rules as the Python Function did: retain_graph allows a second
    backward (same gradients), without it the second backward raises; an input modified in place after
    the forward makes backward raise; saved-tensor hooks see every saved input."""
    _skip_unless_cpp("dwc_sum")
    leaves = requiring_grad(ARGS["dwc_sum"]())
    out = din_fast.ops.dwc_sum(*leaves)
    grad = torch.randn_like(out)
    first = torch.autograd.grad(out, flat(leaves), grad, retain_graph=True)
    for a, b in zip(torch.autograd.grad(out, flat(leaves), grad), first):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="second time"):
        torch.autograd.grad(out, flat(leaves), grad)

    x = leaves[0][0].detach().clone().requires_grad_(True)
    y = x * 1  # a non-leaf, so that it may be modified in place
    out = din_fast.ops.dwc_sum([y, *leaves[0][1:]], leaves[1], leaves[2])
    y.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward(grad)

    packed, unpacked = [], []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t,
                                                  lambda t: unpacked.append(t) or t):
        out = din_fast.ops.dwc_sum(*leaves)
    assert type(out.grad_fn).__name__ == "EagerAutogradBackward"
    assert len(packed) == len(flat(leaves))
    for a, b in zip(torch.autograd.grad(out, flat(leaves), grad), first):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(unpacked) == len(flat(leaves))


def test_create_graph_with_a_constant_grad():
    """create_graph=True with a grad that does not require grad: plain gradients (nothing to
    differentiate again), as once_differentiable gives."""
    _skip_unless_cpp("dwc_sum")
    leaves = requiring_grad(ARGS["dwc_sum"]())
    out = din_fast.ops.dwc_sum(*leaves)
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, flat(leaves), grad, create_graph=True)
    assert not any(g.requires_grad for g in grads)
    for a, b in zip(grads, torch.autograd.grad(din_fast.ops.dwc_sum(*leaves), flat(leaves), grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_eager_call_rejects_malformed_calls():
    """eager_call checks the argument layout against the kernel op's schema (it calls the kernel boxed):
    a wrong count or a tensor where a list belongs raises TypeError, never reaches the kernel."""
    C, kernels = _cpp_kernels("dwc_sum")
    inputs, weight, bias = ARGS["dwc_sum"]()
    with pytest.raises(TypeError, match="takes 3 arguments"):
        C.eager_call(kernels, inputs, weight)
    with pytest.raises(TypeError, match="list of Tensors"):
        C.eager_call(kernels, inputs[0], weight, bias)
    with pytest.raises(TypeError, match="must be a Tensor"):
        C.eager_call(kernels, inputs, 1.0, bias)
    with pytest.raises(TypeError, match="must be a Tensor"):
        C.eager_call(kernels, [inputs[0], None], weight, bias)
    with pytest.raises(ValueError):
        C.eager_call(object(), inputs, weight, bias)
    with pytest.raises(TypeError):
        din_fast.ops.dwc_sum(inputs, weight)  # the public op: the Python check words the error
    torch.testing.assert_close(C.eager_call(kernels, tuple(inputs), weight, bias),
                               din_fast.ops.reference.dwc_sum(inputs, weight, bias))
