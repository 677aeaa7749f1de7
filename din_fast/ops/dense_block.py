"""``dense_block``: DIN's residual dense block body (the RDB without its residual) as one op.

Maths (``reference.dense_block``, the official code): ``f_0 = x``,
``f_i = lrelu(conv3x3(cat[f_0, ..., f_{i−1}], W_i, b_i), 0.2)`` for i = 1..n−1 and
``y = conv3x3(cat[f_0, ..., f_{n−1}], W_n, b_n)``.
Shapes: x (B, C, H, W); weights[i] (G, C + iG, 3, 3) for i < n−1 and (Cout, C + (n−1)G, 3, 3) last;
biases[i] (G,) and (Cout,). Output y (B, Cout, H, W) in x's memory format. DIN: n = 6, Cout = C.

Why an op: autograd over the concatenations keeps C + (C+G) + ... + (C+(n−1)G) concatenated channels
and the activations for the backward; the implementations here write every feature once into one
buffer ``features`` = [f_0, ..., f_{n−1}] (B, C + (n−1)G, H, W), each conv reading a growing slice of it,
and keep only that buffer. The backward walks the convs in reverse, accumulating each conv's input
gradient into the matching channels of one gradient buffer; LeakyReLU's derivative is read off the
stored features (f_i > 0 exactly where its input was > 0, the slope being positive).

Implementations:

- ``reference`` (the dispatcher's, e.g. under ``torch.compile``): the buffer with aten's convolutions.
  Called eagerly under the reference backend the op is ``reference.dense_block``'s plain autograd graph.
- ``cpp`` (csrc/cpu/dense_block.cpp, the private ops ``_dense_block_cpp`` / ``_dense_block_backward_cpp``):
  the same buffer on conv3x3's C++ Winograd F(4x4, 3x3) building blocks (csrc/cpu/winograd.h):
  V (36, C + (n−1)G, tiles) holds every feature's Winograd transform, each conv is one batched GEMM
  over a prefix of V and its output transform (bias and LeakyReLU fused) writes f_i into the buffer, so
  each feature is transformed once instead of once per conv that reads it. Its backward accumulates all
  convs' input gradients in one dV and takes each feature's spatial gradient out of it once; V is
  recomputed from the buffer (storing it would cost more memory than the buffer).

There is no Triton or CUDA kernel: on GPUs the convolutions are cuDNN's, so under ``triton``, ``cuda``
and ``auto`` on a GPU the reference runs.

The op ``din_fast::dense_block`` returns (y, features); ``features`` is contiguous, not differentiable,
and is what autograd saves. ``din_fast::dense_block_backward(grad, features, weights, biases)`` returns
(dx, dweights, dbiases), dx contiguous.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from din_fast import _extension, backends
from din_fast._torch_internals import any_autocast_enabled
from din_fast import op_contract as contract
from din_fast.ops import reference
from din_fast.op_contract import memory_format_of
from din_fast.ops._library import (LIB, _autocast_args, _eager_plain, _formatted, differentiable_once,
                                   eager_kernels, register_autocast)

NAME = "dense_block"
SLOPE = reference.DENSE_SLOPE
_Tensors = list[torch.Tensor]


def _check(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> None:
    contract.feature("x", x)
    if not isinstance(weights, (list, tuple)) or not isinstance(biases, (list, tuple)) or not weights:
        raise ValueError("weights and biases must be non-empty lists of tensors")
    if len(biases) != len(weights):
        raise ValueError(f"biases must have one tensor per weight ({len(weights)}), got {len(biases)}")
    c = x.shape[1]
    n = len(weights)
    for name, i in (("weights[0]", 0), (f"weights[{n - 1}]", n - 1)):
        w = weights[i]
        if not isinstance(w, torch.Tensor) or w.dim() != 4 or w.shape[0] == 0:
            raise ValueError(f"{name} must have shape (Cout, Cin, 3, 3) with Cout > 0")
    g = weights[0].shape[0] if n > 1 else 0
    for i, (w, b) in enumerate(zip(weights, biases)):
        cout = weights[-1].shape[0] if i == n - 1 else g
        contract.same_as(f"weights[{i}]", w, "x", x, (cout, c + i * g, 3, 3))
        contract.same_as(f"biases[{i}]", b, "x", x, (cout,))


def _shapes(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of y and of the features buffer."""
    b, _, h, w = x.shape
    return (b, weights[-1].shape[0], h, w), (b, weights[-1].shape[1], h, w)


# -- reference (aten convolutions on the buffer) ------------------------------------------------------
def _forward_aten(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    c, g = x.shape[1], weights[0].shape[0]
    features = x.new_empty(_shapes(x, weights)[1])
    features[:, :c] = x
    for i, (w, b) in enumerate(zip(weights[:-1], biases[:-1])):
        start = c + i * g
        features[:, start:start + g] = F.leaky_relu(reference.conv3x3(features[:, :start], w, b), SLOPE)
    return reference.conv3x3(features, weights[-1], biases[-1]), features


def _backward_aten(grad: torch.Tensor, features: torch.Tensor, weights: Sequence[torch.Tensor],
                   biases: Sequence[torch.Tensor]) -> tuple[torch.Tensor, _Tensors, _Tensors]:
    n = len(weights)
    g = weights[0].shape[0]
    c = features.shape[1] - (n - 1) * g
    dweights: _Tensors = [None] * n  # type: ignore[list-item]
    dbiases: _Tensors = [None] * n  # type: ignore[list-item]

    def conv_backward(gy: torch.Tensor, inp: torch.Tensor, i: int) -> torch.Tensor:
        w = weights[i]
        gx, dweights[i], dbiases[i] = torch.ops.aten.convolution_backward(
            gy, inp, w, [w.shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True])
        return gx

    gfeatures = conv_backward(grad, features, n - 1)
    for i in reversed(range(n - 1)):
        start = c + i * g
        gy = torch.ops.aten.leaky_relu_backward(gfeatures[:, start:start + g], features[:, start:start + g],
                                                SLOPE, True)
        gfeatures[:, :start] += conv_backward(gy, features[:, :start], i)
    return gfeatures[:, :c].contiguous(), dweights, dbiases


#: implementation -> (forward, backward) on checked arguments.
IMPLEMENTATIONS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "reference": (_forward_aten, _backward_aten),
    "cpp": (lambda *args: torch.ops.din_fast._dense_block_cpp.default(*args),
            lambda *args: torch.ops.din_fast._dense_block_backward_cpp.default(*args)),
}

# -- the torch.library ops ------------------------------------------------------------------------------
LIB.define(f"{NAME}(Tensor x, Tensor[] weights, Tensor[] biases) -> (Tensor, Tensor)")
LIB.define(f"{NAME}_backward(Tensor grad, Tensor features, Tensor[] weights, Tensor[] biases) "
           "-> (Tensor, Tensor[], Tensor[])")
LIB.define(f"_{NAME}_cpp(Tensor x, Tensor[] weights, Tensor[] biases) -> (Tensor, Tensor)")
LIB.define(f"_{NAME}_backward_cpp(Tensor grad, Tensor features, Tensor[] weights, Tensor[] biases) "
           "-> (Tensor, Tensor[], Tensor[])")
backends.declare_kernels(NAME, ("cpp",))


def _channels(features: torch.Tensor, weights: Sequence[torch.Tensor]) -> int:
    return features.shape[1] - (len(weights) - 1) * weights[0].shape[0]


def _check_backward(grad: torch.Tensor, features: torch.Tensor, weights: Sequence[torch.Tensor],
                    biases: Sequence[torch.Tensor]) -> None:
    contract.feature("features", features)
    c = _channels(features, weights) if isinstance(weights, (list, tuple)) and weights else 0
    _check(features[:, :max(c, 1)], weights, biases)
    contract.same_as("grad", grad, "features", features, _shapes(features, weights)[0])


def _route_forward(x: torch.Tensor, weights: _Tensors, biases: _Tensors) -> tuple[torch.Tensor, torch.Tensor]:
    _check(x, weights, biases)
    y, features = IMPLEMENTATIONS[backends.resolve(NAME, x.device, x.dtype)][0](x, weights, biases)
    return _formatted(y, x), features


def _route_backward(grad: torch.Tensor, features: torch.Tensor, weights: _Tensors, biases: _Tensors
                    ) -> tuple[torch.Tensor, _Tensors, _Tensors]:
    _check_backward(grad, features, weights, biases)
    impl = backends.resolve(NAME, features.device, features.dtype)
    return IMPLEMENTATIONS[impl][1](grad, features, weights, biases)


for _key in ("CPU", "CUDA"):
    LIB.impl(NAME, _route_forward, _key)
    LIB.impl(f"{NAME}_backward", _route_backward, _key)


@torch.library.register_fake(f"din_fast::{NAME}", lib=LIB)
def _fake_forward(x: torch.Tensor, weights: _Tensors, biases: _Tensors) -> tuple[torch.Tensor, torch.Tensor]:
    _check(x, weights, biases)
    y_shape, f_shape = _shapes(x, weights)
    return _formatted(x.new_empty(y_shape), x), x.new_empty(f_shape)


@torch.library.register_fake(f"din_fast::{NAME}_backward", lib=LIB)
def _fake_backward(grad: torch.Tensor, features: torch.Tensor, weights: _Tensors, biases: _Tensors
                   ) -> tuple[torch.Tensor, _Tensors, _Tensors]:
    _check_backward(grad, features, weights, biases)
    b, _, h, w = features.shape
    return (features.new_empty((b, _channels(features, weights), h, w)), [torch.empty_like(t) for t in weights],
            [torch.empty_like(t) for t in biases])


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, weights, biases = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.n, ctx.memory_format = len(weights), memory_format_of(x)
    ctx.save_for_backward(output[1], *weights, *biases)


def _autograd_backward(ctx: Any, grad: torch.Tensor, _grad_features: Any) -> tuple[Any, ...]:
    features, *params = ctx.saved_tensors
    args = (features, params[:ctx.n], params[ctx.n:])
    dx, dweights, dbiases = differentiable_once(_OP_BACKWARD, grad, args, (None, ctx.n, ctx.n))
    return dx.contiguous(memory_format=ctx.memory_format), dweights, dbiases


_OP = torch.ops.din_fast.dense_block.default
_OP_BACKWARD = torch.ops.din_fast.dense_block_backward.default
torch.library.register_autograd(f"din_fast::{NAME}", _autograd_backward, setup_context=_setup_context, lib=LIB)
register_autocast(NAME)


def dense_block(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> torch.Tensor:
    """DIN's dense block body ``y`` (module docstring has the maths and shapes) on the implementation
    ``din_fast.backends`` picks; autocast-aware. Under the reference backend the reference's plain
    autograd graph. The cpp implementation on plain eager tensors takes the eager fast path
    (``_C.eager_call``: the kernel, under the C++ autograd node when a gradient is needed, which saves
    the features buffer in place of x); every other call the op ``din_fast::dense_block``
    (torch.library's autograd, the router)."""
    args: Sequence[Any] = (x, weights, biases)
    if any_autocast_enabled() and isinstance(x, torch.Tensor) \
            and torch.is_autocast_enabled(x.device.type):
        args = _autocast_args(args, x.device.type)
    _check(*args)
    x, weights, biases = args
    impl = backends.resolve(NAME, x.device, x.dtype)
    if impl == "reference":  # a plain graph (ONNX export traces it)
        return reference.dense_block(x, list(weights), list(biases))
    if impl == "cpp" and _eager_plain([x, *weights, *biases]):
        return _extension.module().eager_call(eager_kernels(NAME, "cpp"), x, weights, biases)
    return _OP(x, list(weights), list(biases))[0]  # its router checks again (it checks direct calls too)
