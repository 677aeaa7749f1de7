"""Pixel-block programs shared by the Triton kernels that work on contiguous NCHW planes.

A pixel-block kernel runs on the grid (cdiv(H·W, BLOCK), B): program (i, b) owns the flat positions
p = i·BLOCK + [0, BLOCK) of sample b, a pixel (y, x) = (p // W, p % W) each, for every channel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def pixel_grid(x: torch.Tensor, block: int) -> tuple[int, int]:
    """The grid (cdiv(H·W, block), B) over the pixels of x (B, ·, H, W)."""
    return triton.cdiv(x.shape[2] * x.shape[3], block), x.shape[0]


@triton.jit
def pixel_block(HW, BLOCK: tl.constexpr):
    """Program (i, b)'s sample b (int64, for plane offsets), flat positions p and which of them are < H·W."""
    b = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return b, offs, offs < HW


@triton.jit
def shifted(plane, y, x, inside, DY, DX, H, W):
    """plane[y + DY, x + DX] of an (H, W) plane for the block's pixels, zero outside it (a convolution's
    zero padding) and where ``inside`` is false."""
    yy = y + DY
    xx = x + DX
    return tl.load(plane + yy * W + xx, mask=inside & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W), other=0.0)
