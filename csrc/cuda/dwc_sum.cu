// CUDA launchers of din_fast::dwc_sum and its backward (the kernels are in dwc_sum_kernels.cuh; maths in
// csrc/cpu/dwc_sum.cpp and din_fast/ops/dwc_sum.py).
//
// A launch takes up to kMaxK = 6 inputs (DIN uses at most 5); longer lists run in chunks (the forward
// accumulates into the output). The channels_last backward keeps (k + 1)·C partial sums per block in
// shared memory: at large C it takes fewer inputs per launch, and reduces NCHW copies when even one
// input does not fit (launch.cuh's kMaxDynamicShared). float16 / bfloat16 / float32 / float64, accumulation in float32
// (float64 for float64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "cuda/dwc_sum_kernels.cuh"
#include "cuda/launch.cuh"
#include "dwc_sum.h"

namespace din_fast {
namespace cuda {
namespace {

struct Prepared {
  at::MemoryFormat fmt;
  std::vector<at::Tensor> xs;
  at::Tensor weight, bias;
};

Prepared prepare(at::TensorList inputs, const at::Tensor& weight, const at::Tensor& bias) {
  check_dwc_sum_args(inputs, weight, bias, check_cuda_float);
  const at::Tensor& x0 = inputs[0];
  Prepared p{memory_format_of(x0), {}, weight.contiguous(), bias.contiguous()};
  for (const at::Tensor& t : inputs) p.xs.push_back(t.contiguous(p.fmt));
  return p;
}

at::Tensor dwc_sum_cuda(at::TensorList inputs, const at::Tensor& weight, const at::Tensor& bias) {
  const Prepared in = prepare(inputs, weight, bias);
  const DeviceGuard guard(in.xs[0].device());
  at::Tensor out = at::empty(in.xs[0].sizes(), in.xs[0].options().memory_format(in.fmt));
  const Layout l = layout_of(out);
  const int64_t K = static_cast<int64_t>(in.xs.size());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "dwc_sum_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t j0 = 0; j0 < K; j0 += kMaxK) {
      const int k = static_cast<int>(std::min<int64_t>(kMaxK, K - j0));
      Ptrs<const scalar_t> xs{};
      bool vec = vectorisable<scalar_t>(l, {out.data_ptr()});
      for (int j = 0; j < k; ++j) {
        xs.p[j] = in.xs[j0 + j].data_ptr<scalar_t>();
        vec = vec && reinterpret_cast<uintptr_t>(xs.p[j]) % 16 == 0;
      }
      const int n = vec ? Vec<scalar_t>::N : 1;
      const dim3 grid(static_cast<unsigned>((out.numel() / n + kThreads - 1) / kThreads));
      const scalar_t* wp = in.weight.data_ptr<scalar_t>() + j0 * l.C;
      const bool first = j0 == 0, last = j0 + k == K;
      const auto kernel = vec ? forward_kernel<scalar_t, acc_t, true> : forward_kernel<scalar_t, acc_t, false>;
      launch(kernel, grid, kThreads, 0, xs, k, wp, in.bias.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), l, first,
             last);
    }
  });
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> dwc_sum_backward_cuda(const at::Tensor& grad,
                                                                                  at::TensorList inputs,
                                                                                  const at::Tensor& weight,
                                                                                  const at::Tensor& bias) {
  const Prepared in = prepare(inputs, weight, bias);
  check_same(grad, "grad", inputs[0], "inputs[0]", inputs[0].sizes());
  const DeviceGuard guard(grad.device());
  const at::Tensor g = grad.contiguous(in.fmt);
  const Layout l = layout_of(g);
  const int64_t K = static_cast<int64_t>(in.xs.size());
  const at::ScalarType acc = at::toOpMathType(g.scalar_type());
  int64_t per_launch = kMaxK;
  if (l.nhwc) {
    per_launch = std::min<int64_t>(kMaxK, int64_t(kMaxDynamicShared / (l.C * c10::elementSize(acc))) - 1);
    if (per_launch < 1) {
      std::vector<at::Tensor> xs;
      for (const at::Tensor& x : in.xs) xs.push_back(x.contiguous());
      auto [dxs, dweight, dbias] = dwc_sum_backward_cuda(g.contiguous(), xs, weight, bias);
      for (at::Tensor& d : dxs) d = d.contiguous(at::MemoryFormat::ChannelsLast);
      return {dxs, dweight, dbias};
    }
  }
  std::vector<at::Tensor> dxs;
  for (int64_t j = 0; j < K; ++j) dxs.push_back(at::empty(g.sizes(), g.options().memory_format(in.fmt)));
  at::Tensor dweight = at::empty({K, l.C}, g.options().dtype(acc));
  at::Tensor dbias;
  const int64_t items = l.nhwc ? l.B : l.B * l.C;
  const int64_t splits = reduction_splits(items, l.HW, 2048);
  const int64_t per_split = ((l.HW + splits - 1) / splits + 15) / 16 * 16;  // whole vectors per split
  const int64_t used = (l.HW + per_split - 1) / per_split;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "dwc_sum_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t j0 = 0; j0 < K; j0 += per_launch) {
      const int k = static_cast<int>(std::min<int64_t>(per_launch, K - j0));
      Ptrs<const scalar_t> xs{};
      Ptrs<scalar_t> ds{};
      for (int j = 0; j < k; ++j) {
        xs.p[j] = in.xs[j0 + j].data_ptr<scalar_t>();
        ds.p[j] = dxs[j0 + j].data_ptr<scalar_t>();
      }
      at::Tensor part = at::empty({l.B, used, k + 1, l.C}, g.options().dtype(acc));
      const size_t shm = l.nhwc ? size_t(k + 1) * l.C * sizeof(acc_t) : (kThreads / kWarp) * sizeof(acc_t);
      const dim3 grid(static_cast<unsigned>(items * used));
      launch(backward_kernel<scalar_t, acc_t>, grid, kThreads, shm, g.data_ptr<scalar_t>(), xs, ds, k,
             in.weight.data_ptr<scalar_t>() + j0 * l.C, part.data_ptr<acc_t>(), l, used, per_split);
      const at::Tensor sums = part.sum(at::IntArrayRef{0, 1});
      dweight.narrow(0, j0, k).copy_(sums.narrow(0, 0, k));
      dbias = sums.select(0, k);
    }
  });
  return {dxs, dweight.to(weight.scalar_type()), dbias.to(bias.scalar_type())};
}

}  // namespace
}  // namespace cuda

DIN_FAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("_dwc_sum_cuda", &cuda::dwc_sum_cuda);
  m.impl("_dwc_sum_backward_cuda", &cuda::dwc_sum_backward_cuda);
}

}  // namespace din_fast
