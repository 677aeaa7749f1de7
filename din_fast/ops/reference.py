"""Eager PyTorch references of the fused ops: the literal formulations of the official code.

These are the oracle of every test and gradient check (run them in float64), the ``"reference"``
backend, and the source of the reference backward (``torch.func.vjp``). They are deliberately the
unfused, literal graphs (e.g. AsyCA's concatenation → full-resolution 1x1 conv → spatial mean), so
that the reference backend costs what the authors' code costs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from din_fast.op_contract import DAC_EPS

#: Dilations of the three MSHF scales (kernel sizes 3, 5, 7 in the paper).
MSHF_DILATIONS = (1, 2, 3)
#: Dilations of DiEnDec's three encoder convs; the decoder uses them in reverse.
ENCDEC_DILATIONS = (1, 2, 4)


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``conv2d(x, weight, bias, padding=1)``: the 3x3 convolutions of every model, as PyTorch runs them."""
    return F.conv2d(x, weight, bias, padding=1)


#: LeakyReLU slope of DIN's dense block (official code).
DENSE_SLOPE = 0.2


def dense_block(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """DIN's residual dense block body as the official code writes it: ``f_0 = x``,
    ``f_i = lrelu(conv3x3(cat[f_0, ..., f_{i−1}], W_i, b_i), 0.2)`` for i < n, and
    ``y = conv3x3(cat[f_0, ..., f_{n−1}], W_n, b_n)``."""
    feats = [x]
    for w, b in zip(weights[:-1], biases[:-1]):
        feats.append(F.leaky_relu(conv3x3(torch.cat(feats, dim=1), w, b), DENSE_SLOPE))
    return conv3x3(torch.cat(feats, dim=1), weights[-1], biases[-1])


def asyca(x1: torch.Tensor, x2: torch.Tensor, w_init: torch.Tensor, b_init: torch.Tensor,
          w_dc: torch.Tensor, b_dc: torch.Tensor, w_ic: torch.Tensor, b_ic: torch.Tensor) -> torch.Tensor:
    """Asymmetric co-attention node (DIN).

    ``z = conv_init(cat[x1, x2])`` (1x1, 2C→C), ``s = conv_ic(relu(conv_dc(mean_HW(z))))`` (C→C/r→2C);
    per channel c the pair softmax ``a_c, b_c = softmax(s_c, s_{C+c})``; output ``a ⊙ x1 + b ⊙ x2``.

    Shapes: x1, x2 (B, C, H, W); w_init (C, 2C, 1, 1), b_init (C,); w_dc (R, C, 1, 1), b_dc (R,);
    w_ic (2C, R, 1, 1), b_ic (2C,). Returns (B, C, H, W).
    """
    b, c = x1.shape[:2]
    z = F.conv2d(torch.cat([x1, x2], dim=1), w_init, b_init)
    s = F.adaptive_avg_pool2d(z, 1)
    s = F.conv2d(F.relu(F.conv2d(s, w_dc, b_dc)), w_ic, b_ic)
    ab = torch.softmax(s.view(b, 2, c, 1, 1), dim=1)
    return ab[:, 0] * x1 + ab[:, 1] * x2


def dwc_sum(inputs: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Densely weighted connection sum (DIN's WRDB): ``Σ_j weight[j] ⊙ inputs[j] + bias``.

    Each term is a 1x1 depthwise conv (per-channel scale). Shapes: inputs k × (B, C, H, W);
    weight (k, C); bias (C,). Returns (B, C, H, W).
    """
    c = weight.shape[1]
    out = weight[0].view(1, c, 1, 1) * inputs[0]
    for j in range(1, len(inputs)):
        out = out + weight[j].view(1, c, 1, 1) * inputs[j]
    return out + bias.view(1, c, 1, 1)


def mshf(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Multi-scale Hessian filter, max eigenvalue, channel mean (DeFiAN).

    For scale k (dilation d_k = 1, 2, 3) and kind j ∈ (xx, yy, xy): ``g_kj = dwconv3x3(x, weight[k, j],
    bias[k, j], dilation=d_k, padding=d_k)``; ``λ_k = ((g_xx + g_yy) + sqrt((g_xx − g_yy)² + 4 g_xy²)) / 2``
    per channel; output channel k is the mean of λ_k over the C channels.

    Shapes: x (B, C, H, W); weight (3, 3, C, 3, 3); bias (3, 3, C). Returns (B, 3, H, W).
    """
    c = x.shape[1]
    maps = []
    for k, d in enumerate(MSHF_DILATIONS):
        gxx, gyy, gxy = (F.conv2d(x, weight[k, j].unsqueeze(1), bias[k, j], padding=d, dilation=d, groups=c)
                         for j in range(3))
        lam = ((gxx + gyy) + torch.sqrt(torch.pow(gxx - gyy, 2) + 4 * torch.pow(gxy, 2))) / 2
        maps.append(lam.mean(dim=1, keepdim=True))
    return torch.cat(maps, dim=1)


def dilated_encdec(h: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """DeFiAN's dilated encoder-decoder (DiEnDec) and its 1x1 gate.

    3→6→12→24 dilated 3x3 convs (dilation 1, 2, 4), 24→12→6→3 dilated 3x3 transposed convs
    (dilation 4, 2, 1), ReLU after each of the six, then the linear 1x1 gate 3→1. Padding equals the
    dilation, so every layer keeps H×W.

    Shapes: h (B, 3, H, W); weights[0:3] (out, in, 3, 3) (Conv2d layout), weights[3:6] (in, out, 3, 3)
    (ConvTranspose2d layout), weights[6] (1, 3, 1, 1); biases[i] (out_i,). Returns (B, 1, H, W).
    """
    t = h
    for i, d in enumerate(ENCDEC_DILATIONS):
        t = F.relu(F.conv2d(t, weights[i], biases[i], padding=d, dilation=d))
    for i, d in enumerate(reversed(ENCDEC_DILATIONS)):
        t = F.relu(F.conv_transpose2d(t, weights[3 + i], biases[3 + i], padding=d, dilation=d))
    return F.conv2d(t, weights[6], biases[6])


def _stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (batch, channel): spatial mean and sqrt(unbiased variance + 1e-5), each (B, C, 1, 1)."""
    b, c = t.shape[:2]
    flat = t.reshape(b, c, -1)
    mean = flat.mean(dim=2).view(b, c, 1, 1)
    std = (flat.var(dim=2, unbiased=True) + DAC_EPS).sqrt().view(b, c, 1, 1)
    return mean, std


def dac_gate(x: torch.Tensor, r: torch.Tensor, v: torch.Tensor, w_mean1: torch.Tensor, w_mean2: torch.Tensor,
             w_std1: torch.Tensor, w_std2: torch.Tensor) -> torch.Tensor:
    """Distribution alignment (DAC), sigmoid gate and residual of a DeFiAN module.

    The observed map v is expanded to C channels as the official code does, then
    ``A = sigmoid((v − μ_v)/σ_v · std_fc(σ_x) + mean_fc(μ_x))`` and ``y = r ⊙ A + x``, where μ, σ are the
    spatial mean and sqrt(unbiased variance + 1e-5) per (batch, channel), and ``fc(t) = W2 relu(W1 t)``
    with bias-free 1x1 convs C→C/16→C.

    Shapes: x, r (B, C, H, W); v (B, 1, H, W); w_mean1, w_std1 (C/16, C, 1, 1); w_mean2, w_std2
    (C, C/16, 1, 1). Returns (B, C, H, W). H·W must be > 1.
    """
    o = v.expand_as(x)
    mu_o, sd_o = _stats(o)
    mu_x, sd_x = _stats(x)
    shift = F.conv2d(F.relu(F.conv2d(mu_x, w_mean1)), w_mean2)
    scale = F.conv2d(F.relu(F.conv2d(sd_x, w_std1)), w_std2)
    attention = torch.sigmoid((o - mu_o) / sd_o * scale + shift)
    return r * attention + x


def criss_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Criss-cross attention (CCNet): every position attends to its row and its column.

    For position p = (i, j), the set S(p) is row i and column j, the position itself counted once
    (H + W − 1 positions). ``e(p, s) = q[:, p] · k[:, s]``, ``a(p, ·) = softmax_{s ∈ S(p)} e(p, s)``,
    ``out[:, p] = Σ_{s ∈ S(p)} a(p, s) v[:, s]``. Written as CCNet does: a column energy (B, H, W, H) with
    the position itself masked to −inf and a row energy (B, H, W, W), concatenated, one softmax over the
    H + W entries, then two batched products with v. No scale factor and no residual (the caller adds
    ``γ · out + x``).

    Shapes: q, k (B, Cq, H, W); v (B, C, H, W). Returns (B, C, H, W).
    """
    b, cq, h, w = q.shape
    c = v.shape[1]
    q_col = q.permute(0, 3, 2, 1).reshape(b * w, h, cq)                 # per column: (H, Cq)
    k_col = k.permute(0, 3, 1, 2).reshape(b * w, cq, h)
    v_col = v.permute(0, 3, 1, 2).reshape(b * w, c, h)
    q_row = q.permute(0, 2, 3, 1).reshape(b * h, w, cq)                 # per row: (W, Cq)
    k_row = k.permute(0, 2, 1, 3).reshape(b * h, cq, w)
    v_row = v.permute(0, 2, 1, 3).reshape(b * h, c, w)
    self_mask = torch.eye(h, dtype=torch.bool, device=q.device)        # the row term already holds p
    e_col = torch.bmm(q_col, k_col).masked_fill(self_mask, float("-inf"))
    e_col = e_col.view(b, w, h, h).permute(0, 2, 1, 3)                  # (B, H, W, H)
    e_row = torch.bmm(q_row, k_row).view(b, h, w, w)                    # (B, H, W, W)
    att = torch.softmax(torch.cat([e_col, e_row], dim=3), dim=3)
    a_col = att[..., :h].permute(0, 2, 1, 3).reshape(b * w, h, h)
    a_row = att[..., h:].reshape(b * h, w, w)
    out_col = torch.bmm(v_col, a_col.transpose(1, 2)).view(b, w, c, h).permute(0, 2, 3, 1)
    out_row = torch.bmm(v_row, a_row.transpose(1, 2)).view(b, h, c, w).permute(0, 2, 1, 3)
    return out_col + out_row


#: Padding of the 7x7 spatial-attention conv (CBAM, DRFN).
SAM_PADDING = 3


def channel_spatial_attention(x: torch.Tensor, skip: torch.Tensor, w_ca1: torch.Tensor, b_ca1: torch.Tensor,
                              w_ca2: torch.Tensor, b_ca2: torch.Tensor, w_sa: torch.Tensor,
                              b_sa: torch.Tensor) -> torch.Tensor:
    """DRFN's channel attention (CAM), then spatial attention (SAM), then the group residual (paper eq. 5).

    CBAM's modules, in CBAM's order: ``M_c = sigmoid(mlp(avg_HW x) + mlp(max_HW x))`` with the shared
    ``mlp(t) = W2 relu(W1 t + b1) + b2`` (1x1 convs C→R→C), ``x' = M_c ⊙ x``;
    ``M_s = sigmoid(conv7x7([mean_C x'; max_C x']) + b_s)`` (2→1, padding 3), and
    ``y = M_s ⊙ x' + skip``.

    Shapes: x, skip (B, C, H, W); w_ca1 (R, C, 1, 1), b_ca1 (R,); w_ca2 (C, R, 1, 1), b_ca2 (C,);
    w_sa (1, 2, 7, 7), b_sa (1,). Returns (B, C, H, W).
    """
    def mlp(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.relu(F.conv2d(t, w_ca1, b_ca1)), w_ca2, b_ca2)

    xc = x * torch.sigmoid(mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1)))
    pooled = torch.cat([xc.mean(dim=1, keepdim=True), xc.amax(dim=1, keepdim=True)], dim=1)
    return xc * torch.sigmoid(F.conv2d(pooled, w_sa, b_sa, padding=SAM_PADDING)) + skip


def channel_attention_residual(u: torch.Tensor, t: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                               w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """The tail of an RCAB (DeFiAN's residual channel-attention block): channel attention and residual.

    ``y = u + t ⊙ sigmoid(W2 relu(W1 mean_HW(t) + b1) + b2)``, the official ``calayer`` (1x1 convs with
    biases C→R→C, ReLU, sigmoid) on the spatial mean of t, as the official graph runs it.

    Shapes: u, t (B, C, H, W); w1 (R, C, 1, 1), b1 (R,); w2 (C, R, 1, 1), b2 (C,). Returns (B, C, H, W).
    """
    attention = torch.sigmoid(F.conv2d(F.relu(F.conv2d(t.mean(dim=(2, 3), keepdim=True), w1, b1)), w2, b2))
    return u + t * attention
