"""Export a din_fast model for deployment: ONNX (standard operators only) or a torch.export program.

``export(model, "m.onnx")`` traces the model under the reference backend, where every fused op runs as
its decomposition into standard PyTorch operators, so the ONNX file holds only standard ONNX
operators (Conv, Mul, ReduceMean, DepthToSpace, ...) and runs in any ONNX runtime (onnxruntime,
OpenVINO, TensorRT). ``export(model, "m.pt2")`` traces under the current backend and keeps our
``din_fast::*`` custom ops in the program: loaded in a process that imports din_fast, they run the
fused kernels; AOTInductor compiles the program with them.

With ``dynamic=True`` (default) batch, height and width are symbolic. torch.export specialises a
dimension of size 1 in the example, so a batch of 1 is traced as the example repeated twice; the
exported program accepts a batch of 1.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from din_fast.io.atomic import atomic_path
from din_fast.backends import use_backend
from din_fast.models.blocks import check_image_batch

FORMATS = ("onnx", "pt2")
# The names of the dynamic dimensions in the ONNX file's input (B, 3, H, W).
INPUT_NAME, OUTPUT_NAME = "lr", "sr"
_AXES = {0: "batch", 2: "height", 3: "width"}
_EXPORT_EXTRA = "pip install 'din_fast[export]' (onnx, onnxruntime, onnxscript)"


def require(module: str, purpose: str, install: str = _EXPORT_EXTRA) -> Any:
    """Import optional dependency ``module``; ImportError saying how to install it (``install``) if it is
    missing or its import fails (a RuntimeError: e.g. spandrel's torchvision built for another torch)."""
    try:
        return importlib.import_module(module)
    except (ImportError, RuntimeError) as exc:
        raise ImportError(f"{purpose} needs the '{module}' package ({exc}); install it with: {install}") from None


def format_of(path: str, format: str | None) -> str:
    """``format``, or the one named by ``path``'s suffix; ValueError unless that is one of FORMATS."""
    if format is None:
        suffix = os.path.splitext(path)[1].lower().lstrip(".")
        if suffix not in FORMATS:
            raise ValueError(f"cannot tell the export format from {path!r}: name it .onnx or .pt2, "
                             "or pass format='onnx' / 'pt2'")
        return suffix
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    return format


def _example(model: torch.nn.Module, example: torch.Tensor | None, dynamic: bool) -> torch.Tensor:
    """The tracing input: ``example`` (default: a 1x3x32x32 batch in the model's dtype and device), a
    batch of 1 repeated to 2 when ``dynamic`` (torch.export would fix a size-1 batch)."""
    if example is None:
        param = next(model.parameters())
        example = torch.rand(1, 3, 32, 32, dtype=param.dtype, device=param.device)
    check_image_batch(example)
    if dynamic and min(example.shape[2:]) < 2:
        raise ValueError(f"example of shape {tuple(example.shape)}: a dynamic export needs height and width of "
                         "at least 2 (a size-1 dimension is traced as a constant)")
    if dynamic and example.shape[0] == 1:
        example = example.expand(2, -1, -1, -1).contiguous()
    return example


def _trace(model: torch.nn.Module, example: torch.Tensor, dynamic: bool) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` in eval mode on ``example``; batch, height and width symbolic if
    ``dynamic`` (torch raises if the model fixes one of them)."""
    dims = {axis: torch.export.Dim.DYNAMIC for axis in _AXES} if dynamic else None
    was_training = model.training
    model.eval()
    try:
        return torch.export.export(model, (example,), dynamic_shapes=(dims,) if dynamic else None)
    finally:
        model.train(was_training)


def _save_onnx(program: torch.export.ExportedProgram, path: str, opset: int | None) -> None:
    """Convert ``program`` (traced under the reference backend) to ONNX, name its axes, check it and
    refuse anything outside the standard ONNX domain."""
    require("onnxscript", "ONNX export")
    onnx = require("onnx", "ONNX export")
    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                     output_names=[OUTPUT_NAME], optimize=True, verbose=False)
    shape = onnx_program.model.graph.inputs[0].shape
    onnx_program.rename_axes({shape[axis]: name for axis, name in _AXES.items()
                              if not isinstance(shape[axis], int)})
    proto = onnx_program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    custom = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise RuntimeError(f"the ONNX graph holds non-standard operators {', '.join(custom)}: not exported")
    with atomic_path(path) as tmp:
        onnx.save_model(proto, tmp)


def export(model: torch.nn.Module, path: str | os.PathLike[str], format: str | None = None,
           example: torch.Tensor | None = None, dynamic: bool = True, opset: int | None = None) -> str:
    """Write ``model`` (any din_fast model; RGB (B, 3, H, W) in, (B, 3, sH, sW) out) to ``path``.

    Args:
        model: the model to export (left in its train/eval mode).
        path: the output file.
        format: ``"onnx"`` or ``"pt2"``; default: from ``path``'s suffix.
        example: an input to trace with (default: ``torch.rand(1, 3, 32, 32)`` in the model's dtype and
            device). With ``dynamic=False`` the file accepts this shape only.
        dynamic: symbolic batch, height and width (ONNX axes ``batch``, ``height``, ``width``).
        opset: ONNX opset version (default: torch.onnx's).

    ``onnx``: the fused ops decomposed into standard ONNX operators (traced under the reference
    backend), input ``lr``, output ``sr``, weights inside the file, checked with ``onnx.checker``.
    Needs the ``export`` extra (onnx, onnxscript). ``pt2``: ``torch.export.save`` of the program traced
    under the current backend, with the ``din_fast::*`` ops kept (load it with ``torch.export.load``
    after ``import din_fast``).

    Returns the path written. Raises ValueError for a bad format or example, ImportError when an ONNX
    package is missing, and torch's error if the model cannot be exported with dynamic shapes.
    """
    path = os.fspath(path)
    fmt = format_of(path, format)
    if fmt == "onnx":  # fail before the (long) trace if the packages are missing
        require("onnxscript", "ONNX export")
        require("onnx", "ONNX export")
    x = _example(model, example, dynamic)
    if fmt == "pt2":
        program = _trace(model, x, dynamic)
        with atomic_path(path) as tmp:
            torch.export.save(program, tmp)
        return path
    with use_backend("reference"):
        program = _trace(model, x, dynamic)
    _save_onnx(program, path, opset)
    return path

