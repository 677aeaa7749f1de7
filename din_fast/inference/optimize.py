"""``din_fast.optimize``: one call that puts a model on the fastest inference path of its device.

What it does (each step keeps outputs within the chosen dtype's tolerance of the float32 model):

- eval mode, no parameter gradients, ``torch.inference_mode`` around every call;
- GPU: autocast to bfloat16 (float16 where bf16 is unsupported) and channels_last activations,
  and a CUDA graph captured for the example input's shape, replayed whenever a call has that
  shape (other shapes run eagerly);
- CPU: float32; channels_last only if it measures faster on the example input (oneDNN's choice
  depends on the CPU and the model); optionally ``torch.compile`` (inductor with weight freezing,
  which prepacks conv weights and fuses conv + activation) — off by default, since compiling a
  whole model takes about a minute on a small CPU. Shapes are static (``dynamic=False``): each new
  input shape compiles once (inductor in torch 2.13 fails on these models' training graphs with
  dynamic shapes, with or without our ops).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn


def _timed(fn: Callable[[], torch.Tensor], repeats: int = 2) -> float:
    fn()  # warm-up: first-touch allocation, oneDNN primitive creation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


class OptimizedModel(nn.Module):
    """Inference-only wrapper made by :func:`optimize`: (B, 3, H, W) float → (B, 3, sH, sW) float32.

    Attributes:
        model: the wrapped model (eval mode, frozen).
        dtype: compute dtype (float32 or the autocast dtype).
        channels_last: whether activations run in channels_last.
        compiled: whether the forward runs through ``torch.compile``.
        graph_shape: the input shape a CUDA graph was captured for, or None.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, channels_last: bool, compiled: bool) -> None:
        super().__init__()
        self.model = model
        self.scale = getattr(model, "scale", None)
        self.dtype = dtype
        self.channels_last = channels_last
        self.compiled = compiled
        self._forward = torch.compile(model, fullgraph=True, dynamic=False) if compiled else model
        self.graph_shape: tuple[int, ...] | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_in: torch.Tensor | None = None
        self._static_out: torch.Tensor | None = None

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype in (torch.float16, torch.bfloat16):
            with torch.autocast(x.device.type, dtype=self.dtype):
                y = self._forward(x)
        else:
            y = self._forward(x.to(self.dtype))
        return y.float()

    def capture(self, example: torch.Tensor) -> None:
        """Capture a CUDA graph of the forward for ``example``'s shape (CUDA only)."""
        if example.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA input")
        with torch.inference_mode():
            self._static_in = example.detach().clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture stream, as CUDA graphs require
                for _ in range(2):
                    self._run(self._static_in)
            torch.cuda.current_stream().wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._static_out = self._run(self._static_in)
        self.graph_shape = tuple(example.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self._graph is not None and tuple(x.shape) == self.graph_shape and x.device.type == "cuda":
                self._static_in.copy_(x)
                self._graph.replay()
                return self._static_out.clone()  # the static buffer is overwritten by the next replay
            return self._run(x).contiguous()


def optimize(model: nn.Module, example_input: torch.Tensor | None = None, *, dtype: torch.dtype | None = None,
             channels_last: bool | None = None, compile: bool = False,
             cuda_graph: bool | None = None) -> OptimizedModel:
    """Wrap ``model`` for fast inference on its device.

    Args:
        model: a din_fast model (any ``nn.Module`` mapping (B, 3, H, W) → (B, 3, sH, sW)).
        example_input: a typical input (on the model's device); used to choose the CPU memory format
            and to capture the CUDA graph. Without it: contiguous on CPU, no CUDA graph.
        dtype: compute dtype; default bfloat16 on CUDA (float16 if bf16 is unsupported), float32 on CPU.
        channels_last: force the activation memory format (default: chosen as described above).
        compile: run the forward through ``torch.compile(fullgraph=True)``.
        cuda_graph: capture a CUDA graph for ``example_input`` (default: on CUDA when an example is given).

    Returns:
        An :class:`OptimizedModel`; the input model is set to eval mode and its parameters frozen.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if example_input is not None and example_input.device != device:
        raise ValueError(f"example_input is on {example_input.device} but the model is on {device}")
    model.eval().requires_grad_(False)
    cuda = device.type == "cuda"
    if dtype is None:
        dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    if cuda_graph and (not cuda or example_input is None):
        raise ValueError("cuda_graph=True needs a CUDA model and an example_input")
    if channels_last is None:
        channels_last = cuda
        if not cuda and example_input is not None:
            with torch.inference_mode():
                plain = _timed(lambda: model(example_input))
                cl = _timed(lambda: model(example_input.contiguous(memory_format=torch.channels_last)))
            channels_last = cl < 0.95 * plain  # keep the simpler layout unless the gain is clear
    if channels_last:  # conv weights too (nn.Module.to(memory_format=...) rejects the 5-D Hessian filters)
        for p in model.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    wrapped = OptimizedModel(model, dtype, channels_last, compile)
    if cuda_graph is None:
        cuda_graph = cuda and example_input is not None
    if cuda_graph:
        wrapped.capture(example_input)
    return wrapped
