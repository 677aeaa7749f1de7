"""``channel_attention_residual``: the tail of DeFiAN's RCAB (channel attention and residual) as one op.

Maths: ``a = sigmoid(W2 relu(W1 mean_HW(t) + b1) + b2)`` per (batch, channel) and ``y = u + t ⊙ a``
(the official ``calayer``: 1x1 convs with biases C→R→C). Backward: ``du = g``,
``dt = g ⊙ a + (W1ᵀ [h > 0] (W2ᵀ dz)) / HW`` broadcast over the plane, with
``dz = Σ_HW(g ⊙ t) ⊙ a(1 − a)`` and h the pre-ReLU hidden values; dW1, db1, dW2, db2 from the same
MLP backward. The fused kernels
read t once for the means and once more for y (the backward: t and g once for Σt and Σg·t, g again
for dt and du).

Shapes: u, t (B, C, H, W); w1 (R, C, 1, 1), b1 (R,); w2 (C, R, 1, 1), b2 (C,). Output (B, C, H, W).
"""

from __future__ import annotations

import torch

from din_fast import op_contract as contract
from din_fast.ops import reference
from din_fast.ops._library import FusedOp


def _check(u: torch.Tensor, t: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
           b2: torch.Tensor) -> None:
    contract.feature("u", u)
    contract.same_as("t", t, "u", u)
    contract.channel_mlp("u", u, ("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))


_OP = FusedOp(
    "channel_attention_residual(Tensor u, Tensor t, Tensor w1, Tensor b1, Tensor w2, Tensor b2) -> Tensor",
    reference=reference.channel_attention_residual,
    check=_check,
    output_shape=lambda u, *_: u.shape,
    kernels=("cpp", "cuda", "triton"),
)


def channel_attention_residual(u: torch.Tensor, t: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                               w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Fused ``u + t ⊙ sigmoid(W2 relu(W1 mean_HW(t) + b1) + b2)`` (the module docstring has the maths
    and shapes)."""
    return _OP(u, t, w1, b1, w2, b2)
