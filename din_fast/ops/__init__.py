"""Fused ops of din_fast (``torch.ops.din_fast.<name>``) and their functional wrappers.

Each wrapper checks its arguments and runs the implementation chosen by ``din_fast.backends``: the
reference as a plain autograd graph, or the fused ``torch.library`` op.
"""

from din_fast.ops import reference
from din_fast.ops.asyca import asyca
from din_fast.ops.channel_attention_residual import channel_attention_residual
from din_fast.ops.channel_spatial_attention import channel_spatial_attention
from din_fast.ops.conv3x3 import conv3x3
from din_fast.ops.criss_cross_attention import criss_cross_attention
from din_fast.ops.dense_block import dense_block
from din_fast.ops.dac_gate import dac_gate
from din_fast.ops.dilated_encdec import dilated_encdec
from din_fast.ops.dwc_sum import dwc_sum
from din_fast.ops.mshf import mshf
from din_fast.ops.pixel_shuffle import pixel_shuffle

__all__ = ["asyca", "channel_attention_residual", "channel_spatial_attention", "conv3x3",
           "criss_cross_attention", "dac_gate", "dense_block", "dilated_encdec", "dwc_sum", "mshf",
           "pixel_shuffle", "reference"]
