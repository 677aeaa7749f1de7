// DIN's dense block body on CPU (din_fast/ops/dense_block.py has the maths and shapes), composed of
// conv3x3's Winograd building blocks (winograd.h):
//
// Forward: every feature f_i is written once into one buffer `features` (B, C + (n-1)G, H, W) and its
// Winograd transform once into V (36, C + (n-1)G, B * tiles); conv i is one batched GEMM over the
// prefix V[:, :C + iG] of the features it reads, and an output transform (bias and LeakyReLU fused)
// that writes f_i into the buffer. So each feature is transformed once, not once per conv reading it.
//
// Backward: all convs' input gradients accumulate into one dV, walking the convs in reverse; a
// feature's gradient is complete once every later conv has added to it, and then taken out of dV
// (adjoint input transform) once. LeakyReLU's derivative is read off the stored features (f_i > 0
// exactly where its input was > 0, the slope being positive). V is recomputed from the buffer:
// storing it would cost more memory than the buffer itself.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "kernel_utils.h"
#include "winograd.h"

namespace din_fast {
namespace {

constexpr double kSlope = 0.2;  // the official code's LeakyReLU slope (reference.DENSE_SLOPE)

// The twin of dense_block.py's _check, plus the CPU float32/float64 requirement: weights[i] is
// (G, C + iG, 3, 3) for i < n-1 and (Cout, C + (n-1)G, 3, 3) last, biases[i] (G) and (Cout). Returns G.
int64_t check_args(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  check_feature(x, "x");
  const int64_t n = static_cast<int64_t>(weights.size());
  TORCH_CHECK_VALUE(n > 0 && !biases.empty(), "weights and biases must be non-empty lists of tensors");
  TORCH_CHECK_VALUE(static_cast<int64_t>(biases.size()) == n, "biases must have one tensor per weight (", n,
                    "), got ", biases.size());
  for (int64_t i : {int64_t(0), n - 1}) {
    const at::Tensor& w = weights[i];
    TORCH_CHECK_VALUE(w.dim() == 4 && w.size(0) > 0, "weights[", i,
                      "] must have shape (Cout, Cin, 3, 3) with Cout > 0");
  }
  const int64_t c = x.size(1), g = n > 1 ? weights[0].size(0) : 0, cout = weights[n - 1].size(0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t out = i == n - 1 ? cout : g;
    const std::string w_name = "weights[" + std::to_string(i) + "]";
    const std::string b_name = "biases[" + std::to_string(i) + "]";
    check_same(weights[i], w_name.c_str(), x, "x", {out, c + i * g, 3, 3});
    check_same(biases[i], b_name.c_str(), x, "x", {out});
  }
  check_cpu_float(x, "x");
  return g;
}

// (y, features): y (B, Cout, H, W) contiguous, features (B, C + (n-1)G, H, W) contiguous.
std::tuple<at::Tensor, at::Tensor> dense_block_cpu(const at::Tensor& x, at::TensorList weights,
                                                   at::TensorList biases) {
  const int64_t g = check_args(x, weights, biases);
  const int64_t n = static_cast<int64_t>(weights.size()), c = x.size(1), width = weights[n - 1].size(1);
  at::Tensor features = at::empty({x.size(0), width, x.size(2), x.size(3)}, x.options());
  at::Tensor f0 = features.narrow(1, 0, c);
  f0.copy_(x);
  at::Tensor V = winograd_buffer(x, width);
  winograd_input(f0, V, 0);
  for (int64_t i = 0; i < n - 1; ++i) {
    const int64_t start = c + i * g;
    at::Tensor f = features.narrow(1, start, g);
    winograd_output(at::bmm(winograd_kernel(weights[i]), V.narrow(1, 0, start)), biases[i], kSlope, f);
    winograd_input(f, V, start);
  }
  at::Tensor y = at::empty({x.size(0), weights[n - 1].size(0), x.size(2), x.size(3)}, x.options());
  winograd_output(at::bmm(winograd_kernel(weights[n - 1]), V), biases[n - 1], 1.0, y);
  return {y, features};
}

// (dx, dweights, dbiases) from the output gradient and the forward's features buffer; dx contiguous.
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> dense_block_backward_cpu(
    const at::Tensor& grad, const at::Tensor& features, at::TensorList weights, at::TensorList biases) {
  check_feature(features, "features");
  const int64_t n = static_cast<int64_t>(weights.size());
  const int64_t g = n > 1 && weights[0].dim() == 4 ? weights[0].size(0) : 0;
  const int64_t c = features.size(1) - (n - 1) * g;
  TORCH_CHECK_VALUE(c > 0, "features has ", features.size(1), " channels: too few for ", n, " convs of growth ", g);
  const at::Tensor f = features.contiguous();
  check_args(f.narrow(1, 0, c), weights, biases);
  const int64_t width = f.size(1), B = f.size(0), H = f.size(2), W = f.size(3);
  check_same(grad, "grad", f, "features", {B, weights[n - 1].size(0), H, W});
  at::Tensor V = winograd_buffer(f, width);
  winograd_input(f, V, 0);
  std::vector<at::Tensor> dweights(n), dbiases(n);

  // Parameter gradients of conv i (output gradient gy, input channels 0 .. cin); returns its input
  // gradient's contribution to dV[:, :cin] as the factors (Uᵀ, dM) of one batched GEMM.
  auto conv_step = [&](int64_t i, const at::Tensor& gy, int64_t cin) {
    at::Tensor dM = winograd_output_adjoint(gy);
    dweights[i] = winograd_kernel_adjoint(at::bmm(dM, V.narrow(1, 0, cin).transpose(1, 2)));
    dbiases[i] = gy.sum({0, 2, 3});
    return std::make_tuple(winograd_kernel(weights[i]).transpose(1, 2), dM);
  };

  auto [ut_last, dm_last] = conv_step(n - 1, grad.contiguous(), width);  // the last conv reads every channel
  at::Tensor dV = at::bmm(ut_last, dm_last);
  for (int64_t i = n - 2; i >= 0; --i) {
    const int64_t start = c + i * g;
    at::Tensor gy = at::empty({B, g, H, W}, f.options());
    winograd_input_adjoint(dV, start, gy);  // complete: only later convs read f_i
    gy = at::leaky_relu_backward(gy, f.narrow(1, start, g), kSlope, /*self_is_result=*/true);
    auto [ut, dm] = conv_step(i, gy, start);
    dV.narrow(1, 0, start).baddbmm_(ut, dm);
  }
  at::Tensor dx = at::empty({B, c, H, W}, f.options());
  winograd_input_adjoint(dV, 0, dx);
  return {dx, dweights, dbiases};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_dense_block_cpp", &dense_block_cpu);
  m.impl("_dense_block_backward_cpp", &dense_block_backward_cpu);
}

}  // namespace din_fast
