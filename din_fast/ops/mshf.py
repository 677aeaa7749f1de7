"""``mshf``: DeFiAN's multi-scale Hessian filter, max eigenvalue and channel mean, in one pass over x.

Maths: for scale k with dilation d_k ∈ (1, 2, 3) and kind j ∈ (xx, yy, xy), the depthwise 3x3 conv
``g_kj[c] = Σ_{p,q} weight[k,j,c,p,q] · x[c, h+(p−1)d_k, w+(q−1)d_k] + bias[k,j,c]`` (zero padding);
``λ_k = ((g_xx + g_yy) + sqrt((g_xx − g_yy)² + 4 g_xy²)) / 2``; ``out[k] = mean_c λ_k``.
The weights are general (the official checkpoints learned them); the analytic [1, −2, 1] / corner
kernels are only the initialisation. Where the square root's argument is 0 the derivative is
undefined; every implementation follows PyTorch autograd of the reference there (NaN gradients).

Shapes: x (B, C, H, W); weight (3, 3, C, 3, 3) [scale, kind, channel, row, col]; bias (3, 3, C).
Output (B, 3, H, W). Accumulation in float32 (float64 for float64).
"""

from __future__ import annotations

import torch

from din_fast import op_contract as contract
from din_fast.ops import reference
from din_fast.ops._library import FusedOp


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
    contract.feature("x", x)
    c = x.shape[1]
    contract.same_as("weight", weight, "x", x, (3, 3, c, 3, 3))
    contract.same_as("bias", bias, "x", x, (3, 3, c))


_OP = FusedOp(
    "mshf(Tensor x, Tensor weight, Tensor bias) -> Tensor",
    reference=reference.mshf,
    check=_check,
    output_shape=lambda x, *_: (x.shape[0], 3, x.shape[2], x.shape[3]),
    kernels=("cpp", "cuda", "triton"),
)


def mshf(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Fused multi-scale Hessian max-eigenvalue map (module docstring has the maths and shapes)."""
    return _OP(x, weight, bias)
