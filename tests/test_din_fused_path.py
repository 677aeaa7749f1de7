"""DIN on the fused path: the default backend runs asyca, dwc_sum and dense_block at every place of the
official graph, with the reference backend's outputs and gradients (dense_block's own tests, the RDB
on it included: tests/ops/test_dense_block.py)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import din_fast
from din_fast import create_model

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


@pytest.mark.parametrize("name", ["din", "din-ijcai"])
def test_default_backend_runs_the_fused_ops_everywhere(name):
    model = create_model(name, 2, **TINY).eval()
    with torch.no_grad(), _OpCounter() as counter:
        model(torch.rand(1, 3, 6, 5))
    m, d, r = TINY["branches"], TINY["blocks"], TINY["rdbs"]
    assert counter.counts.get("din_fast.asyca") == (m - 1) * d
    assert counter.counts.get("din_fast.dwc_sum") == m * d * r
    assert counter.counts.get("din_fast.dense_block") == m * d * r
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
