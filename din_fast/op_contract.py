"""The contract between din_fast's ops and their kernels: argument checks, memory formats, accumulation
dtypes and the constants of the maths. ``din_fast.ops`` and the Triton kernels (``din_fast.kernels``) both
use it; it imports nothing of din_fast, so kernels depend on no op module.

The checks read only metadata, so they also run in fake kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: Added to the unbiased variance in DeFiAN's DAC statistics (official code).
DAC_EPS = 1e-5


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D channels_last (and not also contiguous) tensor, else contiguous. Every op's
    output has its first tensor argument's format, and each gradient its input's."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of every kernel: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def feature(name: str, t: torch.Tensor, channels: int | None = None) -> None:
    """``t`` is a non-empty floating (B, C, H, W) tensor, with ``channels`` channels if given."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOATS:
        raise ValueError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {t.dtype}")
    if t.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    if channels is not None and t.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got shape {tuple(t.shape)}")


def same_as(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor,
            shape: Sequence[int] | None = None) -> None:
    """``t`` has ref's dtype and device and the given shape (default: ref's shape)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")
    if t.dtype != ref.dtype:
        raise ValueError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")
    expected = ref.shape if shape is None else shape
    if t.shape != tuple(expected):  # torch.Size is a tuple: compared without converting it
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def all_same_as(name: str, ts: Sequence[torch.Tensor], start: int, ref_name: str, ref: torch.Tensor) -> None:
    """``same_as`` for ``ts[i]`` (named ``name[i]``), i >= start: ref's dtype, device and shape.

    One comparison per tensor on the common (valid) path; ``same_as`` words the error."""
    device, dtype, shape = ref.device, ref.dtype, ref.shape
    for i in range(start, len(ts)):
        t = ts[i]
        if not (isinstance(t, torch.Tensor) and t.dtype == dtype and t.device == device and t.shape == shape):
            same_as(f"{name}[{i}]", t, ref_name, ref)


def channel_mlp(ref_name: str, ref: torch.Tensor, w1: tuple[str, torch.Tensor], b1: tuple[str, torch.Tensor],
                w2: tuple[str, torch.Tensor], b2: tuple[str, torch.Tensor]) -> None:
    """The (name, tensor) pairs of a squeeze-excitation MLP C→R→C on ``ref`` (B, C, H, W): w1 (R, C, 1, 1)
    with R > 0, b1 (R,), w2 (C, R, 1, 1), b2 (C,), all with ref's dtype and device."""
    c = ref.shape[1]
    if not isinstance(w1[1], torch.Tensor) or w1[1].dim() != 4 or w1[1].shape[0] == 0:
        raise ValueError(f"{w1[0]} must have shape (R, {c}, 1, 1) with R > 0")
    red = w1[1].shape[0]
    for (name, t), shape in ((w1, (red, c, 1, 1)), (b1, (red,)), (w2, (c, red, 1, 1)), (b2, (c,))):
        same_as(name, t, ref_name, ref, shape)


def check_asyca(x1: torch.Tensor, x2: torch.Tensor, w_init: torch.Tensor, b_init: torch.Tensor,
                w_dc: torch.Tensor, b_dc: torch.Tensor, w_ic: torch.Tensor, b_ic: torch.Tensor) -> None:
    """The arguments of ``din_fast.ops.asyca`` (shapes, dtypes, devices); ValueError naming a bad one.
    The op layer and the Triton kernels both run it."""
    feature("x1", x1)
    same_as("x2", x2, "x1", x1)
    c = x1.shape[1]
    same_as("w_init", w_init, "x1", x1, (c, 2 * c, 1, 1))
    same_as("b_init", b_init, "x1", x1, (c,))
    if not isinstance(w_dc, torch.Tensor) or w_dc.dim() != 4 or w_dc.shape[0] == 0:
        raise ValueError(f"w_dc must have shape (R, {c}, 1, 1) with R > 0")
    r = w_dc.shape[0]
    same_as("w_dc", w_dc, "x1", x1, (r, c, 1, 1))
    same_as("b_dc", b_dc, "x1", x1, (r,))
    same_as("w_ic", w_ic, "x1", x1, (2 * c, r, 1, 1))
    same_as("b_ic", b_ic, "x1", x1, (2 * c,))


def check_dwc_sum(inputs: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor) -> None:
    """The arguments of ``din_fast.ops.dwc_sum`` (shapes, dtypes, devices); ValueError naming a bad one.
    The op layer and the Triton kernels both run it."""
    if not isinstance(inputs, (list, tuple)) or len(inputs) == 0:
        raise ValueError("inputs must be a non-empty list of tensors (k >= 1)")
    feature("inputs[0]", inputs[0])
    all_same_as("inputs", inputs, 1, "inputs[0]", inputs[0])
    c = inputs[0].shape[1]
    same_as("weight", weight, "inputs[0]", inputs[0], (len(inputs), c))
    same_as("bias", bias, "inputs[0]", inputs[0], (c,))
