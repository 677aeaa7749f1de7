"""Triton kernels of ``din_fast::dwc_sum`` and ``din_fast::dwc_sum_backward`` (maths in din_fast/ops/dwc_sum.py).

- forward: one flat pass, ``out = Σ_j weight[j] ⊙ inputs[j] + bias`` (channel index from the layout);
- backward: one pass over (b, channel block, H·W split) tiles that reads g and every input once,
  writes ``d inputs[j] = weight[j] ⊙ g`` and per-tile partial sums of g·inputs[j] and g, which a
  tiny PyTorch sum turns into the weight and bias gradients.

A launch takes up to ``MAX_K`` = 6 inputs (DIN needs at most 5); longer lists run in chunks of 6
(the forward accumulating into the output). float16 / bfloat16 / float32 read and written in their
dtype, accumulated in float32 (float64 for float64).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from din_fast.op_contract import check_dwc_sum
from din_fast.kernels._layout import (acc_dtype, channel_block, check_grad, dense, split, strides, tile, tile_at,
                                      tl_acc_dtype)

MAX_K = 6
_BLOCK = 2048


@triton.jit
def _term(acc, x, w, idx, c, m, C, j: tl.constexpr):
    return acc + tl.load(w + j * C + c, mask=m, other=0.0).to(acc.dtype) * tl.load(x + idx, mask=m, other=0.0).to(
        acc.dtype)


@triton.jit
def _forward(x0, x1, x2, x3, x4, x5, out, w, bias, N, C, stride_c, K: tl.constexpr, FIRST: tl.constexpr,
             LAST: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """out (+)= Σ_{j<K} w[j] ⊙ x_j (+ bias when LAST), flat over the N elements; w points at this chunk's rows."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = idx < N
    c = (idx // stride_c) % C
    if FIRST:
        acc = tl.zeros([BLOCK], ACC)
    else:
        acc = tl.load(out + idx, mask=m, other=0.0).to(ACC)
    acc = _term(acc, x0, w, idx, c, m, C, 0)
    if K > 1:
        acc = _term(acc, x1, w, idx, c, m, C, 1)
    if K > 2:
        acc = _term(acc, x2, w, idx, c, m, C, 2)
    if K > 3:
        acc = _term(acc, x3, w, idx, c, m, C, 3)
    if K > 4:
        acc = _term(acc, x4, w, idx, c, m, C, 4)
    if K > 5:
        acc = _term(acc, x5, w, idx, c, m, C, 5)
    if LAST:
        acc += tl.load(bias + c, mask=m, other=0.0).to(ACC)
    tl.store(out + idx, acc.to(out.dtype.element_ty), mask=m)


@triton.jit
def _grad_term(gv, x, d, w, off, m, cs, cmask, C, j: tl.constexpr):
    """Writes d = w[j] ⊙ g on the tile and returns the tile's Σ_p g·x per channel."""
    wj = tl.load(w + j * C + cs, mask=cmask, other=0.0).to(gv.dtype)
    tl.store(d + off, (wj[:, None] * gv).to(d.dtype.element_ty), mask=m)
    return tl.sum(gv * tl.load(x + off, mask=m, other=0.0).to(gv.dtype), axis=1)


@triton.jit
def _backward(g, x0, x1, x2, x3, x4, x5, d0, d1, d2, d3, d4, d5, w, part, C, HW, stride_b, stride_c, stride_p,
              per_split, K: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """part[b, s, j, c] = Σ g·x_j (j < K) and part[b, s, K, c] = Σ g over this split; d_j = w[j] ⊙ g."""
    b, cs, cmask, base = channel_block(C, stride_b, stride_c, BLOCK_C)
    s = tl.program_id(2)
    a0 = tl.zeros([BLOCK_C], ACC)
    a1 = tl.zeros([BLOCK_C], ACC)
    a2 = tl.zeros([BLOCK_C], ACC)
    a3 = tl.zeros([BLOCK_C], ACC)
    a4 = tl.zeros([BLOCK_C], ACC)
    a5 = tl.zeros([BLOCK_C], ACC)
    ag = tl.zeros([BLOCK_C], ACC)
    start = s * per_split
    for p0 in range(start, start + per_split, BLOCK_P):
        m, off = tile_at(base, cmask, p0, HW, stride_p, BLOCK_P)
        gv = tl.load(g + off, mask=m, other=0.0).to(ACC)
        ag += tl.sum(gv, axis=1)
        a0 += _grad_term(gv, x0, d0, w, off, m, cs, cmask, C, 0)
        if K > 1:
            a1 += _grad_term(gv, x1, d1, w, off, m, cs, cmask, C, 1)
        if K > 2:
            a2 += _grad_term(gv, x2, d2, w, off, m, cs, cmask, C, 2)
        if K > 3:
            a3 += _grad_term(gv, x3, d3, w, off, m, cs, cmask, C, 3)
        if K > 4:
            a4 += _grad_term(gv, x4, d4, w, off, m, cs, cmask, C, 4)
        if K > 5:
            a5 += _grad_term(gv, x5, d5, w, off, m, cs, cmask, C, 5)
    out = part + ((b * tl.num_programs(2) + s) * (K + 1)) * C + cs
    tl.store(out, a0, mask=cmask)
    if K > 1:
        tl.store(out + C, a1, mask=cmask)
    if K > 2:
        tl.store(out + 2 * C, a2, mask=cmask)
    if K > 3:
        tl.store(out + 3 * C, a3, mask=cmask)
    if K > 4:
        tl.store(out + 4 * C, a4, mask=cmask)
    if K > 5:
        tl.store(out + 5 * C, a5, mask=cmask)
    tl.store(out + K * C, ag, mask=cmask)


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(j, min(n, j + MAX_K)) for j in range(0, n, MAX_K)]


def _padded(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Pointer arguments x0..x5: unused slots repeat the first (never read: K masks them out)."""
    return ts + [ts[0]] * (MAX_K - len(ts))


def forward(inputs: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``din_fast::dwc_sum`` on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1)."""
    check_dwc_sum(inputs, weight, bias)
    xs, fmt = dense(list(inputs))
    out = torch.empty_like(xs[0], memory_format=fmt)
    n, c = out.numel(), out.shape[1]
    stride_c = strides(out)[1]
    weight, bias = weight.contiguous(), bias.contiguous()
    chunks = _chunks(len(xs))
    for i, (j0, j1) in enumerate(chunks):
        _forward[(triton.cdiv(n, _BLOCK),)](
            *_padded(xs[j0:j1]), out, weight[j0:j1], bias, n, c, stride_c, K=j1 - j0, FIRST=i == 0,
            LAST=i == len(chunks) - 1, ACC=tl_acc_dtype(out.dtype), BLOCK=_BLOCK, num_warps=4)
    return out


def backward(grad: torch.Tensor, inputs: list[torch.Tensor], weight: torch.Tensor,
             bias: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """``din_fast::dwc_sum_backward``: (d inputs, d weight, d bias)."""
    check_dwc_sum(inputs, weight, bias)
    check_grad(grad, inputs[0])
    (g, *xs), fmt = dense([grad, *inputs])
    bsz, c, h, w = g.shape
    block_c, block_p = tile(g)
    splits, per_split = split(bsz, triton.cdiv(c, block_c), h * w, block_p)
    weight = weight.contiguous()
    dxs = [torch.empty_like(g, memory_format=fmt) for _ in xs]
    dweight = torch.empty(len(xs), c, dtype=acc_dtype(g.dtype), device=g.device)
    dbias = None
    for j0, j1 in _chunks(len(xs)):
        k = j1 - j0
        part = torch.empty(bsz, splits, k + 1, c, dtype=acc_dtype(g.dtype), device=g.device)
        _backward[(bsz, triton.cdiv(c, block_c), splits)](
            g, *_padded(xs[j0:j1]), *_padded(dxs[j0:j1]), weight[j0:j1], part, c, h * w, *strides(g), per_split,
            K=k, ACC=tl_acc_dtype(g.dtype), BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4)
        sums = part.sum((0, 1))
        dweight[j0:j1] = sums[:k]
        dbias = sums[k]
    return dxs, dweight.to(weight.dtype), dbias.to(bias.dtype)
