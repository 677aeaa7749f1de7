// The Python module din_fast._C: `import din_fast._C` loads this library, whose static
// TORCH_LIBRARY_IMPL blocks then register the C++ kernels. The op schemas are
// defined once, in Python (din_fast/ops/_library.py), so that a build without the
// extension exposes exactly the same ops. Its functions: cpu_isa() reports which instruction
// set the CPU kernels run with (vec_math.h's cpu_isa()); winograd_tiles() the tile count of
// conv3x3's Winograd buffers; eager_kernels() and eager_call() are FusedOp's eager fast path for
// the C++ implementations (eager_autograd.cpp).
#include <Python.h>

#include "cpu/winograd_tiles.h"
#include "eager_autograd.h"
#include "vec_math.h"

static PyObject* cpu_isa(PyObject*, PyObject*) {
  switch (din_fast::cpu_isa()) {
    case din_fast::Isa::kAvx512: return PyUnicode_FromString("avx512");
    case din_fast::Isa::kAvx2: return PyUnicode_FromString("avx2");
    case din_fast::Isa::kBase: break;
  }
  return PyUnicode_FromString("baseline");
}

static PyObject* winograd_tiles(PyObject*, PyObject* args) {
  long long h = 0, w = 0;
  if (!PyArg_ParseTuple(args, "LL", &h, &w)) return nullptr;
  if (h < 1 || w < 1) {
    PyErr_Format(PyExc_ValueError, "winograd_tiles needs H, W >= 1, got %lld x %lld", h, w);
    return nullptr;
  }
  return PyLong_FromLongLong(din_fast::winograd_tiles(h, w));
}

static PyMethodDef din_fast_methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "Instruction set of the CPU kernels' vector code: 'avx512', 'avx2' or 'baseline' (capped by DIN_FAST_CPU_ISA)."},
    {"eager_kernels", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(din_fast::eager_kernels)),
     METH_FASTCALL, "eager_kernels(forward, backward): the kernel ops of FusedOp's eager fast path."},
    {"eager_call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(din_fast::eager_call)),
     METH_FASTCALL, "eager_call(kernels, *args): the forward kernel (and a C++ autograd node if needed)."},
    {"winograd_tiles", winograd_tiles, METH_VARARGS,
     "winograd_tiles(h, w): tiles per image of an H x W map in conv3x3's Winograd-domain buffers."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef din_fast_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, din_fast_methods};

PyMODINIT_FUNC PyInit__C(void) {
  if (!din_fast::register_eager_node_type()) return nullptr;
  return PyModule_Create(&din_fast_module);
}
