"""dense_block (DIN's dense block body): every implementation against the float64 official graph, forward
and gradients, gradcheck, opcheck, autocast, errors, the memory it saves, and DIN's RDB on it."""

import pytest
import torch
import torch.nn.functional as F

import din_fast
from din_fast import backends, ops
from din_fast.models.din import RDB
from impl_checks import FORWARD_EPS, GRAD_EPS, assert_close_to, skip_unless_runs
from op_inputs import cast, dense_block_args, flat, rebuild, requiring_grad

#: (implementation, the backend that selects it on CPU).
ROUTES = [("reference", "reference"), ("cpp", "cpp")]


def _official(x, weights, biases):
    """The official dense block, written out independently of the op and of reference.py."""
    feats = [x]
    for w, b in zip(weights[:-1], biases[:-1]):
        feats.append(F.leaky_relu(F.conv2d(torch.cat(feats, 1), w, b, padding=1), 0.2))
    return F.conv2d(torch.cat(feats, 1), weights[-1], biases[-1], padding=1)


def _skip_unless_cpp():
    skip_unless_runs("dense_block", "cpp", torch.float64)


@pytest.mark.parametrize("entry", ["wrapper", "torch.ops"])
@pytest.mark.parametrize("impl", ["reference", "cpp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [dict(), dict(b=1, c=4, g=2, n=3, cout=3, h=9, w=5), dict(n=1, cout=2)])
def test_forward_and_gradients_match_the_official_graph(impl, dtype, entry, shape):
    if impl == "cpp":
        skip_unless_runs("dense_block", "cpp", dtype)
    args64 = requiring_grad(dense_block_args(**shape))
    expected = _official(*args64)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, flat(args64), grad)
    args = requiring_grad(cast(args64, dtype))
    with din_fast.use_backend(impl):
        got = ops.dense_block(*args) if entry == "wrapper" else torch.ops.din_fast.dense_block(*args)[0]
        grads = torch.autograd.grad(got, flat(args), grad.to(dtype))
    assert got.dtype == dtype
    assert_close_to(got, expected, dtype, FORWARD_EPS)
    for g, e in zip(grads, expected_grads):
        assert_close_to(g, e, dtype, GRAD_EPS)


def test_reference_is_the_official_graph():
    args = dense_block_args()
    torch.testing.assert_close(ops.reference.dense_block(*args), _official(*args), rtol=0, atol=0)


@pytest.mark.parametrize("impl", ["reference", "cpp"])
def test_gradcheck(impl):
    if impl == "cpp":
        _skip_unless_cpp()
    args = requiring_grad(dense_block_args(b=2, c=2, g=2, n=3, h=5, w=4))
    with din_fast.use_backend(impl):
        assert torch.autograd.gradcheck(lambda *t: ops.dense_block(*rebuild(args, t)), flat(args))
        assert torch.autograd.gradcheck(lambda *t: torch.ops.din_fast.dense_block(*rebuild(args, t))[0],
                                        flat(args))


@pytest.mark.parametrize("impl", ["reference", "cpp"])
def test_opcheck(impl):
    if impl == "cpp":
        _skip_unless_cpp()
    args = requiring_grad(dense_block_args(b=2, c=3, g=2, n=3, h=5, w=6))
    with din_fast.use_backend(impl):
        torch.library.opcheck(torch.ops.din_fast.dense_block.default, tuple(args))
        y, features = torch.ops.din_fast.dense_block(*[a.detach() if isinstance(a, torch.Tensor) else
                                                        [t.detach() for t in a] for a in args])
        torch.library.opcheck(torch.ops.din_fast.dense_block_backward.default,
                              (torch.randn_like(y), features, [t.detach() for t in args[1]],
                               [t.detach() for t in args[2]]))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_output_and_input_gradient_keep_the_input_format(layout):
    _skip_unless_cpp()
    args = requiring_grad(dense_block_args())
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = args[0].detach().contiguous(memory_format=fmt).requires_grad_(True)
    y = ops.dense_block(x, args[1], args[2])
    (dx,) = torch.autograd.grad(y, [x], torch.randn_like(y))
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_no_grad_call_matches_the_op(layout):
    """Without a gradient the wrapper's eager call records no node: the same values bit for bit and the
    same memory format as the dispatcher op."""
    _skip_unless_cpp()
    x, weights, biases = dense_block_args()
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    with torch.no_grad():
        direct, dispatched = ops.dense_block(x, weights, biases), torch.ops.din_fast.dense_block(x, weights, biases)[0]
    torch.testing.assert_close(direct, dispatched, rtol=0, atol=0)
    assert direct.is_contiguous(memory_format=fmt) and dispatched.is_contiguous(memory_format=fmt)


def test_backend_routes():
    cpu = torch.device("cpu")
    assert backends.kernels("dense_block") == {"cpp"}
    with din_fast.use_backend("cuda"), pytest.raises(RuntimeError, match="runs on CUDA tensors"):
        ops.dense_block(*dense_block_args())
    if backends.unavailable_reason("dense_block", "cpp", "cpu", torch.float32) is None:
        assert backends.resolve("dense_block", cpu, torch.float32) == "cpp"
    with din_fast.use_backend("cpp"), pytest.raises(RuntimeError, match="cannot run dense_block"):
        ops.dense_block(*dense_block_args(dtype=torch.bfloat16))


@pytest.mark.parametrize("entry", ["wrapper", "torch.ops"])
def test_double_backward_is_refused(entry):
    """create_graph=True gives the first-order gradients (x, and the lists of weight and bias gradients);
    differentiating any of them again raises."""
    _skip_unless_cpp()
    args = requiring_grad(dense_block_args(b=1, c=3, g=2, n=3, h=5, w=4))
    fn = ops.dense_block if entry == "wrapper" else lambda *a: torch.ops.din_fast.dense_block(*a)[0]
    grads = torch.autograd.grad(fn(*args).square().sum(), flat(args), create_graph=True)
    plain = torch.autograd.grad(fn(*args).square().sum(), flat(args))
    for g, p in zip(grads, plain):
        torch.testing.assert_close(g, p, rtol=0, atol=0)
    for g in (grads[0], grads[-1]):
        with pytest.raises(RuntimeError, match="differentiate twice"):
            g.sum().backward()


def test_autocast_runs_in_the_autocast_dtype():
    args32 = rebuild(dense_block_args(), [t.float() for t in flat(dense_block_args())])
    ref = ops.reference.dense_block(*cast(args32, torch.bfloat16)).float()
    for fn in (ops.dense_block, lambda *a: torch.ops.din_fast.dense_block(*a)[0]):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(*args32)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, atol=8 * 2**-8, rtol=8 * 2**-8)


BAD_ARGUMENTS = [
    (lambda a: a.__setitem__(0, a[0][0]), r"x must have shape \(B, C, H, W\)"),
    (lambda a: a.__setitem__(1, []), "non-empty lists"),
    (lambda a: a[2].pop(), "one tensor per weight"),
    (lambda a: a[1].__setitem__(2, a[1][2][:, :-1]), r"weights\[2\] must have shape \(3, 11, 3, 3\)"),
    (lambda a: a[1].__setitem__(5, a[1][5][:, :-1]), r"weights\[5\] must have shape \(5, 20, 3, 3\)"),
    (lambda a: a[2].__setitem__(1, a[2][1][:-1]), r"biases\[1\] must have shape \(3,\)"),
    (lambda a: a[1].__setitem__(0, a[1][0].float()), r"weights\[0\] has dtype torch.float32"),
    (lambda a: a[1].__setitem__(0, a[1][0][0, 0]), r"weights\[0\] must have shape \(Cout, Cin, 3, 3\)"),
]


@pytest.mark.parametrize("mutate, message", BAD_ARGUMENTS)
@pytest.mark.parametrize("entry", ["wrapper", "torch.ops"])
def test_bad_arguments_are_clear_errors(mutate, message, entry):
    args = dense_block_args()
    mutate(args)
    fn = ops.dense_block if entry == "wrapper" else torch.ops.din_fast.dense_block
    with pytest.raises((ValueError, RuntimeError), match=message):
        fn(*args)


@pytest.mark.parametrize("mutate, message", BAD_ARGUMENTS)
def test_cpp_kernels_check_their_arguments(mutate, message):
    """The private C++ kernel ops check what the Python check does (a direct call never reads out of
    bounds): ValueError from the forward, and from the backward for bad weights or biases."""
    _skip_unless_cpp()
    args = dense_block_args()
    y, features = torch.ops.din_fast._dense_block_cpp(*args)
    mutate(args)
    with pytest.raises(ValueError):
        torch.ops.din_fast._dense_block_cpp(*args)
    if args[0].dim() == 4:  # the backward reads the features buffer, not x
        with pytest.raises(ValueError):
            torch.ops.din_fast._dense_block_backward_cpp(y, features, args[1], args[2])


def test_cpp_backward_checks_the_buffer_and_the_gradient():
    _skip_unless_cpp()
    args = dense_block_args()
    y, features = torch.ops.din_fast._dense_block_cpp(*args)
    backward = torch.ops.din_fast._dense_block_backward_cpp
    with pytest.raises(ValueError, match="grad must have shape"):
        backward(y[:, :, :-1], features, args[1], args[2])
    with pytest.raises(ValueError, match="too few"):
        backward(y, features[:, :10], args[1], args[2])
    with pytest.raises(ValueError, match="features must have shape"):
        backward(y, features[0], args[1], args[2])


def _cat_rdb(rdb, x):
    return _official(x, [c.weight for c in rdb.convs], [c.bias for c in rdb.convs])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_dense_buffer_rdb_matches_concatenations_with_gradients(layout):
    rdb = RDB(6, 4).double()
    x = torch.randn(2, 6, 7, 5, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    g = torch.randn(2, 6, 7, 5, dtype=torch.float64)
    params = [x, *rdb.parameters()]
    expected = _cat_rdb(rdb, x)
    expected_grads = torch.autograd.grad(expected, params, g)
    got = rdb(x)                                                          # default backend: buffer path
    assert type(got.grad_fn).__name__ == "EagerAutogradBackward"  # the op's C++ node, not the graph
    grads = torch.autograd.grad(got, params, g)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for a, e in zip(grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)
    assert torch.autograd.gradcheck(lambda t: rdb(t), (x[:1, :, :4, :3].detach().clone().requires_grad_(),))


def _saved_bytes(fn):
    total = 0

    def pack(t):
        nonlocal total
        total += t.untyped_storage().nbytes() if t.numel() else 0
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


@pytest.mark.parametrize("entry", ["wrapper", "torch.ops"])
def test_dense_buffer_saves_less_for_backward(entry):
    """Autograd over the concatenations keeps C + (C+G) + ... + (C+5G) channels plus the activations;
    the buffer keeps C + 5G (and the weights and biases), on the eager path and the dispatcher's."""
    c, g = 64, 32
    rdb = RDB(c, g)
    x = torch.randn(1, c, 12, 12, requires_grad=True)
    weights = sum((conv.weight.numel() + conv.bias.numel()) * 4 for conv in rdb.convs)
    params = ([conv.weight for conv in rdb.convs], [conv.bias for conv in rdb.convs])
    call = (lambda: rdb(x)) if entry == "wrapper" else (lambda: torch.ops.din_fast.dense_block(x, *params))
    fused = _saved_bytes(call) - weights
    with din_fast.use_backend("reference"):
        plain = _saved_bytes(lambda: rdb(x))
    plane = 12 * 12 * 4
    assert fused == (c + 5 * g) * plane
    assert plain >= sum(c + i * g for i in range(6)) * plane
