"""Running a trained model on images: tiled inference and the x8 self-ensemble (``tiling``), the fastest
settings for a device (``optimize``) and the SR papers' quality measures (``metrics``)."""

from din_fast.inference.optimize import OptimizedModel, optimize
from din_fast.inference.tiling import upscale

__all__ = ["OptimizedModel", "optimize", "upscale"]
