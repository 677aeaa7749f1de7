// csrc/cuda/dwc_sum.cu, unchanged, compiled as host C++ for the CPU emulation (runtime.h): its kernels and
// launcher register under din_fast_cuda_emulation::_dwc_sum_cuda / _dwc_sum_backward_cuda (CPU key).
#include "cuda/dwc_sum.cu"
