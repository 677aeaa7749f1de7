"""Triton kernels of ``din_fast::asyca`` and ``din_fast::asyca_backward`` (maths in din_fast/ops/asyca.py).

Two passes over the feature maps in each direction; the per-sample network between them acts on
(B, 2C) vectors and runs as a handful of tiny PyTorch ops in the accumulation dtype (its backward
through ``torch.func.vjp``):

- forward: ``_sums`` reduces Σx1, Σx2 per (b, c) (split over H·W into partials), the network gives
  (a, b), ``_pass2`` writes ``a ⊙ x1 + b ⊙ x2``;
- backward: ``_sums`` also reduces Σg·x1, Σg·x2 in the same read; the network's VJP gives the six
  parameter gradients and the gradient of the means, ``_pass2`` writes ``dx1 = a ⊙ g + dm1/HW`` and
  ``dx2 = b ⊙ g + dm2/HW`` from one read of g.

float16 / bfloat16 / float32 read and written in their dtype, accumulated in float32 (float64 for float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from din_fast.op_contract import check_asyca
from din_fast.kernels._layout import (acc_dtype, channel_block, check_grad, dense, split, strides, tile, tile_at,
                                      tl_acc_dtype)


@triton.jit
def _sums(x1, x2, g, part, C, HW, stride_b, stride_c, stride_p, per_split,
          WITH_GRAD: tl.constexpr, NS: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
          BLOCK_P: tl.constexpr):
    """part[b, s, k, c] for k = (Σx1, Σx2[, Σg·x1, Σg·x2]) over positions [s·per_split, (s+1)·per_split)."""
    b, cs, cmask, base = channel_block(C, stride_b, stride_c, BLOCK_C)
    s = tl.program_id(2)
    acc1 = tl.zeros([BLOCK_C], ACC)
    acc2 = tl.zeros([BLOCK_C], ACC)
    acc3 = tl.zeros([BLOCK_C], ACC)
    acc4 = tl.zeros([BLOCK_C], ACC)
    start = s * per_split
    for p0 in range(start, start + per_split, BLOCK_P):
        m, off = tile_at(base, cmask, p0, HW, stride_p, BLOCK_P)
        u = tl.load(x1 + off, mask=m, other=0.0).to(ACC)
        v = tl.load(x2 + off, mask=m, other=0.0).to(ACC)
        acc1 += tl.sum(u, axis=1)
        acc2 += tl.sum(v, axis=1)
        if WITH_GRAD:
            w = tl.load(g + off, mask=m, other=0.0).to(ACC)
            acc3 += tl.sum(w * u, axis=1)
            acc4 += tl.sum(w * v, axis=1)
    out = part + ((b * tl.num_programs(2) + s) * NS) * C + cs
    tl.store(out, acc1, mask=cmask)
    tl.store(out + C, acc2, mask=cmask)
    if WITH_GRAD:
        tl.store(out + 2 * C, acc3, mask=cmask)
        tl.store(out + 3 * C, acc4, mask=cmask)


@triton.jit
def _pass2(u, v, o1, o2, ca, cb, k1, k2, C, HW, stride_b, stride_c, stride_p,
           BACKWARD: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Forward: o1 = ca ⊙ u + cb ⊙ v. Backward (u = g): o1 = ca ⊙ u + k1, o2 = cb ⊙ u + k2."""
    b, cs, cmask, base = channel_block(C, stride_b, stride_c, BLOCK_C)
    m, off = tile_at(base, cmask, tl.program_id(2) * BLOCK_P, HW, stride_p, BLOCK_P)
    a_ = tl.load(ca + b * C + cs, mask=cmask, other=0.0)[:, None]
    b_ = tl.load(cb + b * C + cs, mask=cmask, other=0.0)[:, None]
    x = tl.load(u + off, mask=m, other=0.0).to(ACC)
    if BACKWARD:
        c1 = tl.load(k1 + b * C + cs, mask=cmask, other=0.0)[:, None]
        c2 = tl.load(k2 + b * C + cs, mask=cmask, other=0.0)[:, None]
        tl.store(o1 + off, (a_ * x + c1).to(o1.dtype.element_ty), mask=m)
        tl.store(o2 + off, (b_ * x + c2).to(o2.dtype.element_ty), mask=m)
    else:
        y = tl.load(v + off, mask=m, other=0.0).to(ACC)
        tl.store(o1 + off, (a_ * x + b_ * y).to(o1.dtype.element_ty), mask=m)


def _attention(m: torch.Tensor, w_init: torch.Tensor, b_init: torch.Tensor, w_dc: torch.Tensor,
               b_dc: torch.Tensor, w_ic: torch.Tensor, b_ic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b), each (B, C), from the channel means m (B, 2C): conv_init, conv_dc + ReLU, conv_ic, pair softmax."""
    c = m.shape[1] // 2
    z = F.linear(m, w_init.flatten(1), b_init)
    s = F.linear(F.relu(F.linear(z, w_dc.flatten(1), b_dc)), w_ic.flatten(1), b_ic)
    ab = torch.softmax(s.view(-1, 2, c), dim=1)
    return ab[:, 0], ab[:, 1]


def _means_and_products(x1: torch.Tensor, x2: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """(B, NS, C) sums over H·W: Σx1, Σx2 (and Σg·x1, Σg·x2 when g is given), in the accumulation dtype."""
    bsz, c, h, w = x1.shape
    hw = h * w
    block_c, block_p = tile(x1)
    splits, per_split = split(bsz, triton.cdiv(c, block_c), hw, block_p)
    ns = 2 if g is None else 4
    part = torch.empty(bsz, splits, ns, c, dtype=acc_dtype(x1.dtype), device=x1.device)
    _sums[(bsz, triton.cdiv(c, block_c), splits)](
        x1, x2, x1 if g is None else g, part, c, hw, *strides(x1), per_split, WITH_GRAD=g is not None, NS=ns,
        ACC=tl_acc_dtype(x1.dtype), BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4)
    return part.sum(1)


def _launch_pass2(u, v, o1, o2, ca, cb, k1, k2) -> None:
    bsz, c, h, w = u.shape
    block_c, block_p = tile(u)
    grid = (bsz, triton.cdiv(c, block_c), triton.cdiv(h * w, block_p))
    _pass2[grid](u, v if v is not None else u, o1, o2 if o2 is not None else o1, ca, cb,
                 k1 if k1 is not None else ca, k2 if k2 is not None else cb, c, h * w, *strides(u),
                 BACKWARD=o2 is not None, ACC=tl_acc_dtype(u.dtype), BLOCK_C=block_c, BLOCK_P=block_p,
                 num_warps=4)


def _params(params: tuple[torch.Tensor, ...], dtype: torch.dtype) -> list[torch.Tensor]:
    return [p.to(dtype) for p in params]


def forward(x1: torch.Tensor, x2: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
    """``din_fast::asyca`` on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1)."""
    check_asyca(x1, x2, *params)
    (x1, x2), fmt = dense([x1, x2])
    hw = x1.shape[2] * x1.shape[3]
    sums = _means_and_products(x1, x2, None)
    a, b = _attention(sums.flatten(1) / hw, *_params(params, sums.dtype))
    out = torch.empty_like(x1, memory_format=fmt)
    _launch_pass2(x1, x2, out, None, a.contiguous(), b.contiguous(), None, None)
    return out


def backward(grad: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor,
             *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``din_fast::asyca_backward``: (dx1, dx2, dw_init, db_init, dw_dc, db_dc, dw_ic, db_ic)."""
    check_asyca(x1, x2, *params)
    check_grad(grad, x1)
    (x1, x2, g), fmt = dense([x1, x2, grad])
    c, hw = x1.shape[1], x1.shape[2] * x1.shape[3]
    sums = _means_and_products(x1, x2, g)
    means = sums[:, :2].flatten(1) / hw
    (a, b), vjp = torch.func.vjp(_attention, means, *_params(params, sums.dtype))
    dm, *dparams = vjp((sums[:, 2], sums[:, 3]))
    dx1 = torch.empty_like(x1, memory_format=fmt)
    dx2 = torch.empty_like(x1, memory_format=fmt)
    k = dm / hw
    _launch_pass2(g, None, dx1, dx2, a.contiguous(), b.contiguous(), k[:, :c].contiguous(), k[:, c:].contiguous())
    return (dx1, dx2, *(d.to(p.dtype) for d, p in zip(dparams, params)))
