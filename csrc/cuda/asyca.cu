// CUDA kernels of din_fast::asyca and its backward (maths in csrc/cpu/asyca.cpp and din_fast/ops/asyca.py).
//
// Two passes over the feature maps in each direction, as on CPU (the passes are channel_sums.cuh's):
//   channel_sums  per-(b, c) Σx1, Σx2 (backward also Σg·x1, Σg·x2)
//   (tiny)        the per-sample network on (B, 2C) in the accumulation dtype with ATen ops, and its
//                 hand-written backward (every parameter gradient)
//   launch_pass2  out = a ⊙ x1 + b ⊙ x2, or dx1 = a ⊙ g + k1 and dx2 = b ⊙ g + k2 (one read of g)
// float16 / bfloat16 / float32 / float64; accumulation in float32 (float64 for float64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <tuple>

#include "cuda/channel_sums.cuh"
#include "asyca.h"

namespace din_fast {
namespace cuda {
namespace {

// The per-sample network from the means m (B, 2C) to (a, b), with the intermediates for the backward.
struct Attention {
  at::Tensor w_init, w_dc, w_ic, z, p, h, a, b;

  Attention(const at::Tensor& m, const at::Tensor& wi, const at::Tensor& bi, const at::Tensor& wd,
            const at::Tensor& bd, const at::Tensor& wc, const at::Tensor& bc) {
    const auto acc = m.scalar_type();
    const int64_t C = wi.size(0), R = wd.size(0);
    w_init = wi.reshape({C, 2 * C}).to(acc);
    w_dc = wd.reshape({R, C}).to(acc);
    w_ic = wc.reshape({2 * C, R}).to(acc);
    z = at::linear(m, w_init, bi.to(acc));
    p = at::linear(z, w_dc, bd.to(acc));
    h = at::relu(p);
    const at::Tensor ab = at::softmax(at::linear(h, w_ic, bc.to(acc)).view({-1, 2, C}), 1);
    a = ab.select(1, 0).contiguous();
    b = ab.select(1, 1).contiguous();
  }
};

at::Tensor asyca_cuda(const at::Tensor& x1_, const at::Tensor& x2_, const at::Tensor& w_init, const at::Tensor& b_init,
                      const at::Tensor& w_dc, const at::Tensor& b_dc, const at::Tensor& w_ic, const at::Tensor& b_ic) {
  check_asyca_args(x1_, x2_, w_init, b_init, w_dc, b_dc, w_ic, b_ic, check_cuda_float);
  const DeviceGuard guard(x1_.device());
  const Prepared in = prepare(x1_, x2_);
  const int64_t hw = in.x1.size(2) * in.x1.size(3);
  const at::Tensor sums = channel_sums(in.x1, in.x2, nullptr);
  const Attention att(sums.flatten(1) / double(hw), w_init, b_init, w_dc, b_dc, w_ic, b_ic);
  at::Tensor out = at::empty(in.x1.sizes(), in.x1.options().memory_format(in.fmt));
  launch_pass2(in.x1, &in.x2, out, nullptr, att.a, att.b, nullptr, nullptr);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
asyca_backward_cuda(const at::Tensor& grad, const at::Tensor& x1_, const at::Tensor& x2_, const at::Tensor& w_init,
                    const at::Tensor& b_init, const at::Tensor& w_dc, const at::Tensor& b_dc, const at::Tensor& w_ic,
                    const at::Tensor& b_ic) {
  check_asyca_args(x1_, x2_, w_init, b_init, w_dc, b_dc, w_ic, b_ic, check_cuda_float);
  check_same(grad, "grad", x1_, "x1", x1_.sizes());
  const DeviceGuard guard(x1_.device());
  const Prepared in = prepare(x1_, x2_);
  const at::Tensor g = grad.contiguous(in.fmt);
  const int64_t C = in.x1.size(1), hw = in.x1.size(2) * in.x1.size(3);
  const at::Tensor sums = channel_sums(in.x1, in.x2, &g);  // (B, 4, C)
  const at::Tensor m = sums.narrow(1, 0, 2).flatten(1) / double(hw);
  const Attention att(m, w_init, b_init, w_dc, b_dc, w_ic, b_ic);
  const at::Tensor da = sums.select(1, 2), db = sums.select(1, 3);
  // Pair softmax backward, then back through conv_ic, ReLU (0 where p <= 0), conv_dc, conv_init.
  const at::Tensor dot = att.a * da + att.b * db;
  const at::Tensor ds = at::cat({att.a * (da - dot), att.b * (db - dot)}, 1);
  const at::Tensor g_w_ic = ds.t().mm(att.h), g_b_ic = ds.sum(0);
  const at::Tensor dp = ds.mm(att.w_ic).masked_fill(att.p <= 0, 0);
  const at::Tensor g_w_dc = dp.t().mm(att.z), g_b_dc = dp.sum(0);
  const at::Tensor dz = dp.mm(att.w_dc);
  const at::Tensor g_w_init = dz.t().mm(m), g_b_init = dz.sum(0);
  const at::Tensor k = dz.mm(att.w_init) / double(hw);
  const at::Tensor k1 = k.narrow(1, 0, C).contiguous(), k2 = k.narrow(1, C, C).contiguous();
  at::Tensor dx1 = at::empty(in.x1.sizes(), in.x1.options().memory_format(in.fmt));
  at::Tensor dx2 = at::empty(in.x1.sizes(), in.x1.options().memory_format(in.fmt));
  launch_pass2(g, nullptr, dx1, &dx2, att.a, att.b, &k1, &k2);
  const auto dt = x1_.scalar_type();
  return {dx1,
          dx2,
          g_w_init.view(w_init.sizes()).to(dt),
          g_b_init.to(dt),
          g_w_dc.view(w_dc.sizes()).to(dt),
          g_b_dc.to(dt),
          g_w_ic.view(w_ic.sizes()).to(dt),
          g_b_ic.to(dt)};
}

}  // namespace
}  // namespace cuda

DIN_FAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("_asyca_cuda", &cuda::asyca_cuda);
  m.impl("_asyca_backward_cuda", &cuda::asyca_backward_cuda);
}

}  // namespace din_fast
