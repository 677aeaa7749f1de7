"""Triton kernels of ``criss_cross_attention`` (din_fast/ops/criss_cross_attention.py has the maths).

One program per line (as the C++ backward; the C++ forward works on blocks of rows instead), first every row (softmax over the row, the position itself
included), then every column (itself excluded), merging the column into the row's running maximum m,
sum l and unnormalised output, so the (B, H, W, H + W − 1) energies are never stored; per line the
energies are one (n × n) tile. A program owns its whole line, so the backward (recompute a = exp(e −
lse), dE = a (g·v − D), dq = dE k, dk = dEᵀ q, dv = aᵀ g) writes its keys' gradients without atomics;
the column phase adds to what the row phase wrote. Line tiles are padded to powers of two ≥ 16 (tl.dot).

Numerics: loads in the input dtype, products and softmax in float32 (float64 for float64 inputs; fp32
products in IEEE precision, not TF32), outputs in the input dtype. Lines must fit one tile: H, W ≤ 256.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from din_fast.kernels._layout import acc_dtype, tl_acc_dtype

MAX_LINE = 256


@triton.jit
def _load_line(ptr, b, pos, valid, CH, hw, CHP: tl.constexpr, ACC: tl.constexpr):
    """(NP, CHP) tile of a (B, CH, H, W) tensor at the line's positions, zero outside."""
    ch = tl.arange(0, CHP)
    mask = valid[:, None] & (ch[None, :] < CH)
    return tl.load(ptr + (b * CH + ch[None, :]) * hw + pos[:, None], mask=mask, other=0.0).to(ACC)


@triton.jit
def _line_inputs(q_ptr, k_ptr, v_ptr, H, W, CQ, C, ROWS: tl.constexpr, NP: tl.constexpr, CQP: tl.constexpr,
                 CP: tl.constexpr, ACC: tl.constexpr):
    """Program (line, b)'s line, a row (ROWS) or a column: (b, H·W, t = [0, NP), t on the line, the flat
    positions of t, and the q, k, v tiles there)."""
    b = tl.program_id(1).to(tl.int64)
    hw = H * W
    t = tl.arange(0, NP)
    if ROWS:
        valid = t < W
        pos = tl.program_id(0) * W + t
    else:
        valid = t < H
        pos = tl.program_id(0) + t * W
    qv = _load_line(q_ptr, b, pos, valid, CQ, hw, CQP, ACC)
    kv = _load_line(k_ptr, b, pos, valid, CQ, hw, CQP, ACC)
    vv = _load_line(v_ptr, b, pos, valid, C, hw, CP, ACC)
    return b, hw, t, valid, pos, qv, kv, vv


@triton.jit
def _line_forward(q_ptr, k_ptr, v_ptr, acc_ptr, m_ptr, l_ptr, out_ptr, H, W, CQ, C,
                  ROWS: tl.constexpr, FINAL: tl.constexpr, NP: tl.constexpr, CQP: tl.constexpr,
                  CP: tl.constexpr, ACC: tl.constexpr):
    """Rows (ROWS): m, l, acc of the row softmax (or the output when FINAL, H = 1). Columns: merge, then
    out = acc / l; m, l are left holding the full softmax's statistics (for the backward)."""
    b, hw, t, valid, pos, qv, kv, vv = _line_inputs(q_ptr, k_ptr, v_ptr, H, W, CQ, C, ROWS, NP, CQP, CP, ACC)
    e = tl.dot(qv, tl.trans(kv), input_precision="ieee", out_dtype=ACC)
    keep = (t[:, None] < NP) & valid[None, :]  # every query row, the line's keys
    if not ROWS:
        keep = keep & (t[:, None] != t[None, :])
    e = tl.where(keep, e, float("-inf"))
    stat = b * hw + pos
    block_max = tl.max(e, axis=1)
    if ROWS:
        new_max = block_max
    else:
        old_max = tl.load(m_ptr + stat, mask=valid, other=0.0)
        new_max = tl.maximum(old_max, block_max)
    p = tl.where(keep, tl.exp(e - new_max[:, None]), 0.0)
    total = tl.sum(p, axis=1)
    agg = tl.dot(p, vv, input_precision="ieee", out_dtype=ACC)
    ch = tl.arange(0, CP)
    idx = (b * C + ch[None, :]) * hw + pos[:, None]
    mask = valid[:, None] & (ch[None, :] < C)
    if ROWS:
        if FINAL:
            tl.store(out_ptr + idx, (agg / total[:, None]).to(out_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(acc_ptr + idx, agg, mask=mask)
        tl.store(m_ptr + stat, new_max, mask=valid)
        tl.store(l_ptr + stat, total, mask=valid)
    else:
        alpha = tl.exp(old_max - new_max)
        total = tl.load(l_ptr + stat, mask=valid, other=1.0) * alpha + total
        prev = tl.load(acc_ptr + idx, mask=mask, other=0.0)
        res = (prev * alpha[:, None] + agg) / total[:, None]
        tl.store(out_ptr + idx, res.to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(m_ptr + stat, new_max, mask=valid)
        tl.store(l_ptr + stat, total, mask=valid)


@triton.jit
def _line_backward(q_ptr, k_ptr, v_ptr, g_ptr, lse_ptr, d_ptr, dq_ptr, dk_ptr, dv_ptr, H, W, CQ, C,
                   ROWS: tl.constexpr, NP: tl.constexpr, CQP: tl.constexpr, CP: tl.constexpr,
                   ACC: tl.constexpr):
    """Gradients of one line's share of the softmax; rows write, columns add."""
    b, hw, t, valid, pos, qv, kv, vv = _line_inputs(q_ptr, k_ptr, v_ptr, H, W, CQ, C, ROWS, NP, CQP, CP, ACC)
    gv = _load_line(g_ptr, b, pos, valid, C, hw, CP, ACC)
    stat = b * hw + pos
    lse = tl.load(lse_ptr + stat, mask=valid, other=0.0)
    dsum = tl.load(d_ptr + stat, mask=valid, other=0.0)
    e = tl.dot(qv, tl.trans(kv), input_precision="ieee", out_dtype=ACC)
    keep = valid[:, None] & valid[None, :]
    if not ROWS:
        keep = keep & (t[:, None] != t[None, :])
    a = tl.where(keep, tl.exp(e - lse[:, None]), 0.0)
    da = tl.dot(gv, tl.trans(vv), input_precision="ieee", out_dtype=ACC)
    de = a * (da - dsum[:, None])
    dq = tl.dot(de, kv, input_precision="ieee", out_dtype=ACC)
    dk = tl.dot(tl.trans(de), qv, input_precision="ieee", out_dtype=ACC)
    dv = tl.dot(tl.trans(a), gv, input_precision="ieee", out_dtype=ACC)
    cq = tl.arange(0, CQP)
    qidx = (b * CQ + cq[None, :]) * hw + pos[:, None]
    qmask = valid[:, None] & (cq[None, :] < CQ)
    ch = tl.arange(0, CP)
    vidx = (b * C + ch[None, :]) * hw + pos[:, None]
    vmask = valid[:, None] & (ch[None, :] < C)
    if not ROWS:
        dq += tl.load(dq_ptr + qidx, mask=qmask, other=0.0)
        dk += tl.load(dk_ptr + qidx, mask=qmask, other=0.0)
        dv += tl.load(dv_ptr + vidx, mask=vmask, other=0.0)
    tl.store(dq_ptr + qidx, dq, mask=qmask)
    tl.store(dk_ptr + qidx, dk, mask=qmask)
    tl.store(dv_ptr + vidx, dv, mask=vmask)


def _tile(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _setup(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    b, cq, h, w = q.shape
    if max(h, w) > MAX_LINE:
        raise ValueError(f"the triton criss_cross_attention keeps a line in one tile: H, W <= {MAX_LINE}, "
                         f"got {h}x{w}")
    meta = dict(CQP=_tile(cq), CP=_tile(v.shape[1]), ACC=tl_acc_dtype(q.dtype))
    return (b, cq, h, w, v.shape[1]), acc_dtype(q.dtype), meta


def _forward(q, k, v):
    (b, cq, h, w, c), acc, meta = _setup(q, k, v)
    out = torch.empty_like(v)
    partial = torch.empty(v.shape, dtype=acc, device=v.device) if h > 1 else out
    m = torch.empty((b, h, w), dtype=acc, device=v.device)
    l = torch.empty_like(m)
    _line_forward[(h, b)](q, k, v, partial, m, l, out, h, w, cq, c, ROWS=True, FINAL=h == 1, NP=_tile(w), **meta)
    if h > 1:
        _line_forward[(w, b)](q, k, v, partial, m, l, out, h, w, cq, c, ROWS=False, FINAL=False, NP=_tile(h),
                              **meta)
    return out, m, l


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """din_fast::criss_cross_attention on contiguous copies of the inputs."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return _forward(q, k, v)[0]


def backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
             v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """din_fast::criss_cross_attention_backward: recompute out and lse, then rows, then columns."""
    q, k, v, grad = q.contiguous(), k.contiguous(), v.contiguous(), grad.contiguous()
    (b, cq, h, w, c), acc, meta = _setup(q, k, v)
    out, m, l = _forward(q, k, v)
    lse = m + torch.log(l)
    dsum = (grad.to(acc) * out.to(acc)).sum(1)
    dq = torch.empty(q.shape, dtype=acc, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty(v.shape, dtype=acc, device=v.device)
    _line_backward[(h, b)](q, k, v, grad, lse, dsum, dq, dk, dv, h, w, cq, c, ROWS=True, NP=_tile(w), **meta)
    if h > 1:
        _line_backward[(w, b)](q, k, v, grad, lse, dsum, dq, dk, dv, h, w, cq, c, ROWS=False, NP=_tile(h), **meta)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
