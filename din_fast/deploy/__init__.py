"""Deployment: exporting din_fast models to ONNX and torch.export programs (``din_fast.export``)."""

from din_fast.deploy.exporter import FORMATS, export

__all__ = ["FORMATS", "export"]
