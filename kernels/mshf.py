"""Triton kernels of ``mshf`` (din_fast/ops/mshf.py has the maths and shapes).

The three scales and nine taps of a channel form one (BLOCK pixels, 4 scales, 16 taps) tile (padded
from 3 × 9, padding masked to 0): one gather loads every tap of every scale, and each kind's g is a
multiply with its (4, 16) weight tile and a sum over the taps. Zero padding of the image is the load
mask. Accumulation is float32 (float64 for float64 inputs).

Forward: one program per (batch, block of pixels) loops over the channels and adds λ per scale; it
writes the three channel means.

Backward: kernel 1 recomputes g per (batch, block, channel) and writes e = ∂λ/∂g · grad/C for the
three kinds, and per-block partial sums of dbias (Σ e) and dweight (Σ e · tap); kernel 2 applies the
transposed stencils to e for dx. Torch adds the per-block partials. Where the square root's argument
is 0 the derivative is NaN (0 · inf or 0/0), as autograd of the reference gives.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from din_fast.kernels._layout import acc_dtype, tl_acc_dtype

BLOCK = 64


@triton.jit
def _taps(h, w, H, W, inside, SIGN: tl.constexpr):
    """Pixel offsets (BLOCK, 4, 16) of tap t of scale s, at
    (h + SIGN·(t//3 − 1)·d, w + SIGN·(t%3 − 1)·d), d = s + 1, and the mask of taps that exist (s < 3, t < 9) and fall inside the image."""
    s = tl.arange(0, 4)[None, :, None]
    t = tl.arange(0, 16)[None, None, :]
    hh = h[:, None, None] + SIGN * (t // 3 - 1) * (s + 1)
    ww = w[:, None, None] + SIGN * (t % 3 - 1) * (s + 1)
    m = inside[:, None, None] & (s < 3) & (t < 9) & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    return hh * W + ww, m


@triton.jit
def _kernel_tile(w_ptr, c, C, j: tl.constexpr, ACC: tl.constexpr):
    """weight[s, j, c, t] as a (1, 4, 16) tile (0 where s = 3 or t ≥ 9)."""
    s = tl.arange(0, 4)[None, :, None]
    t = tl.arange(0, 16)[None, None, :]
    return tl.load(w_ptr + ((s * 3 + j) * C + c) * 9 + t, mask=(s < 3) & (t < 9), other=0.0).to(ACC)


@triton.jit
def _bias_row(b_ptr, c, C, j: tl.constexpr, ACC: tl.constexpr):
    s = tl.arange(0, 4)[None, :]
    return tl.load(b_ptr + (s * 3 + j) * C + c, mask=s < 3, other=0.0).to(ACC)


@triton.jit
def _hessian(x_ptr, w_ptr, b_ptr, idx, m, c, C, ACC: tl.constexpr):
    """(taps, gxx, gyy, gxy) of channel c: taps (BLOCK, 4, 16), each g (BLOCK, 4)."""
    taps = tl.load(x_ptr + idx, mask=m, other=0.0).to(ACC)
    gxx = tl.sum(taps * _kernel_tile(w_ptr, c, C, 0, ACC), axis=2) + _bias_row(b_ptr, c, C, 0, ACC)
    gyy = tl.sum(taps * _kernel_tile(w_ptr, c, C, 1, ACC), axis=2) + _bias_row(b_ptr, c, C, 1, ACC)
    gxy = tl.sum(taps * _kernel_tile(w_ptr, c, C, 2, ACC), axis=2) + _bias_row(b_ptr, c, C, 2, ACC)
    return taps, gxx, gyy, gxy


@triton.jit
def _forward_kernel(x_ptr, w_ptr, b_ptr, out_ptr, C, H, W, ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid_b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    n = H * W
    inside = offs < n
    idx, m = _taps(offs // W, offs % W, H, W, inside, 1)
    lam = tl.zeros([BLOCK, 4], ACC)
    for c in range(C):
        _, gxx, gyy, gxy = _hessian(x_ptr + (pid_b * C + c) * n, w_ptr, b_ptr, idx, m, c, C, ACC)
        diff = gxx - gyy
        lam += ((gxx + gyy) + tl.sqrt(diff * diff + 4.0 * (gxy * gxy))) * 0.5
    s = tl.arange(0, 4)[None, :]
    out = out_ptr + (pid_b * 3 + s) * n + offs[:, None]
    tl.store(out, (lam / C).to(out_ptr.dtype.element_ty), mask=inside[:, None] & (s < 3))


@triton.jit
def _eigen_grad_kernel(grad_ptr, x_ptr, w_ptr, b_ptr, e_ptr, pb_ptr, pw_ptr, C, H, W, ACC: tl.constexpr,
                       BLOCK: tl.constexpr):
    """e (B, C, 3 kinds, 4 scales, H·W); partials pb (B, blocks, C, 3, 4), pw (B, blocks, C, 3, 4, 16)."""
    pid_b = tl.program_id(0)
    pid = tl.program_id(1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    n = H * W
    inside = offs < n
    idx, m = _taps(offs // W, offs % W, H, W, inside, 1)
    s = tl.arange(0, 4)[None, :]
    row = inside[:, None] & (s < 3)
    half = tl.load(grad_ptr + (pid_b * 3 + s) * n + offs[:, None], mask=row, other=0.0).to(ACC) * 0.5 / C
    s1 = tl.arange(0, 4)
    t = tl.arange(0, 16)[None, :]
    for c in range(C):
        taps, gxx, gyy, gxy = _hessian(x_ptr + (pid_b * C + c) * n, w_ptr, b_ptr, idx, m, c, C, ACC)
        diff = gxx - gyy
        root = tl.where(row, tl.sqrt(diff * diff + 4.0 * (gxy * gxy)), 1.0)  # (padding lanes: no 0/0)
        q = half / root  # root = 0 in the image: inf or NaN, as autograd's sqrt backward
        exx = tl.where(row, half + q * diff, 0.0)
        eyy = tl.where(row, half - q * diff, 0.0)
        exy = tl.where(row, 4.0 * q * gxy, 0.0)
        e = e_ptr + (pid_b * C + c) * 12 * n + s * n + offs[:, None]
        tl.store(e, exx, mask=inside[:, None])
        tl.store(e + 4 * n, eyy, mask=inside[:, None])
        tl.store(e + 8 * n, exy, mask=inside[:, None])
        part = (pid_b * tl.num_programs(1) + pid) * C + c
        tl.store(pb_ptr + part * 12 + s1, tl.sum(exx, axis=0))
        tl.store(pb_ptr + part * 12 + 4 + s1, tl.sum(eyy, axis=0))
        tl.store(pb_ptr + part * 12 + 8 + s1, tl.sum(exy, axis=0))
        pw = pw_ptr + part * 192 + s1[:, None] * 16 + t
        tl.store(pw, tl.sum(exx[:, :, None] * taps, axis=0))
        tl.store(pw + 64, tl.sum(eyy[:, :, None] * taps, axis=0))
        tl.store(pw + 128, tl.sum(exy[:, :, None] * taps, axis=0))


@triton.jit
def _input_grad_kernel(e_ptr, w_ptr, dx_ptr, C, H, W, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """dx(h, w) = Σ_{s,j,t} weight[s, j, c, t] · e_sj(h − (t//3 − 1)d, w − (t%3 − 1)d)."""
    pid_bc = tl.program_id(0)
    c = pid_bc % C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    n = H * W
    inside = offs < n
    idx, m = _taps(offs // W, offs % W, H, W, inside, -1)
    s = tl.arange(0, 4)[None, :, None]
    e = e_ptr + pid_bc * 12 * n + s * n + idx
    prod = tl.load(e, mask=m, other=0.0) * _kernel_tile(w_ptr, c, C, 0, ACC)
    prod += tl.load(e + 4 * n, mask=m, other=0.0) * _kernel_tile(w_ptr, c, C, 1, ACC)
    prod += tl.load(e + 8 * n, mask=m, other=0.0) * _kernel_tile(w_ptr, c, C, 2, ACC)
    acc = tl.sum(tl.sum(prod, axis=2), axis=1)
    tl.store(dx_ptr + pid_bc * n + offs, acc.to(dx_ptr.dtype.element_ty), mask=inside)


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) channel means of λ per scale (inputs already checked by the op)."""
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    b, c, h, w = x.shape
    out = torch.empty(b, 3, h, w, dtype=x.dtype, device=x.device)
    _forward_kernel[(b, triton.cdiv(h * w, BLOCK))](x, weight, bias, out, c, h, w, ACC=tl_acc_dtype(x.dtype),
                                                    BLOCK=BLOCK)
    return out


def backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
             bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) for upstream ``grad`` (B, 3, H, W)."""
    grad, x, weight, bias = grad.contiguous(), x.contiguous(), weight.contiguous(), bias.contiguous()
    b, c, h, w = x.shape
    blocks = triton.cdiv(h * w, BLOCK)
    acc, acc_tl = acc_dtype(x.dtype), tl_acc_dtype(x.dtype)
    e = torch.empty(b, c, 3, 4, h * w, dtype=acc, device=x.device)
    pb = torch.empty(b, blocks, c, 3, 4, dtype=acc, device=x.device)
    pw = torch.empty(b, blocks, c, 3, 4, 16, dtype=acc, device=x.device)
    _eigen_grad_kernel[(b, blocks)](grad, x, weight, bias, e, pb, pw, c, h, w, ACC=acc_tl, BLOCK=BLOCK)
    dx = torch.empty_like(x)
    _input_grad_kernel[(b * c, blocks)](e, weight, dx, c, h, w, ACC=acc_tl, BLOCK=BLOCK)
    dbias = pb.sum(dim=(0, 1))[:, :, :3].permute(2, 1, 0)                       # (s, j, C)
    dweight = pw.sum(dim=(0, 1))[:, :, :3, :9].permute(2, 1, 0, 3).reshape(3, 3, c, 3, 3)
    return dx, dweight.to(x.dtype).contiguous(), dbias.to(x.dtype).contiguous()
