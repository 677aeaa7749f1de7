"""din_fast.optimize: the fast inference path keeps outputs within the dtype's tolerance."""

from __future__ import annotations

import pytest
import torch

import din_fast
from din_fast import create_model, optimize

TINY = {"defian-s": {"channels": 16, "rcabs": 1, "modules": 1},
        "din": {"num_features": 8, "growth_rate": 4, "branches": 2, "blocks": 1, "rdbs": 2}}


@pytest.fixture(params=sorted(TINY))
def tiny(request):
    return create_model(request.param, scale=2, **TINY[request.param])


def _reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with din_fast.use_backend("reference"), torch.no_grad():
        return model.double()(x.double()).float()


@pytest.mark.parametrize("channels_last", [None, False, True])
def test_float32_matches_reference(tiny, channels_last):
    x = torch.rand(2, 3, 13, 11)
    ref = _reference(_copy(tiny), x)
    fast = optimize(tiny, x, channels_last=channels_last)
    y = fast(x)
    assert y.dtype == torch.float32 and y.shape == (2, 3, 26, 22) and y.is_contiguous()
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)
    if channels_last is not None:
        assert fast.channels_last is channels_last
    assert not any(p.requires_grad for p in tiny.parameters()) and not tiny.training


def _copy(model):
    clone = create_model(model.model_name, scale=model.scale, **model.config)
    clone.load_state_dict(model.state_dict())
    return clone


def test_bfloat16_autocast_within_bf16_tolerance():
    model = create_model("defian-s", scale=2, **TINY["defian-s"])
    x = torch.rand(1, 3, 12, 12)
    ref = _reference(_copy(model), x)
    y = optimize(model, dtype=torch.bfloat16)(x)
    assert y.dtype == torch.float32
    # bf16 keeps 8 mantissa bits (eps 2^-8 ≈ 0.0039) and errors accumulate over the layers; outputs are ~[0, 1]
    torch.testing.assert_close(y, ref, atol=0.05, rtol=0.05)
    assert (y - ref).abs().max() > 0  # autocast really ran in bf16


@pytest.mark.slow
def test_compiled_matches_eager(tiny):
    x = torch.rand(1, 3, 10, 12)
    ref = _reference(_copy(tiny), x)
    torch.testing.assert_close(optimize(tiny, compile=True)(x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_compiled_training_step_gradients_match_eager(tiny):
    """The fused ops' autograd (backward ops included) traces without graph breaks."""
    x, target = torch.rand(2, 3, 9, 10), torch.rand(2, 3, 18, 20)
    eager = _copy(tiny)
    for net in (eager, torch.compile(tiny, fullgraph=True, dynamic=False)):
        torch.nn.functional.l1_loss(net(x), target).backward()
    for (name, p), q in zip(eager.named_parameters(), tiny.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_equals_eager():
    model = create_model("defian-s", scale=2, **TINY["defian-s"]).cuda()
    x = torch.rand(2, 3, 16, 16, device="cuda")
    eager = optimize(_copy(model).cuda(), cuda_graph=False)
    graphed = optimize(model, x)
    assert graphed.graph_shape == (2, 3, 16, 16)
    x2 = torch.rand_like(x)
    torch.testing.assert_close(graphed(x2), eager(x2))
    other = torch.rand(1, 3, 8, 8, device="cuda")  # another shape runs eagerly
    torch.testing.assert_close(graphed(other), eager(other))


def test_errors():
    model = create_model("defian-s", scale=2, **TINY["defian-s"])
    with pytest.raises(ValueError, match="dtype"):
        optimize(model, dtype=torch.int32)
    with pytest.raises(ValueError, match="CUDA"):
        optimize(model, torch.rand(1, 3, 8, 8), cuda_graph=True)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="example_input is on"):
            optimize(model, torch.rand(1, 3, 8, 8, device="cuda"))
