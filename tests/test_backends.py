"""Backend selection: names, the context manager, the environment variable, and clear errors for
implementations that cannot run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import din_fast
from din_fast import _extension, backends, create_model
from din_fast.models.din import RESTORATION_TASKS
from op_inputs import ARGS
from test_models import TINY

SCHEMAS = {
    "asyca": "din_fast::asyca(Tensor x1, Tensor x2, Tensor w_init, Tensor b_init, Tensor w_dc, Tensor b_dc, "
             "Tensor w_ic, Tensor b_ic) -> Tensor",
    "asyca_backward": "din_fast::asyca_backward(Tensor grad, Tensor x1, Tensor x2, Tensor w_init, Tensor b_init, "
                      "Tensor w_dc, Tensor b_dc, Tensor w_ic, Tensor b_ic) -> (Tensor, Tensor, Tensor, Tensor, "
                      "Tensor, Tensor, Tensor, Tensor)",
    "channel_attention_residual": "din_fast::channel_attention_residual(Tensor u, Tensor t, Tensor w1, Tensor b1, "
                                  "Tensor w2, Tensor b2) -> Tensor",
    "channel_attention_residual_backward": "din_fast::channel_attention_residual_backward(Tensor grad, Tensor u, "
                                           "Tensor t, Tensor w1, Tensor b1, Tensor w2, Tensor b2) -> (Tensor, "
                                           "Tensor, Tensor, Tensor, Tensor, Tensor)",
    "conv3x3": "din_fast::conv3x3(Tensor x, Tensor weight, Tensor bias) -> Tensor",
    "conv3x3_backward": "din_fast::conv3x3_backward(Tensor grad, Tensor x, Tensor weight, Tensor bias) "
                        "-> (Tensor, Tensor, Tensor)",
    "dense_block": "din_fast::dense_block(Tensor x, Tensor[] weights, Tensor[] biases) -> (Tensor, Tensor)",
    "dense_block_backward": "din_fast::dense_block_backward(Tensor grad, Tensor features, Tensor[] weights, "
                            "Tensor[] biases) -> (Tensor, Tensor[], Tensor[])",
    "dwc_sum": "din_fast::dwc_sum(Tensor[] inputs, Tensor weight, Tensor bias) -> Tensor",
    "dwc_sum_backward": "din_fast::dwc_sum_backward(Tensor grad, Tensor[] inputs, Tensor weight, Tensor bias) "
                        "-> (Tensor[], Tensor, Tensor)",
    "mshf": "din_fast::mshf(Tensor x, Tensor weight, Tensor bias) -> Tensor",
    "mshf_backward": "din_fast::mshf_backward(Tensor grad, Tensor x, Tensor weight, Tensor bias) "
                     "-> (Tensor, Tensor, Tensor)",
    "dilated_encdec": "din_fast::dilated_encdec(Tensor h, Tensor[] weights, Tensor[] biases) -> Tensor",
    "dilated_encdec_backward": "din_fast::dilated_encdec_backward(Tensor grad, Tensor h, Tensor[] weights, "
                               "Tensor[] biases) -> (Tensor, Tensor[], Tensor[])",
    "dac_gate": "din_fast::dac_gate(Tensor x, Tensor r, Tensor v, Tensor w_mean1, Tensor w_mean2, Tensor w_std1, "
                "Tensor w_std2) -> Tensor",
    "dac_gate_backward": "din_fast::dac_gate_backward(Tensor grad, Tensor x, Tensor r, Tensor v, Tensor w_mean1, "
                         "Tensor w_mean2, Tensor w_std1, Tensor w_std2) -> (Tensor, Tensor, Tensor, Tensor, "
                         "Tensor, Tensor, Tensor)",
    "criss_cross_attention": "din_fast::criss_cross_attention(Tensor q, Tensor k, Tensor v) -> Tensor",
    "criss_cross_attention_backward": "din_fast::criss_cross_attention_backward(Tensor grad, Tensor q, Tensor k, "
                                      "Tensor v) -> (Tensor, Tensor, Tensor)",
    "channel_spatial_attention": "din_fast::channel_spatial_attention(Tensor x, Tensor skip, Tensor w_ca1, "
                                 "Tensor b_ca1, Tensor w_ca2, Tensor b_ca2, Tensor w_sa, Tensor b_sa) -> Tensor",
    "channel_spatial_attention_backward": "din_fast::channel_spatial_attention_backward(Tensor grad, Tensor x, "
                                          "Tensor skip, Tensor w_ca1, Tensor b_ca1, Tensor w_ca2, Tensor b_ca2, "
                                          "Tensor w_sa, Tensor b_sa) -> (Tensor, Tensor, Tensor, Tensor, Tensor, "
                                          "Tensor, Tensor, Tensor)",
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_pinned(name):
    assert str(getattr(torch.ops.din_fast, name).default._schema) == SCHEMAS[name]


def test_every_op_has_a_pinned_schema():
    assert {n for n in SCHEMAS if not n.endswith("_backward")} == set(backends.op_names())


def test_use_backend_restores_and_validates():
    assert din_fast.get_backend() == "auto"
    with din_fast.use_backend("reference"):
        assert din_fast.get_backend() == "reference"
        with pytest.raises(ValueError, match="unknown din_fast backend 'fast'"):
            din_fast.set_backend("fast")
        assert din_fast.get_backend() == "reference"
    assert din_fast.get_backend() == "auto"
    with pytest.raises(RuntimeError):
        with din_fast.use_backend("reference"):
            raise RuntimeError("body failed")
    assert din_fast.get_backend() == "auto"


def test_environment_variable_sets_the_backend():
    code = "import din_fast; print(din_fast.get_backend())"
    env = {**os.environ, "DIN_FAST_BACKEND": "reference"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "reference"
    env["DIN_FAST_BACKEND"] = "bogus"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown din_fast backend 'bogus'" in bad.stderr


def test_auto_on_cpu_is_cpp_when_built_else_reference():
    for op in backends.op_names():
        built = _extension.has_ops() and backends.implementations(op)["cpp"] == "built"
        expected = "cpp" if built else "reference"
        assert backends.resolve(op, torch.device("cpu"), torch.float32) == expected
        assert backends.resolve(op, torch.device("cpu"), torch.bfloat16) == "reference"


@pytest.mark.parametrize("op", sorted(ARGS))
def test_cuda_backend_on_cpu_tensor_is_an_error(op):
    with din_fast.use_backend("cuda"), pytest.raises(RuntimeError, match="cuda implementation runs on CUDA"):
        getattr(din_fast.ops, op)(*ARGS[op]())


def test_cpp_backend_refuses_half_precision():
    args = ARGS["dwc_sum"](dtype=torch.bfloat16)
    with din_fast.use_backend("cpp"), pytest.raises(RuntimeError, match="cannot run dwc_sum"):
        din_fast.ops.dwc_sum(*args)


def test_unavailable_reasons_are_specific():
    cpu = torch.device("cpu")
    assert "need a CUDA tensor" in backends.unavailable_reason("mshf", "triton", "mps", torch.float32)
    reason = backends.unavailable_reason("mshf", "cpp", "cuda", torch.float32)
    assert reason == "the cpp implementation runs on CPU tensors"
    if not _extension.has_ops():
        assert "din_fast._C is not loaded" in backends.unavailable_reason("mshf", "cpp", "cpu", torch.float32)
    assert backends.resolve("mshf", cpu, torch.float64) in ("cpp", "reference")


def test_disabled_extension_routes_to_reference_and_explains():
    code = ("import torch, din_fast, din_fast.ops\n"
            "from din_fast import backends, _extension\n"
            "assert not _extension.has_ops() and 'DIN_FAST_DISABLE_EXT' in _extension.load_error()\n"
            "assert backends.resolve('asyca', torch.device('cpu'), torch.float32) == 'reference'\n"
            "din_fast.set_backend('cpp')\n"
            "try:\n"
            "    backends.resolve('asyca', torch.device('cpu'), torch.float32)\n"
            "except RuntimeError as e:\n"
            "    print(e)\n")
    env = {**os.environ, "DIN_FAST_DISABLE_EXT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "din_fast._C is not loaded (disabled by DIN_FAST_DISABLE_EXT=1)" in out.stdout


def test_build_info_says_what_was_built():
    info = _extension.build_info()
    assert info["extension_loaded"] == _extension.has_ops()
    if not info["extension_loaded"]:
        assert info["extension_error"] and info["cpu_isa"] is None
    else:
        assert info["cpu_isa"] in ("avx512", "avx2", "baseline")


def test_compiled_code_follows_backend_switch():
    """resolve() is a trace-time constant under torch.compile; the guard on the backend recompiles."""
    args = ARGS["dwc_sum"](dtype=torch.float32)
    fn = torch.compile(lambda *a: din_fast.ops.dwc_sum(*a), fullgraph=True, dynamic=False)
    with din_fast.use_backend("reference"):
        fn(*args)
    with din_fast.use_backend("cuda"), pytest.raises(RuntimeError, match="cannot run dwc_sum"):
        fn(*args)  # a CPU tensor: the cuda backend must be asked again, not the cached reference graph


ROOT = Path(__file__).resolve().parents[1]
#: Tiny configurations of every registered model (the Triton interpreter runs every program in Python).
TINY_MODELS = {
    **TINY,
    **{f"din-{task}": dict(num_features=8, growth_rate=4, branches=2, blocks=1, rdbs=1, reduction=2)
       for task in RESTORATION_TASKS},
}


def test_declared_kernels_are_the_sources():
    """Each op's ``kernels`` (what an explicit backend runs instead of the reference) names exactly the
    kernels whose sources exist: csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu, kernels/<op>.py."""
    for op in backends.op_names():
        sources = {"cpp": ROOT / "csrc" / "cpu" / f"{op}.cpp",
                   "cuda": ROOT / "csrc" / "cuda" / f"{op}.cu",
                   "triton": ROOT / "kernels" / f"{op}.py"}
        assert backends.kernels(op) == {impl for impl, path in sources.items() if path.exists()}, op


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_ops_without_a_kernel_of_the_backend_run_their_reference(backend, monkeypatch):
    """Under an explicit backend an op without such a kernel resolves to its reference on that backend's
    devices, and an op with one resolves to it (never to the reference)."""
    monkeypatch.setattr(backends, "_resolved", {})
    monkeypatch.setattr(backends, "has_kernel", lambda private_op, key: True)  # as if built for CUDA
    device = torch.device("cuda")
    with din_fast.use_backend(backend):
        for op in backends.op_names():
            expected = backend if backend in backends.kernels(op) else "reference"
            assert backends.resolve(op, device, torch.float32) == expected, op
    assert "conv3x3" in [op for op in backends.op_names() if backend not in backends.kernels(op)]


def test_a_missing_kernel_of_the_backend_still_raises(monkeypatch):
    """An op that has a cuda kernel but whose kernel is not built raises under "cuda"; it does not run
    the reference."""
    monkeypatch.setattr(backends, "_resolved", {})
    monkeypatch.setattr(backends, "has_kernel", lambda private_op, key: False)
    with din_fast.use_backend("cuda"), pytest.raises(RuntimeError, match="cannot run asyca"):
        backends.resolve("asyca", torch.device("cuda"), torch.float32)


def test_registered_models_are_covered():
    assert set(TINY_MODELS) == set(din_fast.list_models())


@pytest.mark.triton
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_whole_model_under_triton_equals_reference(name):
    """Every registered model runs under ``use_backend("triton")`` (on CPU: the interpreter) and gives
    the reference backend's output, conv3x3 running its reference, the other ops their Triton kernels."""
    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scale = 1 if name.startswith("din-") and name != "din-ijcai" else 2
    model = create_model(name, scale, **TINY_MODELS[name]).to(device, torch.float64).eval()
    x = torch.rand(1, 3, 8, 7, dtype=torch.float64, device=device)
    with torch.no_grad(), din_fast.use_backend("reference"):
        expected = model(x)
    with torch.no_grad(), din_fast.use_backend("triton"):
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_info_lists_every_op():
    from din_fast.info import report

    text = report()
    for op in backends.op_names():
        assert f"  {op} " in text
