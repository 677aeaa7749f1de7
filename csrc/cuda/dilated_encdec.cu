// CUDA launchers of `dilated_encdec` (DeFiAN's DiEnDec + 1x1 gate; din_fast/ops/dilated_encdec.py has
// the maths and shapes; the kernels are in dilated_encdec_kernels.cuh).
//
// One kernel per layer. A block computes a kTileW × kTileH tile of output pixels (one per thread) for all
// output channels of a dilated 3x3 conv: it stages the tile plus its halo (the dilation on each side)
// of kChunk input channels at a time in shared memory, zero outside the image (the convs' padding), and
// the layer's weights (packed [ci][ky][kx][co]) once; every thread keeps its COUT accumulators in
// registers. Epilogues fuse ReLU, ReLU + the 3→1 gate (last forward layer), ReLU's derivative as a mask
// (the input-gradient convs of the backward, which use Weff transposed and flipped) or nothing (dh).
// The backward recomputes and stores the activations, runs the gate's backward, then per layer from the
// last to the first: weight and bias gradients as per-block partial sums (tile and dz tile in shared
// memory; added up by one reduction, deterministic) and the input-gradient conv.
//
// Numerics: loads in the input dtype (float16, bfloat16, float32, float64); accumulation and the stored
// intermediates in at::opmath_type (float32, float64 for float64); outputs in the input dtype.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <tuple>
#include <type_traits>
#include <vector>

#include "common.h"
#include "cuda/dilated_encdec_kernels.cuh"
#include "cuda/launch.cuh"
#include "dilated_encdec.h"

namespace din_fast {
namespace {

using namespace encdec;

template <typename TIn, typename TOut, typename Acc, int CIN, int COUT, int D, int EPI>
void conv(const at::Tensor& in, const at::Tensor& w, const at::Tensor& bias, at::Tensor& out, const at::Tensor& act,
          const at::Tensor& gate) {
  const int64_t B = in.size(0), H = in.size(2), W = in.size(3);
  TORCH_CHECK(B <= 65535, "dilated_encdec (cuda): batch ", B, " exceeds the grid limit 65535");
  const dim3 grid((W + kTileW - 1) / kTileW, (H + kTileH - 1) / kTileH, B), block(kTileW, kTileH);
  cuda::launch(conv_kernel<TIn, TOut, Acc, CIN, COUT, D, EPI>, grid, block, 0, in.data_ptr<TIn>(), w.data_ptr<Acc>(),
               bias.data_ptr<Acc>(), out.data_ptr<TOut>(), act.defined() ? act.data_ptr<Acc>() : nullptr,
               gate.defined() ? gate.data_ptr<Acc>() : nullptr, H, W);
}

// A conv weight (out, in, 3, 3) packed as (in, 3, 3, out) in the accumulation dtype.
at::Tensor packed(const at::Tensor& w, at::ScalarType acc) { return w.permute({1, 2, 3, 0}).contiguous().to(acc); }

// Forward of layer K: from the input (h's dtype for K = 0) to a_K in the accumulation dtype, or to the
// output through the gate for K = 5.
template <typename T, typename Acc, int K>
at::Tensor forward_layer(const at::Tensor& in, at::TensorList weights, at::TensorList biases, at::Tensor out) {
  using TIn = std::conditional_t<K == 0, T, Acc>;
  const at::ScalarType acc = c10::CppTypeToScalarType<Acc>::value;
  const at::Tensor w = packed(conv_weight(K, weights[K]), acc), b = biases[K].to(acc).contiguous();
  if constexpr (K == 5) {
    const at::Tensor gate = at::cat({weights[6].flatten(), biases[6]}).to(acc).contiguous();
    conv<TIn, T, Acc, kCin[K], kCout[K], kDilation[K], kReluGate>(in, w, b, out, at::Tensor(), gate);
  } else {
    conv<TIn, Acc, Acc, kCin[K], kCout[K], kDilation[K], kRelu>(in, w, b, out, at::Tensor(), at::Tensor());
  }
  return out;
}

template <typename Acc, int K>
std::tuple<at::Tensor, at::Tensor> weight_grad(const at::Tensor& in, const at::Tensor& dz) {
  const int64_t B = in.size(0), H = in.size(2), W = in.size(3);
  const dim3 grid((W + kTileW - 1) / kTileW, (H + kGradTileH - 1) / kGradTileH, B), block(kTileW, kGradTileH);
  constexpr int cin = kCin[K], cout = kCout[K];
  at::Tensor part = at::empty({static_cast<int64_t>(grid.x) * grid.y * grid.z, cin * 9 + 1, cout}, in.options());
  cuda::launch(weight_grad_kernel<Acc, cin, cout, kDilation[K]>, grid, block, 0, in.data_ptr<Acc>(), dz.data_ptr<Acc>(),
               part.data_ptr<Acc>(), H, W);
  const at::Tensor sums = part.sum(0);
  // Weff's gradient (out, in, 3, 3), then in the layer's own layout.
  const at::Tensor dweff = sums.narrow(0, 0, cin * 9).view({cin, 3, 3, cout}).permute({3, 0, 1, 2});
  return {K < 3 ? dweff.contiguous() : dweff.flip({2, 3}).transpose(0, 1).contiguous(), sums[cin * 9]};
}

// Layer K's backward: its weight and bias gradients from dz_K, and dz_{K-1} (or dh for K = 0).
template <typename T, typename Acc, int K>
at::Tensor backward_layer(const std::vector<at::Tensor>& acts, const at::Tensor& dz, at::TensorList weights,
                          std::vector<at::Tensor>& dweights, std::vector<at::Tensor>& dbiases, at::Tensor& dh) {
  const at::ScalarType acc = c10::CppTypeToScalarType<Acc>::value, out_type = dh.scalar_type();
  auto [dw, db] = weight_grad<Acc, K>(acts[K], dz);
  dweights[K] = dw.to(out_type);
  dbiases[K] = db.to(out_type);
  // dz_{K-1} is a conv of dz_K with Weffᵀ flipped (in and out swapped), no bias, masked by a_{K-1} > 0.
  const at::Tensor wg = packed(conv_weight(K, weights[K]).transpose(0, 1).flip({2, 3}), acc);
  const at::Tensor zero = at::zeros({kCin[K]}, acts[K].options());
  if constexpr (K == 0) {
    conv<Acc, T, Acc, kCout[K], kCin[K], kDilation[K], kPlain>(dz, wg, zero, dh, at::Tensor(), at::Tensor());
    return dh;
  } else {
    at::Tensor out = at::empty_like(acts[K]);
    conv<Acc, Acc, Acc, kCout[K], kCin[K], kDilation[K], kMask>(dz, wg, zero, out, acts[K], at::Tensor());
    return out;
  }
}

void check_cuda(const at::Tensor& h, at::TensorList weights, at::TensorList biases) {
  check_args(h, weights, biases);
  TORCH_CHECK_VALUE(cuda::on_kernel_device(h), "h must be a CUDA tensor, got ", h.device());
}

at::Tensor dilated_encdec_cuda(const at::Tensor& h_in, at::TensorList weights, at::TensorList biases) {
  check_cuda(h_in, weights, biases);
  const cuda::DeviceGuard guard(h_in.device());
  const at::Tensor h = h_in.contiguous();
  const int64_t B = h.size(0), H = h.size(2), W = h.size(3);
  at::Tensor out = at::empty({B, 1, H, W}, h.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "dilated_encdec_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const auto opts = h.options().dtype(c10::CppTypeToScalarType<Acc>::value);
    at::Tensor t = forward_layer<scalar_t, Acc, 0>(h, weights, biases, at::empty({B, 6, H, W}, opts));
    t = forward_layer<scalar_t, Acc, 1>(t, weights, biases, at::empty({B, 12, H, W}, opts));
    t = forward_layer<scalar_t, Acc, 2>(t, weights, biases, at::empty({B, 24, H, W}, opts));
    t = forward_layer<scalar_t, Acc, 3>(t, weights, biases, at::empty({B, 12, H, W}, opts));
    t = forward_layer<scalar_t, Acc, 4>(t, weights, biases, at::empty({B, 6, H, W}, opts));
    forward_layer<scalar_t, Acc, 5>(t, weights, biases, out);
  });
  return out;
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> dilated_encdec_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& h_in, at::TensorList weights, at::TensorList biases) {
  check_cuda(h_in, weights, biases);
  check_grad(grad_in, h_in);
  const cuda::DeviceGuard guard(h_in.device());
  const at::Tensor h = h_in.contiguous(), grad = grad_in.contiguous();
  const int64_t B = h.size(0), H = h.size(2), W = h.size(3), hw = H * W;
  at::Tensor dh = at::empty_like(h);
  std::vector<at::Tensor> dweights(7), dbiases(7);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "dilated_encdec_backward_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const auto opts = h.options().dtype(c10::CppTypeToScalarType<Acc>::value);
    // acts[k] is layer k's input: h (in the accumulation dtype, as the weight-gradient kernel reads it),
    // then a0..a5.
    std::vector<at::Tensor> acts = {h.to(opts.dtype())};
    acts.push_back(forward_layer<scalar_t, Acc, 0>(h, weights, biases, at::empty({B, 6, H, W}, opts)));
    acts.push_back(forward_layer<scalar_t, Acc, 1>(acts.back(), weights, biases, at::empty({B, 12, H, W}, opts)));
    acts.push_back(forward_layer<scalar_t, Acc, 2>(acts.back(), weights, biases, at::empty({B, 24, H, W}, opts)));
    acts.push_back(forward_layer<scalar_t, Acc, 3>(acts.back(), weights, biases, at::empty({B, 12, H, W}, opts)));
    acts.push_back(forward_layer<scalar_t, Acc, 4>(acts.back(), weights, biases, at::empty({B, 6, H, W}, opts)));
    {  // a5 (the gate's input) with the ReLU epilogue
      const at::ScalarType acc = opts.dtype().toScalarType();
      at::Tensor a5 = at::empty({B, 3, H, W}, opts);
      conv<Acc, Acc, Acc, 6, 3, 1, kRelu>(acts.back(), packed(conv_weight(5, weights[5]), acc),
                                          biases[5].to(acc).contiguous(), a5, at::Tensor(), at::Tensor());
      acts.push_back(a5);
    }
    const at::Tensor gate = weights[6].flatten().to(opts.dtype()).contiguous();
    at::Tensor dz = at::empty({B, 3, H, W}, opts);
    const dim3 grid((hw + kThreads - 1) / kThreads, B);
    at::Tensor part = at::empty({static_cast<int64_t>(grid.x) * B, 4}, opts);
    cuda::launch(gate_backward_kernel<scalar_t, Acc>, grid, kThreads, 0, acts[6].data_ptr<Acc>(),
                 grad.data_ptr<scalar_t>(), gate.data_ptr<Acc>(), dz.data_ptr<Acc>(), part.data_ptr<Acc>(), hw);
    const at::Tensor sums = part.sum(0).to(h.scalar_type());
    dweights[6] = sums.narrow(0, 0, 3).view({1, 3, 1, 1}).contiguous();
    dbiases[6] = sums.narrow(0, 3, 1).contiguous();
    dz = backward_layer<scalar_t, Acc, 5>(acts, dz, weights, dweights, dbiases, dh);
    dz = backward_layer<scalar_t, Acc, 4>(acts, dz, weights, dweights, dbiases, dh);
    dz = backward_layer<scalar_t, Acc, 3>(acts, dz, weights, dweights, dbiases, dh);
    dz = backward_layer<scalar_t, Acc, 2>(acts, dz, weights, dweights, dbiases, dh);
    dz = backward_layer<scalar_t, Acc, 1>(acts, dz, weights, dweights, dbiases, dh);
    backward_layer<scalar_t, Acc, 0>(acts, dz, weights, dweights, dbiases, dh);
  });
  return {dh, dweights, dbiases};
}

}  // namespace

DIN_FAST_CUDA_LIBRARY_IMPL(m) {
  m.impl("_dilated_encdec_cuda", &dilated_encdec_cuda);
  m.impl("_dilated_encdec_backward_cuda", &dilated_encdec_backward_cuda);
}

}  // namespace din_fast
