"""``criss_cross_attention``: CCNet's criss-cross attention, the core of CIRN's interlaced spatial attention.

Maths: for position p = (i, j), S(p) is row i together with column j, p itself counted once
(H + W − 1 positions); ``out[:, p] = Σ_{s ∈ S(p)} softmax_s(q[:, p] · k[:, s]) v[:, s]``. The fused
kernels never form the (B, H, W, H + W − 1) energy tensor of the reference: the C++ kernel holds the
energies of a block of 4 rows × 64 columns at a time (a two-pass softmax per position), the Triton
kernel merges the row and the column online (a running maximum and sum per position).

Shapes: q, k (B, Cq, H, W); v (B, C, H, W). Output (B, C, H, W). Accumulation in float32 (float64 for
float64 inputs).

Implementations: reference, cpp, triton. There is no CUDA kernel: on GPUs the Triton kernel is the fused
implementation (backend ``auto`` or ``triton``); under backend ``cuda`` the reference runs.
"""

from __future__ import annotations

import torch

from din_fast import op_contract as contract
from din_fast.ops import reference
from din_fast.ops._library import FusedOp


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    contract.feature("q", q)
    contract.same_as("k", k, "q", q)
    contract.feature("v", v)
    b, _, h, w = q.shape
    contract.same_as("v", v, "q", q, (b, v.shape[1], h, w))


_OP = FusedOp(
    "criss_cross_attention(Tensor q, Tensor k, Tensor v) -> Tensor",
    reference=reference.criss_cross_attention,
    check=_check,
    output_shape=lambda q, k, v: v.shape,
    kernels=("cpp", "triton"),
)


def criss_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Fused criss-cross attention (module docstring has the maths and shapes)."""
    return _OP(q, k, v)
