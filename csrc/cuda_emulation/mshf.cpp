// csrc/cuda/mshf.cu, unchanged, compiled as host C++ for the CPU emulation (runtime.h): its kernels and
// launcher register under din_fast_cuda_emulation::_mshf_cuda / _mshf_backward_cuda (CPU key).
#include "cuda/mshf.cu"
