"""Layout and launch helpers shared by the Triton kernels of din_fast.

The kernels address a (B, C, H, W) feature map as ``b·stride_b + c·stride_c + p·stride_p`` with the
flattened spatial index ``p = h·W + w``: that covers both dense layouts (NCHW: stride_p = 1;
channels_last: stride_c = 1), and Triton specialises a stride equal to 1, so the contiguous axis of
a tile is known at compile time and loads are vectorised along it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from din_fast.op_contract import acc_dtype, memory_format_of

#: Programs a reduction grid should have at least: 4 per SM of an H100 (132 SMs).
TARGET_PROGRAMS = 4 * 132


def dense(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.memory_format]:
    """The tensors in the first one's dense layout (NCHW or channels_last) and that layout."""
    fmt = memory_format_of(tensors[0])
    return [t.contiguous(memory_format=fmt) for t in tensors], fmt


def strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(stride_b, stride_c, stride_p) of a dense NCHW or channels_last (B, C, H, W) tensor."""
    b, c, h, w = t.shape
    if memory_format_of(t) == torch.channels_last:
        return h * w * c, 1, c
    return c * h * w, h * w, 1


def tile(t: torch.Tensor) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P) of a 4096-element tile, long along the contiguous axis."""
    c = t.shape[1]
    if memory_format_of(t) == torch.channels_last:
        block_c = min(64, triton.next_power_of_2(c))
        return block_c, 4096 // block_c
    return 4, 1024


def split(batch: int, channel_blocks: int, hw: int, block_p: int) -> tuple[int, int]:
    """(splits, positions per split) of H·W so that a reduction grid has about TARGET_PROGRAMS programs."""
    tiles = triton.cdiv(hw, block_p)
    splits = max(1, min(tiles, triton.cdiv(TARGET_PROGRAMS, batch * channel_blocks)))
    per_split = triton.cdiv(tiles, splits) * block_p
    return triton.cdiv(hw, per_split), per_split


def check_grad(grad: torch.Tensor, like: torch.Tensor) -> None:
    """ValueError unless the upstream gradient ``grad`` has ``like``'s shape, dtype and device."""
    if grad.shape != like.shape or grad.dtype != like.dtype or grad.device != like.device:
        raise ValueError(f"grad must have shape {tuple(like.shape)}, dtype {like.dtype} and device {like.device}, "
                         f"got {tuple(grad.shape)}, {grad.dtype}, {grad.device}")


@triton.jit
def channel_block(C, stride_b, stride_c, BLOCK_C: tl.constexpr):
    """Program (b, j, ·)'s sample b, channels cs = j·BLOCK_C + [0, BLOCK_C), their mask cs < C, and the
    (BLOCK_C, 1) int64 offsets b·stride_b + cs·stride_c of their planes."""
    b = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return b, cs, cs < C, b.to(tl.int64) * stride_b + cs[:, None].to(tl.int64) * stride_c


@triton.jit
def tile_at(base, cmask, p0, HW, stride_p, BLOCK_P: tl.constexpr):
    """(mask, offsets) of a channel block's (BLOCK_C, BLOCK_P) tile at flat positions p0 + [0, BLOCK_P)."""
    ps = p0 + tl.arange(0, BLOCK_P)
    return cmask[:, None] & (ps < HW)[None, :], base + ps[None, :].to(tl.int64) * stride_p


def tl_acc_dtype(dtype: torch.dtype) -> tl.dtype:
    """Triton's name of ``acc_dtype(dtype)`` (din_fast.op_contract)."""
    return tl.float64 if dtype == torch.float64 else tl.float32
