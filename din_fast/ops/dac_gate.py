"""``dac_gate``: DeFiAN's distribution alignment, sigmoid gate and module residual as one op.

Maths: with μ_t, σ_t the spatial mean and sqrt(unbiased variance + 1e-5) of t per (batch, channel),
``A = sigmoid((v − μ_v)/σ_v · std_fc(σ_x) + mean_fc(μ_x))`` and ``y = x + r ⊙ A``, where
``fc(t) = W2 relu(W1 t)`` (bias-free, C→C/16→C). v has one channel, so its normalisation is computed
once and broadcast (the official code expands v to C identical channels first; same values).
One reduction pass gives μ_x, σ_x, μ_v, σ_v; one elementwise pass writes y.

Shapes: x, r (B, C, H, W); v (B, 1, H, W); w_mean1, w_std1 (R, C, 1, 1); w_mean2, w_std2 (C, R, 1, 1).
Output (B, C, H, W). H·W must be > 1 (the unbiased variance of one pixel is undefined).

Implementations: reference, cpp, triton. There is no CUDA kernel: on GPUs the Triton kernel is the fused
implementation (backend ``auto`` or ``triton``); under backend ``cuda`` the reference runs.
"""

from __future__ import annotations

import torch

from din_fast import op_contract as contract
from din_fast.ops import reference
from din_fast.ops._library import FusedOp


def _check(x: torch.Tensor, r: torch.Tensor, v: torch.Tensor, w_mean1: torch.Tensor, w_mean2: torch.Tensor,
           w_std1: torch.Tensor, w_std2: torch.Tensor) -> None:
    contract.feature("x", x)
    b, c, h, w = x.shape
    if h * w < 2:
        raise ValueError(f"x must have H*W > 1 (the unbiased variance of one pixel is undefined), "
                         f"got shape {tuple(x.shape)}")
    contract.same_as("r", r, "x", x)
    contract.same_as("v", v, "x", x, (b, 1, h, w))
    if not isinstance(w_mean1, torch.Tensor) or w_mean1.dim() != 4 or w_mean1.shape[0] == 0:
        raise ValueError(f"w_mean1 must have shape (R, {c}, 1, 1) with R > 0")
    red = w_mean1.shape[0]
    contract.same_as("w_mean1", w_mean1, "x", x, (red, c, 1, 1))
    contract.same_as("w_mean2", w_mean2, "x", x, (c, red, 1, 1))
    contract.same_as("w_std1", w_std1, "x", x, (red, c, 1, 1))
    contract.same_as("w_std2", w_std2, "x", x, (c, red, 1, 1))


_OP = FusedOp(
    "dac_gate(Tensor x, Tensor r, Tensor v, Tensor w_mean1, Tensor w_mean2, Tensor w_std1, Tensor w_std2) "
    "-> Tensor",
    reference=reference.dac_gate,
    check=_check,
    output_shape=lambda x, *_: x.shape,
    kernels=("cpp", "triton"),
)


def dac_gate(x: torch.Tensor, r: torch.Tensor, v: torch.Tensor, w_mean1: torch.Tensor, w_mean2: torch.Tensor,
             w_std1: torch.Tensor, w_std2: torch.Tensor) -> torch.Tensor:
    """Fused ``x + r ⊙ sigmoid(DAC(v, x))`` (module docstring has the maths and shapes)."""
    return _OP(x, r, v, w_mean1, w_mean2, w_std1, w_std2)
