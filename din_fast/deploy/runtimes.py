"""Running an exported ONNX file in the CPU runtimes users deploy on: ONNX Runtime and OpenVINO.

``runner(runtime, path, threads)`` returns ``f(x: Tensor) -> Tensor`` for a float32 (B, 3, H, W)
input on the CPU. Both runtimes are set up the way a latency-bound user would, and so that they can be
timed beside PyTorch in one process (``din-fast bench``):

- ``threads`` intra-op threads (default: ``torch.get_num_threads()``), one inter-op thread;
- ONNX Runtime with every graph optimisation and its thread pool's spinning off
  (``session.intra_op.allow_spinning = 0``): spinning threads keep burning the cores after a call and
  slow whatever runs next;
- OpenVINO's CPU plugin with the latency hint, one stream and f32 inference precision (its default on
  some CPUs is bf16, which would not compute the same model).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from din_fast.deploy.exporter import require

RUNTIMES = ("onnxruntime", "openvino")


def _threads(threads: int | None) -> int:
    n = torch.get_num_threads() if threads is None else threads
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    return n


def onnxruntime_session(path: str | os.PathLike[str], threads: int | None = None,
                        profile_prefix: str | None = None) -> object:
    """An onnxruntime CPU InferenceSession of ``path`` (module doc); with ``profile_prefix``, its
    per-node profiler on (``session.end_profiling()`` writes the JSON trace)."""
    ort = require("onnxruntime", "the onnxruntime runtime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def openvino_model(path: str | os.PathLike[str], threads: int | None = None, profile: bool = False) -> object:
    """An OpenVINO CompiledModel of ``path`` on the CPU plugin (module doc); with ``profile``, its per-node
    performance counters on (``request.get_profiling_info()``)."""
    ov = require("openvino", "the openvino runtime")
    config = {"INFERENCE_NUM_THREADS": _threads(threads), "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": profile}
    return ov.Core().compile_model(os.fspath(path), "CPU", config)


def runner(runtime: str, path: str | os.PathLike[str], threads: int | None = None
           ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x) -> y`` running the ONNX file ``path`` in ``runtime`` (one of RUNTIMES) on the CPU."""
    if runtime == "onnxruntime":
        session = onnxruntime_session(path, threads)
        name = session.get_inputs()[0].name

        def run_ort(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: x.detach().cpu().float().contiguous().numpy()})[0])

        return run_ort
    if runtime == "openvino":
        request = openvino_model(path, threads).create_infer_request()

        def run_openvino(x: torch.Tensor) -> torch.Tensor:
            request.infer([x.detach().cpu().float().contiguous().numpy()])
            return torch.from_numpy(request.get_output_tensor(0).data.copy())

        return run_openvino
    raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
