"""``dilated_encdec``: DeFiAN's dilated encoder-decoder (DiEnDec) plus its 1x1 gate as one op.

Maths: ``t0 = h``; three dilated 3x3 convs 3→6→12→24 (dilation 1, 2, 4), three dilated 3x3
transposed convs 24→12→6→3 (dilation 4, 2, 1; stride 1, so each equals a conv with the spatially
flipped, transposed weight), ReLU after each of the six, then the linear 1x1 gate 3→1. Padding equals
dilation, so H×W is kept; the receptive field is 1 + 2·2·(1+2+4) = 29 pixels. A fused kernel works
on spatial tiles with a 14-pixel halo and keeps the 6,871 weights on chip.

Shapes: h (B, 3, H, W); weights (7 tensors, module order): (6,3,3,3), (12,6,3,3), (24,12,3,3),
(24,12,3,3), (12,6,3,3), (6,3,3,3) — the last three in ConvTranspose2d's (in, out, kH, kW)
layout — and the gate (1,3,1,1); biases (6,), (12,), (24,), (12,), (6,), (3,), (1,).
Output (B, 1, H, W).
"""

from __future__ import annotations

import torch

from din_fast import op_contract as contract
from din_fast.ops import reference
from din_fast.ops._library import FusedOp

#: Shapes of the seven weights and biases, in module order.
WEIGHT_SHAPES = ((6, 3, 3, 3), (12, 6, 3, 3), (24, 12, 3, 3), (24, 12, 3, 3), (12, 6, 3, 3), (6, 3, 3, 3),
                 (1, 3, 1, 1))
BIAS_SHAPES = ((6,), (12,), (24,), (12,), (6,), (3,), (1,))


def _check(h: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> None:
    contract.feature("h", h, channels=3)
    for what, got, shapes in (("weights", weights, WEIGHT_SHAPES), ("biases", biases, BIAS_SHAPES)):
        if not isinstance(got, (list, tuple)) or len(got) != len(shapes):
            raise ValueError(f"{what} must be a list of {len(shapes)} tensors")
        for i, (t, shape) in enumerate(zip(got, shapes)):
            contract.same_as(f"{what}[{i}]", t, "h", h, shape)


_OP = FusedOp(
    "dilated_encdec(Tensor h, Tensor[] weights, Tensor[] biases) -> Tensor",
    reference=reference.dilated_encdec,
    check=_check,
    output_shape=lambda h, *_: (h.shape[0], 1, h.shape[2], h.shape[3]),
    kernels=("cpp", "cuda", "triton"),
)


def dilated_encdec(h: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """Fused DiEnDec + gate (module docstring has the maths and shapes)."""
    return _OP(h, list(weights), list(biases))
