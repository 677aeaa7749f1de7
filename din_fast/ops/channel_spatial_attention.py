"""``channel_spatial_attention``: DRFN's CAM, SAM and group residual (paper eq. 5) as one op.

Maths (CBAM's modules in CBAM's order, with DRFN's 1x1 convs of reduction 16 and 7x7 spatial conv):
``a = sigmoid(mlp(avg_HW x) + mlp(max_HW x))`` per (batch, channel), ``mlp(t) = W2 relu(W1 t + b1) + b2``;
``x' = a ⊙ x``; ``s = sigmoid(conv7x7([mean_C x'; max_C x']) + b_s)`` per (batch, pixel);
``y = s ⊙ x' + skip``. The fused kernels read x three times (channel statistics; per-pixel channel
statistics of x'; the output) and never write x'.

Shapes: x, skip (B, C, H, W); w_ca1 (R, C, 1, 1), b_ca1 (R,); w_ca2 (C, R, 1, 1), b_ca2 (C,);
w_sa (1, 2, 7, 7), b_sa (1,). Output (B, C, H, W). The max pools' gradients go to one maximal element
(the first), as max_pool2d's do; at exact ties that is one valid subgradient.

Implementations: reference, cpp, triton. There is no CUDA kernel: on GPUs the Triton kernel is the fused
implementation (backend ``auto`` or ``triton``); under backend ``cuda`` the reference runs.
"""

from __future__ import annotations

import torch

from din_fast import op_contract as contract
from din_fast.ops import reference
from din_fast.ops._library import FusedOp


def _check(x: torch.Tensor, skip: torch.Tensor, w_ca1: torch.Tensor, b_ca1: torch.Tensor, w_ca2: torch.Tensor,
           b_ca2: torch.Tensor, w_sa: torch.Tensor, b_sa: torch.Tensor) -> None:
    contract.feature("x", x)
    contract.same_as("skip", skip, "x", x)
    contract.channel_mlp("x", x, ("w_ca1", w_ca1), ("b_ca1", b_ca1), ("w_ca2", w_ca2), ("b_ca2", b_ca2))
    contract.same_as("w_sa", w_sa, "x", x, (1, 2, 7, 7))
    contract.same_as("b_sa", b_sa, "x", x, (1,))


_OP = FusedOp(
    "channel_spatial_attention(Tensor x, Tensor skip, Tensor w_ca1, Tensor b_ca1, Tensor w_ca2, Tensor b_ca2, "
    "Tensor w_sa, Tensor b_sa) -> Tensor",
    reference=reference.channel_spatial_attention,
    check=_check,
    output_shape=lambda x, *_: x.shape,
    kernels=("cpp", "triton"),
)


def channel_spatial_attention(x: torch.Tensor, skip: torch.Tensor, w_ca1: torch.Tensor, b_ca1: torch.Tensor,
                              w_ca2: torch.Tensor, b_ca2: torch.Tensor, w_sa: torch.Tensor,
                              b_sa: torch.Tensor) -> torch.Tensor:
    """Fused ``s ⊙ (a ⊙ x) + skip`` (module docstring has the maths and shapes)."""
    return _OP(x, skip, w_ca1, b_ca1, w_ca2, b_ca2, w_sa, b_sa)
