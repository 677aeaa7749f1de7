"""``asyca``: DIN's asymmetric co-attention node as one fused op.

Maths (see ``reference.asyca``): conv_init's output is used only through its spatial mean, so
``z = W_init · mean_HW(cat[x1, x2]) + b_init`` exactly; ``s = W_ic relu(W_dc z + b_dc) + b_ic`` (2C);
per channel ``(a_c, b_c) = softmax(s_c, s_{C+c})``; ``out = a ⊙ x1 + b ⊙ x2``.
A fused kernel reads x1 and x2 once for the means and once for the blend, and never materialises the
full-resolution 1x1 conv. When x1 is x2 (DIN's first node of each branch) the output equals x1
up to rounding, since a + b = 1.

Shapes: x1, x2 (B, C, H, W); w_init (C, 2C, 1, 1); b_init (C,); w_dc (R, C, 1, 1); b_dc (R,);
w_ic (2C, R, 1, 1); b_ic (2C,). Output (B, C, H, W). Accumulation in float32 (float64 for float64).
"""

from __future__ import annotations

import torch

from din_fast import op_contract as contract
from din_fast.ops import reference
from din_fast.ops._library import FusedOp


_OP = FusedOp(
    "asyca(Tensor x1, Tensor x2, Tensor w_init, Tensor b_init, Tensor w_dc, Tensor b_dc, Tensor w_ic, "
    "Tensor b_ic) -> Tensor",
    reference=reference.asyca,
    check=contract.check_asyca,
    output_shape=lambda x1, *_: x1.shape,
    kernels=("cpp", "cuda", "triton"),
)


def asyca(x1: torch.Tensor, x2: torch.Tensor, w_init: torch.Tensor, b_init: torch.Tensor,
          w_dc: torch.Tensor, b_dc: torch.Tensor, w_ic: torch.Tensor, b_ic: torch.Tensor) -> torch.Tensor:
    """Fused asymmetric co-attention ``a ⊙ x1 + b ⊙ x2`` (module docstring has the maths and shapes)."""
    return _OP(x1, x2, w_init, b_init, w_dc, b_dc, w_ic, b_ic)
