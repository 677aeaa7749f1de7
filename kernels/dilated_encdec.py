"""Triton kernels of ``dilated_encdec`` (DeFiAN's DiEnDec + 1x1 gate; din_fast/ops/dilated_encdec.py has
the maths and shapes).

One kernel per layer: each program computes a block of pixels for all output channels of a dilated 3x3
conv (the transposed convs as convs with the transposed, flipped weight "Weff"), with the epilogue fused:
ReLU, ReLU + the 3→1 gate (the last layer of the forward), ReLU's derivative as a mask (the
input-gradient convs of the backward) or none (dh). Padding is a load mask, so it needs no padded copies.
ReLU is ``tl.maximum(·, 0, propagate_nan=ALL)``: NaN stays NaN, as in torch.relu (the default maximum
would map it to 0); its derivative tests ``act <= 0``, so the gradient passes at NaN (threshold_backward).
The backward recomputes and stores the six activations, then walks the layers from the last to the
first; weight and bias gradients are per-program partial sums, added up by one torch reduction
(deterministic, no atomics).

Numerics: loads in the input dtype (float16 / bfloat16 / float32 / float64), accumulation and stored
intermediates in float32 (float64 for float64 inputs), outputs in the input dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from din_fast.kernels._layout import acc_dtype, tl_acc_dtype
from din_fast.kernels._pixel_blocks import pixel_block, pixel_grid

#: (in channels, out channels, dilation) of the six 3x3 layers.
LAYERS = ((3, 6, 1), (6, 12, 2), (12, 24, 4), (24, 12, 4), (12, 6, 2), (6, 3, 1))

# Epilogues of _conv_kernel.
_RELU, _RELU_GATE, _MASK, _PLAIN = 0, 1, 2, 3


@triton.jit
def _neighbourhood(plane, y, x, inside, D: tl.constexpr, H, W):
    """The 3x3 taps at dilation D around the block's pixels in one (H, W) plane, zero outside it: a tuple
    indexed by ky·3 + kx, tap (ky, kx) at (y + (ky−1)D, x + (kx−1)D). One call per plane, not per tap
    (a device-function call costs the interpreter more than the loads)."""
    taps = ()
    for ky in tl.static_range(3):
        yy = y + (ky - 1) * D
        row_ok = inside & (yy >= 0) & (yy < H)
        for kx in tl.static_range(3):
            xx = x + (kx - 1) * D
            taps = taps + (tl.load(plane + yy * W + xx, mask=row_ok & (xx >= 0) & (xx < W), other=0.0),)
    return taps


@triton.jit
def _conv_kernel(in_ptr, w_ptr, b_ptr, out_ptr, act_ptr, gw_ptr, H, W,
                 CIN: tl.constexpr, COUT: tl.constexpr, CP: tl.constexpr, D: tl.constexpr,
                 EPILOGUE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """out[b, co, p] = epilogue(bias[co] + Σ w[ci, ky, kx, co] · in[b, ci, y + (ky−1)D, x + (kx−1)D]),
    summed over ci, ky, kx.

    Grid (cdiv(H·W, BLOCK), B). w is packed (CIN, 3, 3, COUT); CP is COUT rounded up to a power of 2.
    Epilogues: ReLU into COUT planes; ReLU then the gate (gw[0:3], gw[3] = bias) into one plane;
    mask by act (0 where act <= 0; act has COUT planes); none.
    """
    hw = H * W
    b, offs, inside = pixel_block(hw, BLOCK)
    y = offs // W
    x = offs % W
    co = tl.arange(0, CP)
    cmask = co < COUT
    acc = tl.zeros((BLOCK, CP), ACC) + tl.load(b_ptr + co, mask=cmask, other=0.0).to(ACC)[None, :]
    for ci in tl.static_range(CIN):
        taps = _neighbourhood(in_ptr + (b * CIN + ci) * hw, y, x, inside, D, H, W)
        for t in tl.static_range(9):
            wv = tl.load(w_ptr + (ci * 9 + t) * COUT + co, mask=cmask, other=0.0).to(ACC)
            acc += taps[t].to(ACC)[:, None] * wv[None, :]
    if EPILOGUE == 1:
        gw = tl.load(gw_ptr + co, mask=co < 3, other=0.0).to(ACC)
        relu = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)
        gate = tl.sum(relu * gw[None, :], axis=1) + tl.load(gw_ptr + 3).to(ACC)
        tl.store(out_ptr + b * hw + offs, gate.to(out_ptr.dtype.element_ty), mask=inside)
    else:
        idx = (b * COUT + co[None, :]) * hw + offs[:, None]
        m2 = inside[:, None] & cmask[None, :]
        if EPILOGUE == 0:
            acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)
        if EPILOGUE == 2:
            act = tl.load(act_ptr + idx, mask=m2, other=0.0)
            acc = tl.where(act <= 0, 0.0, acc)  # threshold_backward: the gradient passes at NaN
        tl.store(out_ptr + idx, acc.to(out_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _weight_grad_kernel(in_ptr, dz_ptr, part_ptr, H, W,
                        CIN: tl.constexpr, COUT: tl.constexpr, CP: tl.constexpr, D: tl.constexpr,
                        ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Partial sums over this program's pixels: part[prog, (ci·3 + ky)·3 + kx, co] = Σ_p dz[b, co, p] ·
    in[b, ci, y + (ky−1)D, x + (kx−1)D] and part[prog, CIN·9, co] = Σ_p dz[b, co, p]."""
    hw = H * W
    b, offs, inside = pixel_block(hw, BLOCK)
    prog = b * tl.num_programs(0) + tl.program_id(0)
    y = offs // W
    x = offs % W
    co = tl.arange(0, CP)
    cmask = co < COUT
    dz = tl.load(dz_ptr + (b * COUT + co[None, :]) * hw + offs[:, None],
                 mask=inside[:, None] & cmask[None, :], other=0.0).to(ACC)
    out = part_ptr + prog * (CIN * 9 + 1) * CP
    tl.store(out + CIN * 9 * CP + co, tl.sum(dz, axis=0))
    for ci in tl.static_range(CIN):
        taps = _neighbourhood(in_ptr + (b * CIN + ci) * hw, y, x, inside, D, H, W)
        for t in tl.static_range(9):
            tl.store(out + (ci * 9 + t) * CP + co, tl.sum(taps[t].to(ACC)[:, None] * dz, axis=0))


@triton.jit
def _gate_backward_kernel(act_ptr, grad_ptr, gw_ptr, dz_ptr, part_ptr, H, W, ACC: tl.constexpr,
                          BLOCK: tl.constexpr):
    """dz5[b, c] = gw[c] · grad[b] · [a5[b, c] > 0 or NaN]; partial sums of grad · a5[c] (c < 3), grad (c = 3)."""
    hw = H * W
    b, offs, inside = pixel_block(hw, BLOCK)
    prog = b * tl.num_programs(0) + tl.program_id(0)
    c = tl.arange(0, 4)
    m2 = inside[:, None] & (c < 3)[None, :]
    idx = (b * 3 + c[None, :]) * hw + offs[:, None]
    a = tl.load(act_ptr + idx, mask=m2, other=0.0).to(ACC)
    g = tl.load(grad_ptr + b * hw + offs, mask=inside, other=0.0).to(ACC)
    gw = tl.load(gw_ptr + c, mask=c < 3, other=0.0).to(ACC)
    tl.store(dz_ptr + idx, tl.where(a <= 0, 0.0, g[:, None] * gw[None, :]), mask=m2)
    sums = tl.sum(g[:, None] * tl.where((c < 3)[None, :], a, 1.0), axis=0)
    tl.store(part_ptr + prog * 4 + c, sums)


def _block(x: torch.Tensor) -> int:
    """Pixels per program: 256, or H·W rounded up to a power of two when that is fewer."""
    return min(256, triton.next_power_of_2(x.shape[2] * x.shape[3]))


def _weff(k: int, w: torch.Tensor) -> torch.Tensor:
    """Layer k's weight as a conv weight (out, in, 3, 3); the decoder's ConvTranspose2d weights are
    (in, out, 3, 3), and a stride-1 transposed conv is a conv with the transposed, flipped weight."""
    return w if k < 3 else w.transpose(0, 1).flip(2, 3)


def _packed(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A conv weight (out, in, 3, 3) as (in, 3, 3, out), contiguous, in the accumulation dtype."""
    return w.permute(1, 2, 3, 0).contiguous().to(dtype)


def _conv(inp: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, cin: int, cout: int, d: int, epilogue: int,
          out: torch.Tensor, act: torch.Tensor | None = None,
          gate: torch.Tensor | None = None) -> torch.Tensor:
    """Launch _conv_kernel over (pixel blocks, batch); returns ``out``."""
    block = _block(inp)
    _conv_kernel[pixel_grid(inp, block)](inp, w, bias, out, out if act is None else act,
                                         bias if gate is None else gate, *inp.shape[2:], CIN=cin, COUT=cout,
                                         CP=triton.next_power_of_2(cout), D=d, EPILOGUE=epilogue,
                                         ACC=tl_acc_dtype(inp.dtype), BLOCK=block)
    return out


def _layer(k: int, inp: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
           epilogue: int, out: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
    """Layer k's forward conv (weights packed in the accumulation dtype) with ``epilogue`` into ``out``."""
    acc = acc_dtype(inp.dtype)
    cin, cout, d = LAYERS[k]
    return _conv(inp, _packed(_weff(k, weights[k]), acc), biases[k].to(acc), cin, cout, d, epilogue, out,
                 gate=gate)


def _activations(h: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                 layers: int) -> list[torch.Tensor]:
    """[h, a0, ..., a_{layers-1}], the activations in the accumulation dtype."""
    acts = [h]
    for k in range(layers):
        out = h.new_empty((h.shape[0], LAYERS[k][1], h.shape[2], h.shape[3]), dtype=acc_dtype(h.dtype))
        acts.append(_layer(k, acts[-1], weights, biases, _RELU, out))
    return acts


def forward(h: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """Five ReLU layers into intermediate planes, then the sixth with the gate fused into its epilogue."""
    h = h.contiguous()
    gate = torch.cat([weights[6].flatten(), biases[6]]).to(acc_dtype(h.dtype))
    a4 = _activations(h, weights, biases, 5)[-1]
    return _layer(5, a4, weights, biases, _RELU_GATE, h.new_empty((h.shape[0], 1, *h.shape[2:])), gate=gate)


def _weight_grad(inp: torch.Tensor, dz: torch.Tensor, cin: int, cout: int,
                 d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dWeff (cout, cin, 3, 3), db (cout,)) summed over the batch and the image."""
    block = _block(inp)
    grid = pixel_grid(inp, block)
    cp = triton.next_power_of_2(cout)
    part = inp.new_empty((grid[0] * grid[1], cin * 9 + 1, cp), dtype=acc_dtype(inp.dtype))
    _weight_grad_kernel[grid](inp, dz, part, *inp.shape[2:], CIN=cin, COUT=cout, CP=cp, D=d,
                              ACC=tl_acc_dtype(inp.dtype), BLOCK=block)
    sums = part.sum(0)[:, :cout]
    return sums[:-1].view(cin, 3, 3, cout).permute(3, 0, 1, 2), sums[-1]


def backward(grad: torch.Tensor, h: torch.Tensor, weights: list[torch.Tensor],
             biases: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """dh and the gradients of all seven weights and biases (in their own layouts)."""
    h, grad = h.contiguous(), grad.contiguous()
    acc = acc_dtype(h.dtype)
    acts = _activations(h, weights, biases, 6)
    block = _block(h)
    grid = pixel_grid(h, block)
    dz = h.new_empty((h.shape[0], 3, *h.shape[2:]), dtype=acc)
    part = h.new_empty((grid[0] * grid[1], 4), dtype=acc)
    _gate_backward_kernel[grid](acts[6], grad, weights[6].flatten().to(acc).contiguous(), dz, part, *h.shape[2:],
                                ACC=tl_acc_dtype(h.dtype), BLOCK=block)
    sums = part.sum(0)
    dweights: list[torch.Tensor] = [None] * 7  # type: ignore[list-item]
    dbiases: list[torch.Tensor] = [None] * 7  # type: ignore[list-item]
    dweights[6] = sums[:3].view(1, 3, 1, 1).to(h.dtype)
    dbiases[6] = sums[3:].to(h.dtype)
    dh = torch.empty_like(h)
    for k in range(5, -1, -1):
        cin, cout, d = LAYERS[k]
        dweff, db = _weight_grad(acts[k], dz, cin, cout, d)
        dweights[k] = (dweff if k < 3 else dweff.flip(2, 3).transpose(0, 1)).contiguous().to(h.dtype)
        dbiases[k] = db.to(h.dtype)
        # The input gradient is a conv of dz with Weffᵀ flipped: (in, out) roles swapped, no bias.
        wg = _packed(_weff(k, weights[k]).transpose(0, 1).flip(2, 3), acc)
        zero = h.new_zeros(cin, dtype=acc)
        if k > 0:
            dz = _conv(dz, wg, zero, cout, cin, d, _MASK, torch.empty_like(acts[k]), act=acts[k])
        else:
            _conv(dz, wg, zero, cout, cin, d, _PLAIN, dh)
    return dh, dweights, dbiases
