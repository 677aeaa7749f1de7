"""``conv3x3``: stride-1, zero-padded 3x3 convolution — the layer that is ~80–90 % of every model's time.

Maths: ``y[b, o, p] = bias[o] + Σ_c Σ_{a,d ∈ {-1,0,1}} weight[o, c, a+1, d+1] · x[b, c, p + (a, d)]``
(x zero outside the image), i.e. ``F.conv2d(x, weight, bias, padding=1)``.
Shapes: x (B, Cin, H, W); weight (Cout, Cin, 3, 3); bias (Cout,). Output (B, Cout, H, W).

Why an op of our own: on CPU, oneDNN runs these convolutions directly at close to the machine's peak
FLOP rate, so a faster fused path has to do fewer FLOPs. The C++ CPU kernel uses Winograd's minimal
filtering F(4x4, 3x3) (Lavin & Gray, 2016): per 4x4 output tile, 36 multiplications per (Cout, Cin) pair
instead of 144, as 36 batched GEMMs between transforms (see csrc/cpu/conv3x3.cpp). It is exact in exact
arithmetic; in float32 its rounding error is about 10× the direct convolution's (~1e-5 relative to the
output's scale per layer, ~1e-6 absolute on a whole DIN or DeFiAN output, tests/ops/test_conv3x3.py), far
inside the models' tolerance. The backward is the adjoint of the same transforms. One behaviour differs
from a direct convolution: an inf/NaN input pixel makes the whole 4x4 output tiles whose windows
contain it non-finite (not just its 3x3 neighbourhood).

With at most 4 output channels (the models' last conv, C features → 3 colours at the HR size) the forward
convolves directly instead: Winograd's GEMMs would have only Cout rows and its input transform of all C
channels would cost more than the 9·C multiply-adds per output value (benchmarks/NOTES.md). Its
rounding is a direct convolution's and an inf/NaN reaches only the 3x3 neighbourhood; its backward is the Winograd backward of the same convolution.

The op works strip by strip (a few tile rows of one image per thread at a time, in buffers each thread
keeps between calls), so the Winograd-domain data is never materialised for the whole map: at 96×96 the
whole-map buffers' page faults alone cost more than the arithmetic. ``DIN_FAST_CONV3X3_STRIP_ROWS=n`` forces
the strip height in tile rows (for tests and tuning; the default is chosen from the channel counts and the
thread count). The weight gradient is summed per thread, so it depends on the thread count at the level of
float rounding, as oneDNN's does.

Implementations: reference, cpp. There is no Triton or CUDA kernel: on GPUs cuDNN already chooses
Winograd or implicit-GEMM algorithms per shape, so the reference (``F.conv2d``) is the op's implementation
under backends ``triton`` and ``cuda`` (and ``auto`` on GPUs).
"""

from __future__ import annotations

import torch

from din_fast import op_contract as contract
from din_fast.ops import reference
from din_fast.ops._library import LIB, FusedOp


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
    contract.feature("x", x)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[0] == 0:
        raise ValueError(f"weight must have shape (Cout, {x.shape[1]}, 3, 3) with Cout > 0")
    cout = weight.shape[0]
    contract.same_as("weight", weight, "x", x, (cout, x.shape[1], 3, 3))
    contract.same_as("bias", bias, "x", x, (cout,))


_OP = FusedOp(
    "conv3x3(Tensor x, Tensor weight, Tensor bias) -> Tensor",
    reference=reference.conv3x3,
    check=_check,
    output_shape=lambda x, weight, bias: (x.shape[0], weight.shape[0], x.shape[2], x.shape[3]),
    kernels=("cpp",),
)


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` on the fastest implementation (module docstring)."""
    return _OP(x, weight, bias)


# The C++ CPU kernel's whole-map building blocks (csrc/cpu/winograd.h). DIN's dense block composes them in
# C++ (csrc/cpu/dense_block.cpp: every feature transformed once into one Winograd-domain buffer, read by
# every later conv); they are registered as private ops so that tests/ops/test_conv3x3.py can check each
# one against F.conv2d and its backward. Buffers V, M, dM, dV are (36, C, B·winograd_tiles(H, W)); element
# e = 6k + i.
LIB.define("_winograd_kernel_cpp(Tensor weight) -> Tensor")  # U (36, Cout, Cin) = G g Gᵀ
LIB.define("_winograd_kernel_adjoint_cpp(Tensor dU) -> Tensor")  # dweight (Cout, Cin, 3, 3) = Gᵀ dU G
LIB.define("_winograd_input_cpp(Tensor x, Tensor(a!) V, int offset) -> ()")  # V[:, offset:offset+C] = Bᵀ d B
LIB.define("_winograd_output_cpp(Tensor M, Tensor bias, float slope, Tensor(a!) out) -> ()")  # lrelu(Aᵀ M A + b)
LIB.define("_winograd_output_adjoint_cpp(Tensor grad) -> Tensor")  # dM = A dY Aᵀ
LIB.define("_winograd_input_adjoint_cpp(Tensor dV, int offset, Tensor(a!) dx) -> ()")  # dx = Σ B dV Bᵀ


def winograd_tiles(h: int, w: int) -> int:
    """Tiles per image of an H×W map in the C++ kernel's Winograd-domain buffers (their last dimension):
    ⌈H/4⌉ tile rows of ⌈W/4⌉ + 1 tiles (one padding tile per row), rounded up to a multiple of 16. Asked
    of the extension, whose kernels define the layout (csrc/cpu/conv3x3.cpp, ``Geometry``)."""
    from din_fast import _C  # here, not at import: a build without the extension never gets this far

    return _C.winograd_tiles(h, w)
