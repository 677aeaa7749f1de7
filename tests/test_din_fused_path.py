"""DIN on the fused path: the default backend runs asyca and dwc_sum at every place of the official
graph and the RDBs' dense connections on one channel buffer, with the reference backend's outputs
and gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import din_fast
from din_fast import create_model
from din_fast.models.din import RDB, SLOPE

TINY = dict(num_features=8, growth_rate=4, branches=3, blocks=2, rdbs=2)


class _OpCounter(TorchDispatchMode):
    """Counts op calls; calls that return a 4-D tensor (feature maps) also under "<op>/4d"."""

    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        names = [str(func.overloadpacket)]
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            names.append(names[0] + "/4d")
        for name in names:
            self.counts[name] = self.counts.get(name, 0) + 1
        return out


def _cat_rdb(rdb, x):
    """The official dense block, written out independently of RDB.forward."""
    feats = [x]
    for conv in rdb.convs[:-1]:
        feats.append(F.leaky_relu(F.conv2d(torch.cat(feats, 1), conv.weight, conv.bias, padding=1), SLOPE))
    last = rdb.convs[-1]
    return F.conv2d(torch.cat(feats, 1), last.weight, last.bias, padding=1)


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
    assert got.grad_fn is not None and "DenseBody" in type(got.grad_fn).__name__
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


def test_dense_buffer_rdb_saves_less_for_backward():
    """Autograd over the concatenations keeps C + (C+G) + ... + (C+5G) channels plus the activations;
    the buffer keeps C + 5G (and the weights and biases)."""
    c, g = 64, 32
    rdb = RDB(c, g)
    x = torch.randn(1, c, 12, 12, requires_grad=True)
    weights = sum((conv.weight.numel() + conv.bias.numel()) * 4 for conv in rdb.convs)
    fused = _saved_bytes(lambda: rdb(x)) - weights
    with din_fast.use_backend("reference"):
        plain = _saved_bytes(lambda: rdb(x))
    plane = 12 * 12 * 4
    assert fused == (c + 5 * g) * plane
    assert plain >= sum(c + i * g for i in range(6)) * plane


@pytest.mark.parametrize("name", ["din", "din-ijcai"])
def test_default_backend_runs_the_fused_ops_everywhere(name):
    model = create_model(name, 2, **TINY).eval()
    with torch.no_grad(), _OpCounter() as counter:
        model(torch.rand(1, 3, 6, 5))
    m, d, r = TINY["branches"], TINY["blocks"], TINY["rdbs"]
    assert counter.counts.get("din_fast.asyca") == (m - 1) * d
    assert counter.counts.get("din_fast.dwc_sum") == m * d * r
    # only the global feature fusion concatenates feature maps (journal: two GFF inputs, ijcai: one)
    assert counter.counts.get("aten.cat/4d") == (2 if name == "din" else 1)


@pytest.mark.parametrize("name", ["din", "din-ijcai"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_default_backend_matches_reference_outputs_and_gradients(name, layout):
    model = create_model(name, 2, **TINY).double()
    x = torch.rand(2, 3, 7, 6, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    params = list(model.parameters())

    def run():
        y = model(x)
        return y, torch.autograd.grad((y * y).sum(), params)

    with din_fast.use_backend("reference"):
        expected, expected_grads = run()
    got, grads = run()
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for (pname, _), a, e in zip(model.named_parameters(), grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9, msg=pname)


def test_full_x4_din_float32_matches_reference_backend():
    """The issue's bound: max abs diff ≤ 1e-4 for the full x4 model, random weights, [0, 1] input."""
    model = create_model("din", 4).eval()
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        with din_fast.use_backend("reference"):
            expected = model(x)
        got = model(x)
    assert (got - expected).abs().max().item() <= 1e-4
