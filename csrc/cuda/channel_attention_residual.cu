// CUDA kernels of din_fast::channel_attention_residual and its backward (maths in
// din_fast/ops/channel_attention_residual.py). Two passes each way, both channel_sums.cuh's (shared with
// asyca), on NCHW or channels_last; the MLP in between on (B, C) with ATen ops in the accumulation dtype:
//   forward   channel_sums(t) → mean; a = sigmoid(W2 relu(W1 mean + b1) + b2); y = a ⊙ t + 1 ⊙ u
//   backward  channel_sums(t, g) → mean, Σg·t; dz = Σg·t ⊙ a(1 − a) through the MLP's backward gives
//             the parameter gradients and k = (W1ᵀ [h > 0] W2ᵀ dz) / HW; dt = a ⊙ g + k, du = 1 ⊙ g + 0
// (pass2's two-output form, one read of g). The sums read t twice per element as both of
// channel_sums' maps (the second read hits the cache).
// float16 / bfloat16 / float32 / float64; accumulation in float32 (float64 for float64).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "channel_attention_residual.h"
#include "cuda/channel_sums.cuh"

namespace din_fast {
namespace cuda {
namespace {

// The MLP on the means (B, C) in the accumulation dtype: a = sigmoid(W2 relu(h) + b2), h = W1 mean + b1.
struct Attention {
  at::Tensor w1, w2, h, a;

  Attention(const at::Tensor& mean, const at::Tensor& w1_, const at::Tensor& b1, const at::Tensor& w2_,
            const at::Tensor& b2) {
    const auto acc = mean.scalar_type();
    w1 = w1_.flatten(1).to(acc);
    w2 = w2_.flatten(1).to(acc);
    h = at::linear(mean, w1, b1.to(acc));
    a = at::sigmoid(at::linear(at::relu(h), w2, b2.to(acc))).contiguous();
  }
};

at::Tensor channel_attention_residual_cuda(const at::Tensor& u_, const at::Tensor& t_, const at::Tensor& w1,
                                           const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  check_channel_attention_residual_args(u_, t_, w1, b1, w2, b2, check_cuda_float);
  const DeviceGuard guard(u_.device());
  const Prepared in = prepare(t_, u_);
  const int64_t hw = in.x1.size(2) * in.x1.size(3);
  const at::Tensor mean = channel_sums(in.x1, in.x1, nullptr).select(1, 0) / double(hw);
  const Attention att(mean, w1, b1, w2, b2);
  at::Tensor y = at::empty(in.x1.sizes(), in.x1.options().memory_format(in.fmt));
  launch_pass2(in.x1, &in.x2, y, nullptr, att.a, at::ones_like(att.a), nullptr, nullptr);
  return y;
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads channel_attention_residual_backward_cuda(
    const at::Tensor& grad, const at::Tensor& u_, const at::Tensor& t_, const at::Tensor& w1, const at::Tensor& b1,
    const at::Tensor& w2, const at::Tensor& b2) {
  check_channel_attention_residual_args(u_, t_, w1, b1, w2, b2, check_cuda_float);
  check_same(grad, "grad", u_, "u", u_.sizes());
  const DeviceGuard guard(u_.device());
  const Prepared in = prepare(t_, grad);
  const int64_t hw = in.x1.size(2) * in.x1.size(3);
  const at::Tensor sums = channel_sums(in.x1, in.x1, &in.x2);  // (B, 4, C): Σt, Σt, Σg·t, Σg·t
  const at::Tensor mean = sums.select(1, 0) / double(hw);
  const Attention att(mean, w1, b1, w2, b2);
  // The MLP's backward: dz through W2, the ReLU (open iff h > 0) and W1.
  const at::Tensor dz = sums.select(1, 2) * att.a * (1 - att.a);
  const at::Tensor g_w2 = dz.t().mm(at::relu(att.h)), g_b2 = dz.sum(0);
  const at::Tensor dh = dz.mm(att.w2).masked_fill(att.h <= 0, 0);
  const at::Tensor g_w1 = dh.t().mm(mean), g_b1 = dh.sum(0);
  const at::Tensor k = (dh.mm(att.w1) / double(hw)).contiguous(), zero = at::zeros_like(k);
  at::Tensor dt = at::empty(in.x1.sizes(), in.x1.options().memory_format(in.fmt));
  at::Tensor du = at::empty(in.x1.sizes(), in.x1.options().memory_format(in.fmt));
  launch_pass2(in.x2, nullptr, dt, &du, att.a, at::ones_like(att.a), &k, &zero);
  const auto dtype = u_.scalar_type();
  return {du, dt, g_w1.view(w1.sizes()).to(dtype), g_b1.to(dtype), g_w2.view(w2.sizes()).to(dtype), g_b2.to(dtype)};
}

}  // namespace
}  // namespace cuda

DIN_FAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("_channel_attention_residual_cuda", &cuda::channel_attention_residual_cuda);
  m.impl("_channel_attention_residual_backward_cuda", &cuda::channel_attention_residual_backward_cuda);
}

}  // namespace din_fast
