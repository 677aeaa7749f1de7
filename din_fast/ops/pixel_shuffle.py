"""``pixel_shuffle``: ``out[b, c, r·h + i, r·w + j] = x[b, c·r² + i·r + j, h, w]``, x (B, C·r², H, W) →
(B, C, r·H, r·W), i.e. ``F.pixel_shuffle(x, r)``.

Not a fused op (no kernel, no schema of its own): on CPU, off the reference backend, it runs as r²
strided copies into the output, which beat torch's pixel_shuffle kernel at the models' sizes
(benchmarks/NOTES.md); the same values bit for bit, and gradients through autograd of the copies.
The reference backend (the test oracle, ONNX export's DepthToSpace) and other devices run
``F.pixel_shuffle``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from din_fast import backends


def pixel_shuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    """``F.pixel_shuffle(x, r)`` (module docstring); bad shapes get torch's errors."""
    if x.device.type != "cpu" or backends.get_backend() == "reference" or x.dim() != 4 or x.shape[1] % (r * r):
        return F.pixel_shuffle(x, r)
    b, c, h, w = x.shape
    blocks = x.unflatten(1, (c // (r * r), r, r))
    out = x.new_empty(b, c // (r * r), h, r, w, r)
    for i in range(r):
        for j in range(r):
            out[:, :, :, i, :, j] = blocks[:, :, i, j]
    return out.view(b, c // (r * r), h * r, w * r)
