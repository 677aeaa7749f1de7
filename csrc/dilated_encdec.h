// Shapes and argument checks of `dilated_encdec` shared by its C++ CPU and CUDA kernels
// (din_fast/ops/dilated_encdec.py has the maths; the Python check there mirrors this one).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "common.h"

namespace din_fast {
namespace encdec {

// Layer k (0..5): a_k = relu(conv(a_{k-1}, Weff_k, dilation k) + b_k), a_{-1} = h; then the 3→1 gate.
constexpr int kCin[6] = {3, 6, 12, 24, 12, 6};
constexpr int kCout[6] = {6, 12, 24, 12, 6, 3};
constexpr int kDilation[6] = {1, 2, 4, 4, 2, 1};

// h is a (B, 3, H, W) floating tensor; weights and biases are 7 tensors each with h's device and dtype
// and the module's shapes (decoder weights in ConvTranspose2d's (in, out, 3, 3) layout).
inline void check_args(const at::Tensor& h, at::TensorList weights, at::TensorList biases) {
  static const std::vector<std::vector<int64_t>> weight_shapes = {
      {6, 3, 3, 3}, {12, 6, 3, 3}, {24, 12, 3, 3}, {24, 12, 3, 3}, {12, 6, 3, 3}, {6, 3, 3, 3}, {1, 3, 1, 1}};
  static const std::vector<std::vector<int64_t>> bias_shapes = {{6}, {12}, {24}, {12}, {6}, {3}, {1}};
  check_feature(h, "h", 3);
  TORCH_CHECK_VALUE(weights.size() == 7, "weights must be a list of 7 tensors, got ", weights.size());
  TORCH_CHECK_VALUE(biases.size() == 7, "biases must be a list of 7 tensors, got ", biases.size());
  for (size_t i = 0; i < 7; ++i) {
    const std::string w = "weights[" + std::to_string(i) + "]", b = "biases[" + std::to_string(i) + "]";
    check_same(weights[i], w.c_str(), h, "h", weight_shapes[i]);
    check_same(biases[i], b.c_str(), h, "h", bias_shapes[i]);
  }
}

// grad has shape (B, 1, H, W) and h's device and dtype.
inline void check_grad(const at::Tensor& grad, const at::Tensor& h) {
  check_same(grad, "grad", h, "h", {h.size(0), 1, h.size(2), h.size(3)});
}

// Layer k's weight as a conv weight (out, in, 3, 3): a stride-1 ConvTranspose2d is a conv with the
// transposed, spatially flipped weight.
inline at::Tensor conv_weight(int k, const at::Tensor& w) { return k < 3 ? w : w.transpose(0, 1).flip({2, 3}); }

}  // namespace encdec
}  // namespace din_fast
