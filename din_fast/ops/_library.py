"""The ``din_fast`` op library: schemas, routing, fake kernels and autograd for every fused op.

Each fused op ``name`` is a set of ``torch.library`` ops, all defined here from one schema string:

- ``din_fast::name`` and ``din_fast::name_backward`` — the public forward and backward ops. Their
  CPU and CUDA kernels are *routers*: they check the inputs, ask ``din_fast.backends.resolve`` which
  implementation runs, call it, and normalise the output memory format.
- ``din_fast::_name_cpp`` / ``_name_backward_cpp`` (CPU key) and ``_name_cuda`` / ``_name_backward_cuda``
  (CUDA key) — private ops whose only kernels are registered by C++ when ``din_fast._C`` is built
  (each ``csrc/cpu/<name>.cpp`` and ``csrc/cuda/<name>.cu`` registers its own with ``TORCH_LIBRARY_IMPL``). Keeping them separate from the public op is what lets one process switch
  between implementations.
- Triton implementations are the ``forward`` / ``backward`` functions of ``din_fast.kernels.name``.

Autograd of the public op calls the backward op, so gradients (parameters included) come from the
same implementation as the forward. The reference backward is the vector-Jacobian product of the
reference forward (``torch.func.vjp``). Double backward is refused (``differentiable_once``).

Two routes from ``din_fast.ops.<name>`` (``FusedOp.__call__``) to a kernel, and with them the only two
autograd mechanisms of din_fast's ops (docs/op-call.md follows both):

- the eager fast path: a C++ implementation (cpp, cuda) on plain tensors, outside ``torch.compile``,
  dispatch modes, functorch transforms and JIT tracing, is one call into ``din_fast._C.eager_call``
  (csrc/eager_autograd.cpp): the kernel op, under a C++ autograd node when a gradient is needed, whose
  backward runs without Python. It skips the generic machinery (pytree flattening, redispatch, a
  second resolve), which costs more than the kernel at DIN's small shapes;
- the dispatcher route, every other call of a fused implementation (Triton, fake tensors, tracing, a direct
  ``torch.ops.din_fast.<name>`` call): the public op, whose autograd is
  ``torch.library.register_autograd``'s and whose router runs the implementation.

Where the backend resolves to the reference, ``din_fast.ops.<name>`` runs the reference as a plain
autograd graph instead. Same checks, same implementation, same memory-format normalisation on every
route.

Memory-format contract (what fake kernels promise, so ``torch.compile`` sees the real strides): the
forward output has the format of the first tensor argument (channels_last if that is channels_last,
else contiguous); each gradient has the format of its input.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from din_fast import _extension, _torch_internals, backends
from din_fast._torch_internals import (any_autocast_enabled, dispatch_mode_depth, functorch_transforms_active,
                                       jit_tracing_state, torch_function_mode_enabled)
from din_fast.op_contract import memory_format_of

_C = _extension.module()

LIB = torch.library.Library("din_fast", "DEF")
OPS: dict[str, FusedOp] = {}


def empty_like_format(like: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` (default: like's) in like's memory format, dtype and device."""
    shape = like.shape if shape is None else shape
    fmt = memory_format_of(like) if len(shape) == 4 else torch.contiguous_format
    return like.new_empty(shape).contiguous(memory_format=fmt) if fmt != torch.contiguous_format \
        else like.new_empty(shape)


def _formatted(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.is_contiguous():  # the common case, decided with one query (memory_format_of needs two)
        return out if out.is_contiguous() else out.contiguous()
    fmt = memory_format_of(like) if out.dim() == 4 else torch.contiguous_format
    return out if out.is_contiguous(memory_format=fmt) else out.contiguous(memory_format=fmt)


def _flatten(args: Sequence[Any]) -> tuple[list[torch.Tensor], list[int | None]]:
    """Tensors of ``args`` (lists expanded) and, per argument, the list length (None for a tensor)."""
    tensors: list[torch.Tensor] = []
    spec: list[int | None] = []
    for a in args:
        if isinstance(a, (list, tuple)):
            tensors.extend(a)
            spec.append(len(a))
        else:
            tensors.append(a)
            spec.append(None)
    return tensors, spec


def _unflatten(tensors: Sequence[torch.Tensor], spec: Sequence[int | None]) -> list[Any]:
    out: list[Any] = []
    i = 0
    for n in spec:
        if n is None:
            out.append(tensors[i])
            i += 1
        else:
            out.append(list(tensors[i:i + n]))
            i += n
    return out


def _autocast_args(args: Sequence[Any], device_type: str) -> list[Any]:
    """``args`` with every floating tensor cast to the autocast dtype of ``device_type`` when autocast is
    on there (our kernels need one dtype across inputs and parameters), else unchanged."""
    if not torch.is_autocast_enabled(device_type):
        return list(args)
    dtype = torch.get_autocast_dtype(device_type)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t

    return [[cast(t) for t in a] if isinstance(a, (list, tuple)) else cast(a) if isinstance(a, torch.Tensor)
            else a for a in args]


def register_autocast(name: str) -> None:
    """Under autocast (CPU and CUDA), run op ``din_fast::name`` in the autocast dtype: cast its floating
    inputs, then call it with autocast off (our kernels need one dtype across inputs and parameters)."""
    op = getattr(torch.ops.din_fast, name).default
    for device_type in ("cpu", "cuda"):
        key_name, key = _torch_internals.autocast_dispatch_key(device_type)

        def autocast_impl(*args: Any, device_type: str = device_type, key: Any = key) -> Any:
            cast = _autocast_args(args, device_type)  # before the guard: it turns autocast off
            with _torch_internals.excluding_dispatch_key(key):
                return op(*cast)

        op.py_impl(key)(autocast_impl)  # the traced (torch.compile) path
        LIB.impl(name, lambda _keyset, *args, impl=autocast_impl: impl(*args), key_name, with_keyset=True)


# Tensor types the eager fast path passes straight to a kernel. Subclasses (FakeTensor, FunctionalTensor,
# tensor-subclass wrappers) need the dispatcher, so they take the torch.ops path.
_PLAIN_TENSORS = frozenset((torch.Tensor, torch.nn.Parameter))
# Implementations whose kernels check every argument as the op's Python check does (csrc/common.h and
# the per-op check helpers: same conditions, ValueError naming the argument;
# tests/test_every_op.py::test_kernel_checks_cover_python_checks holds them to it): the eager fast path calls them without the Python check (FusedOp.__call__).
_KERNEL_CHECKED = frozenset(("cpp",))
# Implementations that are kernel ops of din_fast._C (_<name>_<impl>, _<name>_backward_<impl>): the eager
# fast path runs them through _C.eager_call (csrc/eager_autograd.cpp).
_CPP_IMPLEMENTATIONS = frozenset(("cpp", "cuda"))


@functools.cache
def eager_kernels(name: str, impl: str) -> Any:
    """The ``_C.eager_kernels`` handle of op ``name``'s kernel pair ``_<name>_<impl>`` and
    ``_<name>_backward_<impl>`` for ``_C.eager_call``. Call it after ``backends.resolve`` has chosen
    ``impl``: resolving a C++ implementation builds and loads din_fast._C on first use."""
    return _extension.module().eager_kernels(f"din_fast::_{name}_{impl}", f"din_fast::_{name}_backward_{impl}")


def _eager_plain(tensors: Sequence[Any]) -> bool:
    """True when ``tensors`` may skip the dispatcher: plain tensors, and nothing that intercepts
    dispatch is active (torch.compile tracing, torch-function/dispatch modes, functorch, JIT tracing)."""
    if (torch.compiler.is_compiling() or dispatch_mode_depth() or torch_function_mode_enabled()
            or functorch_transforms_active() or jit_tracing_state() is not None):
        return False
    return _PLAIN_TENSORS.issuperset(map(type, tensors))


# Under create_graph=True, the gradients a registered autograd formula returns get torch's node that
# raises if they are differentiated again: the backward ops have no autograd formula of their own, so
# without it a second differentiation would silently treat them as constants.
_once_differentiable = torch.autograd.function.once_differentiable(lambda _ctx, _grad, *grads: grads)


def differentiable_once(backward: Callable[..., Any], grad: torch.Tensor, args: Sequence[Any],
                        spec: Sequence[int | None]) -> tuple[Any, ...]:
    """``backward(grad, *args)``, the gradients of a registered autograd formula (each a Tensor or a list
    of Tensors, laid out as ``spec`` says: ``_flatten``'s). Under create_graph=True it runs without
    recording a graph, and if ``grad`` requires grad the gradients come out of a node that raises when
    they are differentiated (as ``torch.autograd.function.once_differentiable``, which takes only Tensor
    gradients): double backward is refused on every route, as the C++ node refuses it."""
    if not torch.is_grad_enabled():  # create_graph=False: the common case, nothing to guard
        return tuple(backward(grad, *args))
    with torch.no_grad():
        grads = _flatten(backward(grad, *args))[0]
    guarded = _once_differentiable(None, grad, *grads)
    return tuple(_unflatten([guarded] if isinstance(guarded, torch.Tensor) else guarded, spec))


def _tensor_params(schema: str) -> list[tuple[str, str]]:
    """(type, name) of each argument of a fused op's schema, parsed by torch's schema parser; every
    argument must be a Tensor or a Tensor[] and the op must return one Tensor."""
    parsed = _torch_internals.parse_schema(schema)
    tensor, tensors = _torch_internals.TENSOR_TYPE, _torch_internals.TENSOR_LIST_TYPE
    params = []
    for arg in parsed.arguments:
        if arg.type not in (tensor, tensors):
            raise ValueError(f"{schema}: argument {arg.name} must be a Tensor or a Tensor[], not {arg.type}")
        params.append(("Tensor" if arg.type == tensor else "Tensor[]", arg.name))
    if [r.type for r in parsed.returns] != [tensor]:
        raise ValueError(f"{schema}: a fused op returns one Tensor")
    return params


def _first_tensor(args: Sequence[Any]) -> torch.Tensor:
    first = args[0]
    return first[0] if isinstance(first, (list, tuple)) else first


class FusedOp:
    """One fused op and its backward, with every implementation routed by ``din_fast.backends``.

    Args:
        schema: the forward schema, e.g. ``"asyca(Tensor x1, Tensor x2, ...) -> Tensor"``. Every
            argument is a differentiable Tensor or Tensor[]; the op returns one Tensor.
        reference: the eager PyTorch forward with the schema's signature (differentiable by autograd).
        check: validates the arguments (shapes, dtypes, devices; never reads data), raising
            ValueError naming the bad argument. Runs in fake kernels too.
        output_shape: the forward output's shape from the arguments.
        kernels: the non-reference implementations the op has a kernel of (``"cpp"``: csrc/cpu/<op>.cpp,
            ``"cuda"``: csrc/cuda/<op>.cu, ``"triton"``: kernels/<op>.py). Under an explicit backend
            outside them the reference is the op's implementation (``din_fast.backends``); the op's
            module says why there is no such kernel.
    """

    def __init__(self, schema: str, reference: Callable[..., torch.Tensor],
                 check: Callable[..., None], output_shape: Callable[..., Sequence[int]],
                 kernels: tuple[str, ...]) -> None:
        params = _tensor_params(schema)
        self.name = _torch_internals.parse_schema(schema).name
        backends.declare_kernels(self.name, kernels)
        self.reference = reference
        self.check = check
        self._implementations: dict[tuple[str, bool], Callable[..., Any]] = {}
        self._eager_routes: dict[tuple[torch.device, torch.dtype, str], tuple[str, Any]] = {}
        self.output_shape = output_shape
        arguments = ", ".join(f"{t} {n}" for t, n in params)
        grads = ", ".join(t for t, _ in params)
        forward = (self.name, f"({arguments}) -> Tensor")
        backward = (f"{self.name}_backward", f"(Tensor grad, {arguments}) -> ({grads})")
        self.schema, self.backward_schema = (name + tail for name, tail in (forward, backward))
        for name, tail in (forward, backward):
            LIB.define(name + tail)
            LIB.define(f"_{name}_cpp{tail}")
            LIB.define(f"_{name}_cuda{tail}")
        for key in ("CPU", "CUDA"):
            LIB.impl(self.name, self._route_forward, key)
            LIB.impl(f"{self.name}_backward", self._route_backward, key)
        torch.library.register_fake(f"din_fast::{self.name}", self._fake_forward, lib=LIB)
        torch.library.register_fake(f"din_fast::{self.name}_backward", self._fake_backward, lib=LIB)
        torch.library.register_autograd(f"din_fast::{self.name}", self._autograd_backward,
                                        setup_context=self._setup_context, lib=LIB)
        self.op = getattr(torch.ops.din_fast, self.name).default
        register_autocast(self.name)
        self.backward_op = getattr(torch.ops.din_fast, f"{self.name}_backward").default
        OPS[self.name] = self

    # -- public entry -------------------------------------------------------------------------
    def __call__(self, *args: Any) -> torch.Tensor:
        """The op on the implementation ``din_fast.backends`` picks; autocast-aware.

        One decision: a C++ implementation (cpp, cuda) on plain eager tensors (``_eager_plain``) is one
        call into ``_C.eager_call``, the kernel and, when a gradient is needed, the C++ autograd node.
        Every other call is checked, then runs the reference as a plain autograd graph or the torch.ops
        op (torch.library's autograd, the router: Triton, fake tensors, torch.compile, dispatch modes).

        A ``_KERNEL_CHECKED`` implementation checks its arguments itself (the C++ kernels run csrc's
        twins of the Python checks), so the Python check runs only if its call fails: it then raises
        its ValueError naming the argument, or, if it finds nothing, the kernel's own error propagates.
        A bad argument gets the same error on every route."""
        tensors = _flatten(args)[0]
        if any_autocast_enabled():  # one cheap query in the common case (autocast off)
            first = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
            if first is not None and torch.is_autocast_enabled(first.device.type):  # (no tensor: check says so)
                args = _autocast_args(args, first.device.type)
                tensors = _flatten(args)[0]
        if _eager_plain(tensors):
            try:
                impl, kernels = self._eager_route(tensors[0])
                if impl in _KERNEL_CHECKED:
                    return _C.eager_call(kernels, *args)
            except Exception:
                self.check(*args)  # raises the Python check's error if an argument is bad
                raise
            self.check(*args)
            if kernels is not None:
                return _C.eager_call(kernels, *args)
        else:
            self.check(*args)
            impl = backends.resolve(self.name, tensors[0].device, tensors[0].dtype)
        if impl == "reference":
            return self.reference(*args)
        return self.op(*args)  # its router checks again (it is also the check of direct torch.ops calls)

    def _eager_route(self, x: torch.Tensor) -> tuple[str, Any]:
        """(implementation, ``_C.eager_kernels`` handle of its kernel ops or None) for tensors like ``x``
        under the current backend; the handle for the C++ implementations only. Cached per (device,
        dtype, backend): ``backends.resolve`` caches its answer too, but computing its key
        (``device.type``) costs as much as a small kernel."""
        global _C
        key = (x.device, x.dtype, backends.get_backend())
        route = self._eager_routes.get(key)
        if route is None:  # resolve raises (nothing cached) when an explicit backend cannot run here
            impl = backends.resolve(self.name, x.device, x.dtype)
            kernels = None
            if impl in _CPP_IMPLEMENTATIONS:
                _C = _extension.module()  # resolve may have just built and loaded it (first use)
                kernels = eager_kernels(self.name, impl)
            route = self._eager_routes[key] = (impl, kernels)
        return route

    # -- implementations ----------------------------------------------------------------------
    def reference_backward(self, grad: torch.Tensor, *args: Any) -> tuple[Any, ...]:
        """Vector-Jacobian product of the reference forward."""
        with torch.enable_grad():
            _, vjp = torch.func.vjp(self.reference, *args)
            return tuple(vjp(grad))

    def implementation(self, impl: str, backward: bool) -> Callable[..., Any]:
        """The callable of implementation ``impl`` (forward or backward); looked up once, then cached
        (the routers call this on every op call)."""
        key = (impl, backward)
        fn = self._implementations.get(key)
        if fn is None:
            fn = self._implementations[key] = self._lookup(impl, backward)
        return fn

    def _lookup(self, impl: str, backward: bool) -> Callable[..., Any]:
        suffix = "_backward" if backward else ""
        if impl == "reference":
            return self.reference_backward if backward else self.reference
        if impl in ("cpp", "cuda"):  # the OpOverload: calling it skips the packet's overload resolution
            return getattr(torch.ops.din_fast, f"_{self.name}{suffix}_{impl}").default
        if impl == "triton":
            module = importlib.import_module(f"din_fast.kernels.{self.name}")
            return module.backward if backward else module.forward
        raise ValueError(f"unknown implementation {impl!r}")

    def _route_forward(self, *args: Any) -> torch.Tensor:
        self.check(*args)
        x = _first_tensor(args)
        impl = backends.resolve(self.name, x.device, x.dtype)
        return _formatted(self.implementation(impl, backward=False)(*args), x)

    def _route_backward(self, grad: torch.Tensor, *args: Any) -> tuple[Any, ...]:
        """Gradients of the implementation ``backends.resolve`` picks, each in its input's format."""
        self.check(*args)
        x = _first_tensor(args)
        grads = self.implementation(backends.resolve(self.name, x.device, x.dtype), backward=True)(grad, *args)
        return tuple([_formatted(g, a) for g, a in zip(gs, arg)] if isinstance(arg, (list, tuple))
                     else _formatted(gs, arg) for gs, arg in zip(grads, args))

    # -- fake kernels and autograd --------------------------------------------------------------
    def _fake_forward(self, *args: Any) -> torch.Tensor:
        self.check(*args)
        x = _first_tensor(args)
        return empty_like_format(x, self.output_shape(*args))

    def _fake_backward(self, grad: torch.Tensor, *args: Any) -> tuple[Any, ...]:
        self.check(*args)
        return tuple([empty_like_format(t) for t in a] if isinstance(a, (list, tuple)) else empty_like_format(a)
                     for a in args)

    @staticmethod
    def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        tensors, ctx.spec = _flatten(inputs)
        ctx.save_for_backward(*tensors)

    def _autograd_backward(self, ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        args = _unflatten(ctx.saved_tensors, ctx.spec)  # checked when the forward ran
        return differentiable_once(self.backward_op, grad, args, ctx.spec)
