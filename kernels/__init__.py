"""Triton kernels of din_fast, installed as ``din_fast.kernels``.

One module per fused op, named after the op, exposing ``forward(*args)`` and ``backward(grad, *args)``
with the signatures of ``din_fast::<op>`` and ``din_fast::<op>_backward``. Imported lazily, only when
the triton backend runs an op (set ``TRITON_INTERPRET=1`` before import to run them on CPU tensors).
"""
