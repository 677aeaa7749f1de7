// csrc/cuda/dilated_encdec.cu, unchanged, compiled as host C++ for the CPU emulation (runtime.h): its kernels and
// launcher register under din_fast_cuda_emulation::_dilated_encdec_cuda / _dilated_encdec_backward_cuda (CPU key).
#include "cuda/dilated_encdec.cu"
