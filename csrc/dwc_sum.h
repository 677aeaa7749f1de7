// Argument checks of `dwc_sum` shared by its C++ CPU and CUDA kernels (din_fast/ops/dwc_sum.py has the
// maths and the Python twin of this check). `check_device` is the implementation's device/dtype check.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "common.h"

namespace din_fast {

inline void check_dwc_sum_args(at::TensorList inputs, const at::Tensor& weight, const at::Tensor& bias,
                               void (*check_device)(const at::Tensor&, const char*)) {
  TORCH_CHECK_VALUE(!inputs.empty(), "inputs must be a non-empty list of tensors (k >= 1)");
  const at::Tensor& x0 = inputs[0];
  check_feature(x0, "inputs[0]");
  check_device(x0, "inputs[0]");
  for (size_t j = 1; j < inputs.size(); ++j) {
    const std::string name = "inputs[" + std::to_string(j) + "]";
    check_same(inputs[j], name.c_str(), x0, "inputs[0]", x0.sizes());
  }
  const int64_t K = static_cast<int64_t>(inputs.size()), C = x0.size(1);
  check_same(weight, "weight", x0, "inputs[0]", {K, C});
  check_same(bias, "bias", x0, "inputs[0]", {C});
}

}  // namespace din_fast
