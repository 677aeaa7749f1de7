// CUDA launchers of `mshf` (DeFiAN's multi-scale Hessian filter; din_fast/ops/mshf.py has the maths; the
// kernels are in mshf_kernels.cuh).
//
// Forward: a block computes a kTile × kTile tile of output pixels of one image. For each channel it
// stages the tile plus a halo of kHalo pixels (the largest dilation) in shared memory, zero outside
// the image, and evaluates the nine 3x3 stencils and λ of the three scales from there; λ accumulates
// over channels in registers (float, double for double), so x is read once plus the halo.
//
// Backward: kernel 1 (same tiling) recomputes g and writes e = ∂λ/∂g · grad/C (9 maps per channel,
// accumulation type) and the block's sums of e (dbias) and e · tap (dweight) per channel, which
// torch then adds over the blocks; kernel 2 applies the transposed stencils
// to e for dx. Where the square root's argument is 0 the derivative is NaN, as autograd's.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "common.h"
#include "cuda/launch.cuh"
#include "cuda/mshf_kernels.cuh"

namespace din_fast {
namespace {

void check_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  check_feature(x, "x");
  TORCH_CHECK_VALUE(cuda::on_kernel_device(x), "x must be a CUDA tensor for the cuda implementation, got ", x.device());
  const int64_t c = x.size(1);
  check_same(weight, "weight", x, "x", {3, 3, c, 3, 3});
  check_same(bias, "bias", x, "x", {3, 3, c});
}

dim3 tiles(const at::Tensor& x, int64_t z) {
  return dim3((x.size(3) + kTile - 1) / kTile, (x.size(2) + kTile - 1) / kTile, z);
}

at::Tensor mshf_cuda(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& bias_in) {
  check_args(x_in, weight_in, bias_in);
  const cuda::DeviceGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  at::Tensor out = at::empty({x.size(0), 3, x.size(2), x.size(3)}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mshf_cuda", [&] {
    cuda::launch(forward_kernel<scalar_t>, tiles(x, x.size(0)), dim3(kTile, kTile), 0, x.data_ptr<scalar_t>(),
                 weight.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), x.size(1),
                 x.size(2), x.size(3));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mshf_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                                  const at::Tensor& weight_in,
                                                                  const at::Tensor& bias_in) {
  check_args(x_in, weight_in, bias_in);
  check_same(grad_in, "grad", x_in, "x", {x_in.size(0), 3, x_in.size(2), x_in.size(3)});
  const cuda::DeviceGuard guard(x_in.device());
  const at::Tensor grad = grad_in.contiguous(), x = x_in.contiguous(), weight = weight_in.contiguous(),
                   bias = bias_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor e = at::empty({B, C, 9, H, W}, x.options().dtype(acc_type));
  const dim3 grid = tiles(x, B);
  at::Tensor partial = at::empty({int64_t(grid.x) * grid.y * grid.z, C, 90}, x.options().dtype(acc_type));
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mshf_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cuda::launch(eigen_grad_kernel<scalar_t>, grid, dim3(kTile, kTile), 0, grad.data_ptr<scalar_t>(),
                 x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), e.data_ptr<acc_t>(),
                 partial.data_ptr<acc_t>(), C, H, W);
    cuda::launch(input_grad_kernel<scalar_t>, tiles(x, B * C), dim3(kTile, kTile), 0, e.data_ptr<acc_t>(),
                 weight.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), C, H, W);
  });
  const at::Tensor sums = partial.sum(0);
  // sums (C, 90) → dbias (3 scales, 3 kinds, C) and dweight (3, 3, C, 3, 3).
  at::Tensor dbias = sums.slice(1, 0, 9).t().reshape({3, 3, C}).to(x.scalar_type()).contiguous();
  at::Tensor dweight =
      sums.slice(1, 9, 90).reshape({C, 9, 9}).permute({1, 0, 2}).reshape({3, 3, C, 3, 3}).to(x.scalar_type())
          .contiguous();
  return {dx, dweight, dbias};
}

}  // namespace

DIN_FAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("_mshf_cuda", &mshf_cuda);
  m.impl("_mshf_backward_cuda", &mshf_backward_cuda);
}

}  // namespace din_fast
