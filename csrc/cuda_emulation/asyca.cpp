// csrc/cuda/asyca.cu, unchanged, compiled as host C++ for the CPU emulation (runtime.h): its kernels and
// launcher register under din_fast_cuda_emulation::_asyca_cuda / _asyca_backward_cuda (CPU key).
#include "cuda/asyca.cu"
