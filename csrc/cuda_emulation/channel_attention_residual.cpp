// csrc/cuda/channel_attention_residual.cu, unchanged, compiled as host C++ for the CPU emulation (runtime.h): its kernels and
// launcher register under din_fast_cuda_emulation::_channel_attention_residual_cuda / _channel_attention_residual_backward_cuda (CPU key).
#include "cuda/channel_attention_residual.cu"
