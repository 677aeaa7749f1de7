"""Triton kernels of ``channel_attention_residual`` (the maths: din_fast/ops/channel_attention_residual.py).

Forward: per (b, c) plane Σ_HW t (one program per plane); the MLP on the means (_channel_mlp, torch: B·C·R
work) gives a = sigmoid(z); then ``y = u + a t`` over (plane, pixel block) programs. Backward: per plane
Σ t and Σ g t in one read; the MLP forward and its backward (dz = Σ(g t) a (1 − a)) give every
parameter gradient and dmean; then ``dt = g a + dmean / HW`` and ``du = g`` from one read of g.

Numerics: loads in the input dtype, accumulation in float32 (float64 for float64 inputs), outputs in
the input dtype. Non-NCHW inputs are made contiguous first.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from din_fast.kernels import _channel_mlp
from din_fast.kernels._layout import acc_dtype, check_grad, tl_acc_dtype

BLOCK = 1024


@triton.jit
def _plane_sums(t_ptr, g_ptr, sum_ptr, dot_ptr, HW, WITH_GRAD: tl.constexpr, ACC: tl.constexpr,
                BLOCK: tl.constexpr):
    """Per (b, c) plane: Σ t and, with the gradient g, Σ g t."""
    plane = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    total = tl.zeros((BLOCK,), ACC)
    dot = tl.zeros((BLOCK,), ACC)
    for start in range(0, HW, BLOCK):
        idx = start + offs
        m = idx < HW
        t = tl.load(t_ptr + plane * HW + idx, mask=m, other=0.0).to(ACC)
        total += t
        if WITH_GRAD:
            dot += t * tl.load(g_ptr + plane * HW + idx, mask=m, other=0.0).to(ACC)
    tl.store(sum_ptr + plane, tl.sum(total, axis=0))
    if WITH_GRAD:
        tl.store(dot_ptr + plane, tl.sum(dot, axis=0))


@triton.jit
def _residual(u_ptr, t_ptr, a_ptr, y_ptr, HW, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """y = u + a t on one pixel block of one plane."""
    plane = tl.program_id(0).to(tl.int64)
    idx = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = idx < HW
    a = tl.load(a_ptr + plane)
    u = tl.load(u_ptr + plane * HW + idx, mask=m, other=0.0).to(ACC)
    t = tl.load(t_ptr + plane * HW + idx, mask=m, other=0.0).to(ACC)
    tl.store(y_ptr + plane * HW + idx, (u + a * t).to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _input_grads(g_ptr, a_ptr, shift_ptr, dt_ptr, du_ptr, HW, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """dt = g a + shift and du = g on one pixel block of one plane (shift = dmean / HW of the plane)."""
    plane = tl.program_id(0).to(tl.int64)
    idx = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = idx < HW
    g = tl.load(g_ptr + plane * HW + idx, mask=m, other=0.0)
    dt = g.to(ACC) * tl.load(a_ptr + plane) + tl.load(shift_ptr + plane)
    tl.store(dt_ptr + plane * HW + idx, dt.to(dt_ptr.dtype.element_ty), mask=m)
    tl.store(du_ptr + plane * HW + idx, g, mask=m)


def _attention(t, g, w1, b1, w2, b2):
    """Plane sums (kernel) and the MLP (torch): a (B, C), the means, Σ g t (or None) and the MLP's
    hidden values and flattened weights in the accumulation dtype."""
    b, c, h, w = t.shape
    hw = h * w
    acc, acc_tl = acc_dtype(t.dtype), tl_acc_dtype(t.dtype)
    sums = torch.empty((b, 1, c), dtype=acc, device=t.device)
    dots = torch.empty_like(sums) if g is not None else sums
    _plane_sums[(b * c,)](t, t if g is None else g, sums, dots, hw, WITH_GRAD=g is not None, ACC=acc_tl,
                          BLOCK=BLOCK)
    mean = sums / hw
    w1f, w2f = w1.flatten(1).to(acc), w2.flatten(1).to(acc)
    z, hidden = _channel_mlp.forward(mean, w1f, b1.to(acc), w2f, b2.to(acc))
    return torch.sigmoid(z), mean, dots[:, 0] if g is not None else None, hidden, w1f, w2f


def forward(u: torch.Tensor, t: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
            b2: torch.Tensor) -> torch.Tensor:
    """din_fast::channel_attention_residual on contiguous copies of u and t."""
    u, t = u.contiguous(), t.contiguous()
    b, c, h, w = t.shape
    a = _attention(t, None, w1, b1, w2, b2)[0]
    y = torch.empty_like(u)
    _residual[(b * c, triton.cdiv(h * w, BLOCK))](u, t, a, y, h * w, ACC=tl_acc_dtype(t.dtype), BLOCK=BLOCK)
    return y


def backward(grad: torch.Tensor, u: torch.Tensor, t: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
             w2: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """din_fast::channel_attention_residual_backward: (du, dt, dw1, db1, dw2, db2)."""
    check_grad(grad, u)
    g, t = grad.contiguous(), t.contiguous()
    b, c, h, w = t.shape
    hw = h * w
    a, mean, dots, hidden, w1f, w2f = _attention(t, g, w1, b1, w2, b2)
    dw1, db1, dw2, db2, dmean = _channel_mlp.backward(dots * a * (1 - a), mean, hidden, w1f, w2f)
    du, dt = torch.empty_like(g), torch.empty_like(t)
    _input_grads[(b * c, triton.cdiv(hw, BLOCK))](g, a, (dmean[:, 0] / hw).contiguous(), dt, du, hw,
                                                  ACC=tl_acc_dtype(t.dtype), BLOCK=BLOCK)
    return (du, dt, dw1.view_as(w1).to(w1.dtype), db1.to(b1.dtype), dw2.view_as(w2).to(w2.dtype),
            db2.to(b2.dtype))
