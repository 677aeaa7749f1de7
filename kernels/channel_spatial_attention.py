"""Triton kernels of ``channel_spatial_attention`` (din_fast/ops/channel_spatial_attention.py has the maths).

Forward, three kernels: per (b, c) plane the spatial mean and max; per pixel block the channel mean
and max of x' = a x (a from the channel MLP, a (B, C) torch computation between the kernels: it is
B·C·R multiply-adds); per pixel block the 7x7 gate s and ``y = s a x + skip`` for every channel. x' is
never stored. Backward: the same statistics (with arg-maxima) and ds = Σ_c g x' in the pixel pass;
the gate's gradient and its transposed 7x7 conv per pixel block (weight gradients as per-program
partial sums, added by one torch reduction: deterministic); per plane dx' = g s + dmean / C +
[c = argmax] dmax, da = Σ dx' x, dx = a dx'; the MLP's backward in torch; then the spatial statistics'
share of dx (a broadcast add and a scatter at the plane arg-maxima).

Numerics: loads in the input dtype, accumulation in float32 (float64 for float64 inputs), outputs in
the input dtype. The max pools' gradients go to the first maximal element (as max_pool2d's).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from din_fast.kernels import _channel_mlp
from din_fast.kernels._layout import acc_dtype, tl_acc_dtype
from din_fast.kernels._pixel_blocks import pixel_block, pixel_grid, shifted

BLOCK = 256
TAPS = 7
PAD = 3


@triton.jit
def _plane_stats(x_ptr, mean_ptr, max_ptr, arg_ptr, HW, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Per (b, c) plane: mean, max and the first index of the max over H·W."""
    plane = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    total = tl.zeros((BLOCK,), ACC)
    best = tl.full((BLOCK,), float("-inf"), ACC)
    where = tl.zeros((BLOCK,), tl.int64)
    for start in range(0, HW, BLOCK):
        idx = start + offs
        v = tl.load(x_ptr + plane * HW + idx, mask=idx < HW, other=float("-inf")).to(ACC)
        total += tl.where(idx < HW, v, 0.0)
        more = v > best
        where = tl.where(more, idx, where)
        best = tl.where(more, v, best)
    top = tl.max(best, axis=0)
    first = tl.min(tl.where(best == top, where, HW), axis=0)
    tl.store(mean_ptr + plane, tl.sum(total, axis=0) / HW)
    tl.store(max_ptr + plane, top)
    tl.store(arg_ptr + plane, first)


@triton.jit
def _pixel_stats(x_ptr, a_ptr, g_ptr, pooled_ptr, arg_ptr, ds_ptr, C, HW, WITH_GRAD: tl.constexpr,
                 ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Per pixel: channel mean and max of x' = a x (pooled (B, 2, HW)); with the gradient g also the first
    channel of the max and ds = Σ_c g x'."""
    b, idx, inside = pixel_block(HW, BLOCK)
    total = tl.zeros((BLOCK,), ACC)
    best = tl.full((BLOCK,), float("-inf"), ACC)
    where = tl.zeros((BLOCK,), tl.int64)
    dot = tl.zeros((BLOCK,), ACC)
    for c in range(0, C):
        ac = tl.load(a_ptr + b * C + c).to(ACC)
        v = ac * tl.load(x_ptr + (b * C + c) * HW + idx, mask=inside, other=0.0).to(ACC)
        total += v
        more = v > best
        best = tl.where(more, v, best)
        if WITH_GRAD:
            where = tl.where(more, c, where)
            dot += v * tl.load(g_ptr + (b * C + c) * HW + idx, mask=inside, other=0.0).to(ACC)
    tl.store(pooled_ptr + b * 2 * HW + idx, total / C, mask=inside)
    tl.store(pooled_ptr + (b * 2 + 1) * HW + idx, best, mask=inside)
    if WITH_GRAD:
        tl.store(arg_ptr + b * HW + idx, where, mask=inside)
        tl.store(ds_ptr + b * HW + idx, dot, mask=inside)


@triton.jit
def _gate_logit(pooled_ptr, w_ptr, b_ptr, b, y, x, inside, H, W, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """conv7x7(pooled)[b, y, x] + bias (zero padding)."""
    hw = H * W
    logit = tl.zeros((BLOCK,), ACC) + tl.load(b_ptr).to(ACC)
    for k in tl.static_range(2):
        for dy in tl.static_range(7):
            for dx in tl.static_range(7):
                wt = tl.load(w_ptr + (k * 7 + dy) * 7 + dx).to(ACC)
                logit += wt * shifted(pooled_ptr + (b * 2 + k) * hw, y, x, inside, dy - 3, dx - 3, H, W)
    return logit


@triton.jit
def _gate_apply(x_ptr, skip_ptr, a_ptr, pooled_ptr, w_ptr, b_ptr, y_ptr, C, H, W, ACC: tl.constexpr,
                BLOCK: tl.constexpr):
    """s = sigmoid(conv7x7(pooled) + bias) for a pixel block, then y = s a x + skip for every channel."""
    hw = H * W
    b, idx, inside = pixel_block(hw, BLOCK)
    s = tl.sigmoid(_gate_logit(pooled_ptr, w_ptr, b_ptr, b, idx // W, idx % W, inside, H, W, ACC, BLOCK))
    for c in range(0, C):
        ac = tl.load(a_ptr + b * C + c).to(ACC)
        off = (b * C + c) * hw + idx
        v = tl.load(x_ptr + off, mask=inside, other=0.0).to(ACC)
        r = tl.load(skip_ptr + off, mask=inside, other=0.0).to(ACC)
        tl.store(y_ptr + off, (s * ac * v + r).to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _gate_grad(pooled_ptr, w_ptr, b_ptr, ds_ptr, s_ptr, dlogit_ptr, H, W, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """s and dlogit = ds s (1 − s) for a pixel block."""
    hw = H * W
    b, idx, inside = pixel_block(hw, BLOCK)
    s = tl.sigmoid(_gate_logit(pooled_ptr, w_ptr, b_ptr, b, idx // W, idx % W, inside, H, W, ACC, BLOCK))
    ds = tl.load(ds_ptr + b * hw + idx, mask=inside, other=0.0)
    tl.store(s_ptr + b * hw + idx, s, mask=inside)
    tl.store(dlogit_ptr + b * hw + idx, ds * s * (1 - s), mask=inside)


@triton.jit
def _conv_backward(pooled_ptr, w_ptr, dlogit_ptr, dpooled_ptr, part_ptr, H, W, ACC: tl.constexpr,
                   BLOCK: tl.constexpr):
    """dpooled = transposed 7x7 conv of dlogit for a pixel block; part[prog, tap] = this block's share of
    dw[tap] = Σ_p dlogit[p] pooled[p + tap] and part[prog, 98] of the bias gradient."""
    hw = H * W
    b, idx, inside = pixel_block(hw, BLOCK)
    prog = b * tl.num_programs(0) + tl.program_id(0)
    y = idx // W
    x = idx % W
    dl = tl.load(dlogit_ptr + b * hw + idx, mask=inside, other=0.0)
    tl.store(part_ptr + prog * 99 + 98, tl.sum(dl, axis=0))
    for k in tl.static_range(2):
        acc = tl.zeros((BLOCK,), ACC)
        for dy in tl.static_range(7):
            for dx in tl.static_range(7):
                wt = tl.load(w_ptr + (k * 7 + dy) * 7 + dx).to(ACC)
                # gradient into pooled[y, x] from the output pixel it feeds through tap (dy, dx)
                acc += wt * shifted(dlogit_ptr + b * hw, y, x, inside, 3 - dy, 3 - dx, H, W)
                # weight gradient: output pixel (y, x) reads pooled[y + dy − 3, x + dx − 3]
                src = shifted(pooled_ptr + (b * 2 + k) * hw, y, x, inside, dy - 3, dx - 3, H, W)
                tl.store(part_ptr + prog * 99 + (k * 7 + dy) * 7 + dx, tl.sum(dl * src, axis=0))
        tl.store(dpooled_ptr + (b * 2 + k) * hw + idx, acc, mask=inside)


@triton.jit
def _input_grad(x_ptr, g_ptr, a_ptr, s_ptr, dpooled_ptr, arg_ptr, dx_ptr, da_ptr, C, HW, ACC: tl.constexpr,
                BLOCK: tl.constexpr):
    """Per (b, c) plane: dx' = g s + dmean / C + [c = argmax] dmax; da = Σ dx' x; dx = a dx'."""
    plane = tl.program_id(0).to(tl.int64)
    b = plane // C
    c = plane % C
    ac = tl.load(a_ptr + plane).to(ACC)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), ACC)
    for start in range(0, HW, BLOCK):
        idx = start + offs
        m = idx < HW
        v = tl.load(x_ptr + plane * HW + idx, mask=m, other=0.0).to(ACC)
        g = tl.load(g_ptr + plane * HW + idx, mask=m, other=0.0).to(ACC)
        s = tl.load(s_ptr + b * HW + idx, mask=m, other=0.0)
        dmean = tl.load(dpooled_ptr + b * 2 * HW + idx, mask=m, other=0.0)
        dmax = tl.load(dpooled_ptr + (b * 2 + 1) * HW + idx, mask=m, other=0.0)
        arg = tl.load(arg_ptr + b * HW + idx, mask=m, other=-1)
        dxq = g * s + dmean / C + tl.where(arg == c, dmax, 0.0)
        acc += dxq * v
        tl.store(dx_ptr + plane * HW + idx, ac * dxq, mask=m)
    tl.store(da_ptr + plane, tl.sum(acc, axis=0))


def _acc(x: torch.Tensor) -> tuple[torch.dtype, tl.dtype]:
    return acc_dtype(x.dtype), tl_acc_dtype(x.dtype)


def _channel_attention(x, w_ca1, b_ca1, w_ca2, b_ca2, acc):
    """Plane statistics (kernel) and the tiny MLP (torch, _channel_mlp): a (B, C) and what its backward
    needs."""
    b, c, h, w = x.shape
    hw = h * w
    mean = torch.empty((b, c), dtype=acc[0], device=x.device)
    mx = torch.empty_like(mean)
    arg = torch.empty((b, c), dtype=torch.int64, device=x.device)
    _plane_stats[(b * c,)](x, mean, mx, arg, hw, ACC=acc[1], BLOCK=BLOCK)
    stats = torch.stack([mean, mx], 1)                                    # (B, 2, C)
    w1, w2 = w_ca1.flatten(1).to(acc[0]), w_ca2.flatten(1).to(acc[0])
    z, hidden = _channel_mlp.forward(stats, w1, b_ca1.to(acc[0]), w2, b_ca2.to(acc[0]))
    return torch.sigmoid(z), (stats, arg, hidden, w1, w2)


def forward(x: torch.Tensor, skip: torch.Tensor, w_ca1: torch.Tensor, b_ca1: torch.Tensor, w_ca2: torch.Tensor,
            b_ca2: torch.Tensor, w_sa: torch.Tensor, b_sa: torch.Tensor) -> torch.Tensor:
    """din_fast::channel_spatial_attention on contiguous copies of x and skip."""
    x, skip = x.contiguous(), skip.contiguous()
    b, c, h, w = x.shape
    acc = _acc(x)
    a, _ = _channel_attention(x, w_ca1, b_ca1, w_ca2, b_ca2, acc)
    pooled = torch.empty((b, 2, h * w), dtype=acc[0], device=x.device)
    grid = pixel_grid(x, BLOCK)
    _pixel_stats[grid](x, a, x, pooled, pooled, pooled, c, h * w, WITH_GRAD=False, ACC=acc[1], BLOCK=BLOCK)
    y = torch.empty_like(x)
    _gate_apply[grid](x, skip, a, pooled, w_sa.contiguous(), b_sa, y, c, h, w, ACC=acc[1], BLOCK=BLOCK)
    return y


def backward(grad: torch.Tensor, x: torch.Tensor, skip: torch.Tensor, w_ca1: torch.Tensor, b_ca1: torch.Tensor,
             w_ca2: torch.Tensor, b_ca2: torch.Tensor, w_sa: torch.Tensor, b_sa: torch.Tensor):
    """din_fast::channel_spatial_attention_backward: gradients of x, skip and the six parameters."""
    x, g = x.contiguous(), grad.contiguous()
    b, c, h, w = x.shape
    hw = h * w
    acc = _acc(x)
    a, (stats, plane_arg, hidden, w1, w2) = _channel_attention(x, w_ca1, b_ca1, w_ca2, b_ca2, acc)
    pooled = torch.empty((b, 2, hw), dtype=acc[0], device=x.device)
    pixel_arg = torch.empty((b, hw), dtype=torch.int64, device=x.device)
    ds = torch.empty((b, hw), dtype=acc[0], device=x.device)
    grid = pixel_grid(x, BLOCK)
    _pixel_stats[grid](x, a, g, pooled, pixel_arg, ds, c, hw, WITH_GRAD=True, ACC=acc[1], BLOCK=BLOCK)
    s = torch.empty_like(ds)
    dlogit = torch.empty_like(ds)
    ws = w_sa.contiguous()
    _gate_grad[grid](pooled, ws, b_sa, ds, s, dlogit, h, w, ACC=acc[1], BLOCK=BLOCK)
    dpooled = torch.empty_like(pooled)
    parts = torch.empty((grid[0] * b, 99), dtype=acc[0], device=x.device)
    _conv_backward[grid](pooled, ws, dlogit, dpooled, parts, h, w, ACC=acc[1], BLOCK=BLOCK)
    totals = parts.sum(0)
    dx = torch.empty_like(x)
    da = torch.empty((b, c), dtype=acc[0], device=x.device)
    _input_grad[(b * c,)](x, g, a, s, dpooled, pixel_arg, dx, da, c, hw, ACC=acc[1], BLOCK=BLOCK)
    dz = da * a * (1 - a)                                                 # (B, C)
    dw1, db1, dw2, db2, dstats = _channel_mlp.backward(dz, stats, hidden, w1, w2)
    dx_acc = dx.view(b * c, hw).to(acc[0]) + (dstats[:, 0].reshape(-1, 1) / hw)
    dx_acc.scatter_add_(1, plane_arg.view(-1, 1), dstats[:, 1].reshape(-1, 1))
    return (dx_acc.view_as(x).to(x.dtype), grad.clone(memory_format=torch.contiguous_format),
            dw1.view_as(w_ca1).to(w_ca1.dtype), db1.to(b_ca1.dtype), dw2.view_as(w_ca2).to(w_ca2.dtype),
            db2.to(b_ca2.dtype), totals[:98].view_as(w_sa).to(w_sa.dtype),
            totals[98:].to(b_sa.dtype))
