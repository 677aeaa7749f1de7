"""The two routes of ``din_fast.ops.<name>`` (docs/op-call.md): the eager fast path (FusedOp.__call__ on a
C++ implementation: ``_C.eager_call``, the kernel under the C++ autograd node) against the dispatcher
route (``torch.ops.din_fast.<name>``: torch.library's autograd, the router): the same values bit for bit,
the same gradients, the same memory formats; the cases that must leave the fast path (dispatch modes,
fake tensors) still work through the dispatcher; every other call (Triton, dense_block) takes the
dispatcher route, so these are the only two autograd mechanisms; both refuse double backward."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import din_fast
from din_fast import backends
from din_fast.ops import _library
from din_fast.op_contract import memory_format_of
from impl_checks import skip_unless_runs
from op_inputs import ARGS, dense_block_args, flat, rebuild, requiring_grad

OPS = sorted(_library.OPS)  # the FusedOp ops (dense_block has its own tests)
#: The grad_fn of an eager call on a C++ implementation (csrc/eager_autograd.cpp).
CPP_NODE = "EagerAutogradBackward"


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
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == CPP_NODE
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

    assert node() == CPP_NODE
    with din_fast.use_backend("reference"):
        assert node() != CPP_NODE
    assert node() == CPP_NODE
    with din_fast.use_backend("cuda"), pytest.raises(RuntimeError, match="cannot run dwc_sum"):
        din_fast.ops.dwc_sum(*leaves)  # explicit backend that cannot run here: raises every time
    assert node() == CPP_NODE


def _dwc_sum_entry(entry: str):
    """dwc_sum called as ``entry``: "eager" (the C++ node), "dispatcher" (torch.ops: torch.library's
    autograd) or "triton" (the public op, to be called under the triton backend: the dispatcher route)."""
    if entry == "triton":
        skip_unless_runs("dwc_sum", "triton", torch.float32)
    else:
        _skip_unless_cpp("dwc_sum")
    return torch.ops.din_fast.dwc_sum if entry == "dispatcher" else din_fast.ops.dwc_sum


ENTRIES = ["eager", "dispatcher", pytest.param("triton", marks=pytest.mark.triton)]


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_route_refuses_double_backward(entry):
    """create_graph=True still gives the first-order gradients; differentiating them again raises, on the
    C++ node and on torch.library's autograd (whose backward op has no autograd formula: without the
    refusal a second differentiation would treat the gradients as constants)."""
    fn = _dwc_sum_entry(entry)
    dtype = torch.float32 if entry == "triton" else torch.float64
    leaves = requiring_grad(ARGS["dwc_sum"](dtype=dtype))
    with din_fast.use_backend("triton" if entry == "triton" else "auto"):
        out = fn(*leaves)
        (g,) = torch.autograd.grad(out.square().sum(), [leaves[1]], create_graph=True)
        (plain,) = torch.autograd.grad(fn(*leaves).square().sum(), [leaves[1]])
    torch.testing.assert_close(g, plain, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.sum().backward()


@pytest.mark.parametrize("entry", ["eager", "dispatcher"])
def test_create_graph_with_a_constant_grad(entry):
    """create_graph=True with a grad that does not require grad: plain gradients (nothing to
    differentiate again), as once_differentiable gives."""
    fn = _dwc_sum_entry(entry)
    leaves = requiring_grad(ARGS["dwc_sum"]())
    out = fn(*leaves)
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, flat(leaves), grad, create_graph=True)
    assert not any(g.requires_grad for g in grads)
    for a, b in zip(grads, torch.autograd.grad(fn(*leaves), flat(leaves), grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _din_fast_functions() -> list[str]:
    """The ``torch.autograd.Function`` subclasses defined in din_fast's modules."""
    found, todo = [], list(torch.autograd.Function.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("din_fast"):
            found.append(f"{cls.__module__}.{cls.__qualname__}")
    return found


def test_two_autograd_mechanisms():
    """Autograd of every din_fast op is the C++ node (eager calls on a C++ implementation) or
    torch.library's (register_autograd: every other call of a fused implementation): din_fast defines no
    autograd.Function of its own. An eager dense_block call on its cpp kernel gets the C++ node too, the
    torch.ops op torch.library's, with the same values and gradients."""
    import din_fast.models  # noqa: F401  (every module that could define one)

    assert _din_fast_functions() == []
    skip_unless_runs("dense_block", "cpp", torch.float64)
    args = requiring_grad(dense_block_args())
    eager, dispatched = din_fast.ops.dense_block(*args), torch.ops.din_fast.dense_block(*args)[0]
    assert type(eager.grad_fn).__name__ == CPP_NODE
    assert "dense_block" in type(dispatched.grad_fn).__name__
    grad = torch.randn_like(eager)
    torch.testing.assert_close(eager, dispatched, rtol=0, atol=0)
    for e, d in zip(torch.autograd.grad(eager, flat(args), grad), torch.autograd.grad(dispatched, flat(args), grad)):
        torch.testing.assert_close(e, d, rtol=0, atol=0)


@pytest.mark.triton
def test_triton_eager_call_takes_the_dispatcher_route():
    """An eager call on the Triton kernel gets torch.library's node, the torch.ops op's, with the same
    values and gradients."""
    skip_unless_runs("dwc_sum", "triton", torch.float32)
    leaves = requiring_grad(ARGS["dwc_sum"](dtype=torch.float32))
    with din_fast.use_backend("triton"):
        eager, dispatched = din_fast.ops.dwc_sum(*leaves), torch.ops.din_fast.dwc_sum(*leaves)
        grad = torch.randn_like(eager)
        eager_grads = torch.autograd.grad(eager, flat(leaves), grad)
        dispatched_grads = torch.autograd.grad(dispatched, flat(leaves), grad)
    assert type(eager.grad_fn) is type(dispatched.grad_fn) and type(eager.grad_fn).__name__ != CPP_NODE
    torch.testing.assert_close(eager, dispatched, rtol=0, atol=0)
    for a, b in zip(eager_grads, dispatched_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


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

    impl, kernels = OPS_BY_NAME[op]._eager_route(torch.zeros(1, dtype=torch.float64))
    assert impl == "cpp" and kernels is not None
    return _extension.module(), kernels


@pytest.mark.parametrize("op", OPS)
def test_cpp_node_runs_without_the_python_path(op, monkeypatch):
    """With the cpp implementation the node is the C++ one: forward and backward give the same values and
    gradients with the routers' Python implementation lookup disabled."""
    _skip_unless_cpp(op)
    leaves = requiring_grad(ARGS[op]())
    out = getattr(din_fast.ops, op)(*leaves)
    grad = torch.randn_like(out)
    expected = torch.autograd.grad(out, flat(leaves), grad)

    def fail(*_):
        raise AssertionError("the router ran")

    monkeypatch.setattr(OPS_BY_NAME[op], "implementation", fail)
    out2 = getattr(din_fast.ops, op)(*leaves)
    assert type(out2.grad_fn).__name__ == CPP_NODE
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
    assert type(out.grad_fn).__name__ == CPP_NODE
    assert len(packed) == len(flat(leaves))
    for a, b in zip(torch.autograd.grad(out, flat(leaves), grad), first):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(unpacked) == len(flat(leaves))


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
