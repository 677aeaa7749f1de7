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

from din_fast.ops._library import memory_format_of

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


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tl_acc_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32
