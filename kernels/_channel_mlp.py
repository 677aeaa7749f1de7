"""The squeeze-excitation MLP of the attention ops' Triton paths, in torch (B·K·C·R multiply-adds: not
worth a kernel): per sample, K channel statistics t_k go through one shared MLP C→R→C,
``h_k = W1 t_k + b1``, ``z = Σ_k (W2 relu(h_k) + b2)``, and its hand-written backward (the Triton
backward ops run under no_grad). channel_attention_residual uses K = 1 (the mean), channel_spatial_attention
K = 2 (mean and max). The C++ twin is csrc/cpu/channel_mlp.h.
"""

from __future__ import annotations

import torch


def forward(stats: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
            b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z (B, C), hidden (B, K, R)) for stats (B, K, C), w1 (R, C), b1 (R,), w2 (C, R), b2 (C,), all in
    the accumulation dtype; hidden is pre-ReLU (kept for the backward)."""
    hidden = stats @ w1.T + b1
    return (hidden.clamp(min=0) @ w2.T).sum(1) + stats.shape[1] * b2, hidden


def backward(dz: torch.Tensor, stats: torch.Tensor, hidden: torch.Tensor, w1: torch.Tensor,
             w2: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(dw1 (R, C), db1 (R,), dw2 (C, R), db2 (C,), dstats (B, K, C)) for dz = ∂L/∂z (B, C). ReLU stops
    the gradient where h <= 0 and passes it where h is NaN (as autograd's threshold_backward)."""
    k = stats.shape[1]
    dw2 = dz.T @ hidden.clamp(min=0).sum(1)
    dh = (dz @ w2).unsqueeze(1).masked_fill(hidden <= 0, 0)              # (B, K, R)
    dw1 = dh.flatten(0, 1).T @ stats.flatten(0, 1)
    return dw1, dh.sum((0, 1)), dw2, k * dz.sum(0), dh @ w1
