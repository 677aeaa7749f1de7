"""``dwc_sum``: the densely weighted connection sum of DIN's WRDB, in one pass.

Maths: ``out = Σ_j weight[j] ⊙ inputs[j] + bias`` with per-channel weights (each term is a 1x1
depthwise conv). DIN folds into it the WRDB's depthwise connections, the RDB residual
``x + 0.1·y6`` and the WRDB residual ``x + 0.1·s``, so a state is written once.
Backward: ``d inputs[j] = weight[j] ⊙ g``, ``d weight[j, c] = Σ_{b,h,w} g·inputs[j]``,
``d bias[c] = Σ_{b,h,w} g``.

Shapes: inputs k ≥ 1 tensors (B, C, H, W) of one shape, dtype and device; weight (k, C); bias (C,).
Output (B, C, H, W). Accumulation in float32 (float64 for float64).
"""

from __future__ import annotations

import torch

from din_fast import op_contract as contract
from din_fast.ops import reference
from din_fast.ops._library import FusedOp


_OP = FusedOp(
    "dwc_sum(Tensor[] inputs, Tensor weight, Tensor bias) -> Tensor",
    reference=reference.dwc_sum,
    check=contract.check_dwc_sum,
    output_shape=lambda inputs, *_: inputs[0].shape,
    kernels=("cpp", "cuda", "triton"),
)


def dwc_sum(inputs: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Fused ``Σ_j weight[j] ⊙ inputs[j] + bias`` (module docstring has the maths and shapes)."""
    return _OP(list(inputs), weight, bias)
