"""Triton kernels of ``dac_gate`` (din_fast/ops/dac_gate.py has the maths and shapes).

One reduction kernel gives μ and σ per plane of x and of v (one program per plane, sums shifted by
the plane's first value to avoid cancellation); the C→C/16→C FCs act on (B, C) vectors and run in
torch. The gate kernel is the one elementwise pass. Backward: a kernel over (batch, pixel block)
loops over the channels, writes dr and ∂L/∂nv = Σ_c dz_c·scale_c and per-block partial sums of
∂L/∂scale and ∂L/∂shift; torch adds the partials and differentiates the tiny FCs; a last kernel writes
dx, and dv follows from ∂L/∂nv on the single-channel map. Accumulation is float32 (float64 for float64).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from din_fast.kernels._layout import acc_dtype, tl_acc_dtype
from din_fast.op_contract import DAC_EPS

BLOCK = 256


@triton.jit
def _stats_kernel(t_ptr, mean_ptr, sd_ptr, N, eps, ACC: tl.constexpr, BLOCK: tl.constexpr):
    plane = t_ptr + tl.program_id(0) * N
    k = tl.load(plane).to(ACC)
    s1 = tl.zeros([BLOCK], ACC)
    s2 = tl.zeros([BLOCK], ACC)
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        d = tl.where(offs < N, tl.load(plane + offs, mask=offs < N, other=0.0).to(ACC) - k, 0.0)
        s1 += d
        s2 += d * d
    t1 = tl.sum(s1, axis=0)
    t2 = tl.sum(s2, axis=0)
    tl.store(mean_ptr + tl.program_id(0), k + t1 / N)
    # propagate_nan: a NaN variance (a NaN or inf in the plane) must stay NaN, as the reference's var().
    var = tl.maximum(t2 - t1 * t1 / N, 0.0, propagate_nan=tl.PropagateNan.ALL) / (N - 1)
    tl.store(sd_ptr + tl.program_id(0), tl.sqrt(var + eps))


@triton.jit
def _gate_kernel(x_ptr, r_ptr, v_ptr, mu_v_ptr, sd_v_ptr, scale_ptr, shift_ptr, y_ptr, C, N,
                 ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid_bc = tl.program_id(0)
    b = pid_bc // C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    x = tl.load(x_ptr + pid_bc * N + offs, mask=m, other=0.0).to(ACC)
    r = tl.load(r_ptr + pid_bc * N + offs, mask=m, other=0.0).to(ACC)
    v = tl.load(v_ptr + b * N + offs, mask=m, other=0.0).to(ACC)
    nv = (v - tl.load(mu_v_ptr + b)) / tl.load(sd_v_ptr + b)
    z = nv * tl.load(scale_ptr + pid_bc) + tl.load(shift_ptr + pid_bc)
    y = x + r / (1.0 + tl.exp(-z))
    tl.store(y_ptr + pid_bc * N + offs, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _gate_grad_kernel(g_ptr, r_ptr, v_ptr, mu_v_ptr, sd_v_ptr, scale_ptr, shift_ptr, dr_ptr, dnv_ptr,
                      part_ptr, C, N, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """dr; dnv (B, N); part (B, blocks, 2, C): Σ dz·nv and Σ dz over the block."""
    b = tl.program_id(0)
    pid = tl.program_id(1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    v = tl.load(v_ptr + b * N + offs, mask=m, other=0.0).to(ACC)
    nv = (v - tl.load(mu_v_ptr + b)) / tl.load(sd_v_ptr + b)
    dnv = tl.zeros([BLOCK], ACC)
    part = part_ptr + (b * tl.num_programs(1) + pid) * 2 * C
    for c in range(C):
        base = (b * C + c) * N + offs
        g = tl.load(g_ptr + base, mask=m, other=0.0).to(ACC)
        r = tl.load(r_ptr + base, mask=m, other=0.0).to(ACC)
        scale = tl.load(scale_ptr + b * C + c)
        a = 1.0 / (1.0 + tl.exp(-(nv * scale + tl.load(shift_ptr + b * C + c))))
        tl.store(dr_ptr + base, (g * a).to(dr_ptr.dtype.element_ty), mask=m)
        dz = g * r * a * (1.0 - a)
        dnv += dz * scale
        tl.store(part + c, tl.sum(dz * nv, axis=0))
        tl.store(part + C + c, tl.sum(dz, axis=0))
    tl.store(dnv_ptr + b * N + offs, dnv, mask=m)


@triton.jit
def _input_grad_kernel(g_ptr, x_ptr, mu_ptr, a_ptr, k_ptr, dx_ptr, N, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """dx = g + a + k · (x − μ) per plane (a = dμ/N, k = dσ/(σ (N − 1)))."""
    pid = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    g = tl.load(g_ptr + pid * N + offs, mask=m, other=0.0).to(ACC)
    x = tl.load(x_ptr + pid * N + offs, mask=m, other=0.0).to(ACC)
    dx = g + tl.load(a_ptr + pid) + tl.load(k_ptr + pid) * (x - tl.load(mu_ptr + pid))
    tl.store(dx_ptr + pid * N + offs, dx.to(dx_ptr.dtype.element_ty), mask=m)


def _stats(t: torch.Tensor, planes: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    acc, acc_tl = acc_dtype(t.dtype), tl_acc_dtype(t.dtype)
    mean = torch.empty(planes, dtype=acc, device=t.device)
    sd = torch.empty(planes, dtype=acc, device=t.device)
    _stats_kernel[(planes,)](t, mean, sd, n, DAC_EPS, ACC=acc_tl, BLOCK=BLOCK)
    return mean, sd


def _fc(t: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """W2 relu(W1 t) on (B, C) rows."""
    return torch.relu(t @ w1.flatten(1).T.to(t.dtype)) @ w2.flatten(1).T.to(t.dtype)


def _prepare(x, r, v, w_mean1, w_mean2, w_std1, w_std2):
    x, r, v = x.contiguous(), r.contiguous(), v.contiguous()
    b, c, h, w = x.shape
    mu_x, sd_x = _stats(x, b * c, h * w)
    mu_v, sd_v = _stats(v, b, h * w)
    mu_x, sd_x = mu_x.view(b, c), sd_x.view(b, c)
    return x, r, v, mu_x, sd_x, mu_v, sd_v


def forward(x: torch.Tensor, r: torch.Tensor, v: torch.Tensor, w_mean1: torch.Tensor, w_mean2: torch.Tensor,
            w_std1: torch.Tensor, w_std2: torch.Tensor) -> torch.Tensor:
    """y = x + r ⊙ sigmoid(DAC(v, x)) (inputs already checked by the op)."""
    x, r, v, mu_x, sd_x, mu_v, sd_v = _prepare(x, r, v, w_mean1, w_mean2, w_std1, w_std2)
    b, c, h, w = x.shape
    shift, scale = _fc(mu_x, w_mean1, w_mean2).contiguous(), _fc(sd_x, w_std1, w_std2).contiguous()
    y = torch.empty_like(x)
    _gate_kernel[(b * c, triton.cdiv(h * w, BLOCK))](x, r, v, mu_v, sd_v, scale, shift, y, c, h * w,
                                                     ACC=tl_acc_dtype(x.dtype), BLOCK=BLOCK)
    return y


def backward(grad: torch.Tensor, x: torch.Tensor, r: torch.Tensor, v: torch.Tensor, w_mean1: torch.Tensor,
             w_mean2: torch.Tensor, w_std1: torch.Tensor, w_std2: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(dx, dr, dv, dw_mean1, dw_mean2, dw_std1, dw_std2) for upstream ``grad``."""
    x, r, v, mu_x, sd_x, mu_v, sd_v = _prepare(x, r, v, w_mean1, w_mean2, w_std1, w_std2)
    grad = grad.contiguous()
    b, c, h, w = x.shape
    n = h * w
    acc, acc_tl = acc_dtype(x.dtype), tl_acc_dtype(x.dtype)
    fc_args = (mu_x, sd_x, *(t.to(acc) for t in (w_mean1, w_mean2, w_std1, w_std2)))

    def fcs(mu, sd, wm1, wm2, ws1, ws2):
        return _fc(mu, wm1, wm2), _fc(sd, ws1, ws2)

    with torch.enable_grad():  # the backward op may run under no_grad
        (shift, scale), fc_vjp = torch.func.vjp(fcs, *fc_args)
    blocks = triton.cdiv(n, BLOCK)
    dr = torch.empty_like(r)
    dnv = torch.empty(b, n, dtype=acc, device=x.device)
    part = torch.empty(b, blocks, 2, c, dtype=acc, device=x.device)
    _gate_grad_kernel[(b, blocks)](grad, r, v, mu_v, sd_v, scale.contiguous(), shift.contiguous(), dr, dnv,
                                   part, c, n, ACC=acc_tl, BLOCK=BLOCK)
    sums = part.sum(dim=1)
    with torch.enable_grad():
        d_mu, d_sd, *d_weights = fc_vjp((sums[:, 1], sums[:, 0]))
    dx = torch.empty_like(x)
    a = (d_mu / n).contiguous()
    k = (d_sd / (sd_x * (n - 1))).contiguous()
    _input_grad_kernel[(b * c, blocks)](grad, x, mu_x.contiguous(), a, k, dx, n, ACC=acc_tl, BLOCK=BLOCK)
    # v's normalisation backward on the (B, N) map:
    # dv = (dnv − mean(dnv) − nv·Σ(dnv·nv)/(N − 1)) / σ_v.
    nv = (v.view(b, n).to(acc) - mu_v[:, None]) / sd_v[:, None]
    dv = (dnv - dnv.mean(1, keepdim=True) - nv * (dnv * nv).sum(1, keepdim=True) / (n - 1)) / sd_v[:, None]
    return (dx, dr, dv.view(b, 1, h, w).to(x.dtype),
            *(d.to(x.dtype).view(t.shape) for d, t in zip(d_weights, (w_mean1, w_mean2, w_std1, w_std2))))
