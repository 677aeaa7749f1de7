// An empty Python module: `import din_fast._C` loads this library, whose static
// TORCH_LIBRARY_IMPL blocks then register the C++ kernels. The op schemas are
// defined once, in Python (din_fast/ops/_library.py), so that a build without the
// extension exposes exactly the same ops.
#include <Python.h>

static struct PyModuleDef din_fast_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&din_fast_module); }
