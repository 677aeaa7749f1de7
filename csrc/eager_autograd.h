// Python functions of din_fast._C for FusedOp's eager fast path with the C++ implementations (see
// eager_autograd.cpp); module.cpp puts them in the module.
#pragma once

#include <Python.h>

namespace din_fast {

// eager_kernels(forward: str, backward: str) -> capsule: the kernel ops "din_fast::_<name>_<impl>" and
// "din_fast::_<name>_backward_<impl>", found once (the same capsule contents on every call).
PyObject* eager_kernels(PyObject* self, PyObject* const* args, Py_ssize_t nargs);

// eager_call(kernels, *args) -> Tensor: the forward kernel on args (Tensors and lists of Tensors), with
// one autograd node when grad mode is on and a tensor requires grad; the output in the first tensor's
// memory format.
PyObject* eager_call(PyObject* self, PyObject* const* args, Py_ssize_t nargs);

// Registers the Python type of the autograd node (EagerAutogradBackward); call once at module init.
bool register_eager_node_type();

}  // namespace din_fast
