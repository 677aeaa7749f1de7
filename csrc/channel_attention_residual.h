// Argument checks of `channel_attention_residual` shared by its C++ CPU and CUDA kernels
// (din_fast/ops/channel_attention_residual.py has the maths and the Python twin of this check).
// `check_device` is the implementation's device/dtype check. Returns R, the MLP's hidden width.
#pragma once

#include <ATen/ATen.h>

#include "common.h"

namespace din_fast {

inline int64_t check_channel_attention_residual_args(const at::Tensor& u, const at::Tensor& t, const at::Tensor& w1,
                                                     const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                                                     void (*check_device)(const at::Tensor&, const char*)) {
  check_feature(u, "u");
  check_device(u, "u");
  check_same(t, "t", u, "u", u.sizes());
  return check_channel_mlp(u, "u", w1, "w1", b1, "b1", w2, "w2", b2, "b2");
}

}  // namespace din_fast
