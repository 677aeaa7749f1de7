// C++/CUDA kernels of `dilated_encdec` (DeFiAN's DiEnDec + 1x1 gate; din_fast/ops/dilated_encdec.py has
// the maths and shapes).
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
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>
#include <type_traits>
#include <vector>

#include "common.h"
#include "dilated_encdec.h"

namespace din_fast {
namespace {

using namespace encdec;

constexpr int kTileW = 32, kTileH = 8, kThreads = kTileW * kTileH;  // forward / input-gradient tiles
constexpr int kGradTileH = 4, kGradThreads = kTileW * kGradTileH;   // weight-gradient tiles
constexpr int kChunk = 4;  // input channels staged in shared memory at a time (bounds it for float64)

enum Epilogue { kRelu, kReluGate, kMask, kPlain };

// out = epilogue(bias + Σ_{ci,ky,kx} w[ci][ky][kx][co] · in[b][ci][y + (ky−1)D][x + (kx−1)D]).
// in (B, CIN, H, W); out (B, COUT, H, W), or (B, 1, H, W) for kReluGate with gate = [w0, w1, w2, bias];
// act (B, COUT, H, W) is the mask of kMask.
template <typename TIn, typename TOut, typename Acc, int CIN, int COUT, int D, int EPI>
__global__ void __launch_bounds__(kThreads)
    conv_kernel(const TIn* __restrict__ in, const Acc* __restrict__ w, const Acc* __restrict__ bias,
                TOut* __restrict__ out, const Acc* __restrict__ act, const Acc* __restrict__ gate, int H, int W) {
  constexpr int TH = kTileH + 2 * D, TW = kTileW + 2 * D;
  __shared__ Acc tile[kChunk][TH][TW];
  __shared__ Acc ws[CIN * 9 * COUT];
  const int64_t b = blockIdx.z, hw = static_cast<int64_t>(H) * W;
  const int x0 = blockIdx.x * kTileW, y0 = blockIdx.y * kTileH;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTileW + tx;
  for (int i = tid; i < CIN * 9 * COUT; i += kThreads) ws[i] = w[i];
  Acc acc[COUT];
#pragma unroll
  for (int co = 0; co < COUT; ++co) acc[co] = bias[co];
  for (int c0 = 0; c0 < CIN; c0 += kChunk) {
    __syncthreads();  // the previous chunk has been consumed
    for (int i = tid; i < kChunk * TH * TW; i += kThreads) {
      const int c = i / (TH * TW), r = (i / TW) % TH, col = i % TW;
      const int y = y0 - D + r, x = x0 - D + col;
      Acc v = Acc(0);
      if (c0 + c < CIN && y >= 0 && y < H && x >= 0 && x < W) {
        v = static_cast<Acc>(in[(b * CIN + c0 + c) * hw + static_cast<int64_t>(y) * W + x]);
      }
      tile[c][r][col] = v;
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kChunk; ++c) {
      if (c0 + c < CIN) {
#pragma unroll
        for (int t = 0; t < 9; ++t) {
          const Acc v = tile[c][ty + (t / 3) * D][tx + (t % 3) * D];
          const Acc* wk = ws + ((c0 + c) * 9 + t) * COUT;
#pragma unroll
          for (int co = 0; co < COUT; ++co) acc[co] += v * wk[co];
        }
      }
    }
  }
  const int y = y0 + ty, x = x0 + tx;
  if (y >= H || x >= W) return;
  const int64_t p = static_cast<int64_t>(y) * W + x;
  if constexpr (EPI == kReluGate) {
    Acc v = gate[3];
#pragma unroll
    for (int c = 0; c < COUT; ++c) v += gate[c] * (acc[c] > Acc(0) ? acc[c] : Acc(0));
    out[b * hw + p] = static_cast<TOut>(v);
  } else {
#pragma unroll
    for (int co = 0; co < COUT; ++co) {
      const int64_t i = (b * COUT + co) * hw + p;
      Acc v = acc[co];
      if constexpr (EPI == kRelu) v = v > Acc(0) ? v : Acc(0);
      if constexpr (EPI == kMask) v = act[i] > Acc(0) ? v : Acc(0);
      out[i] = static_cast<TOut>(v);
    }
  }
}

// Per-block partial sums of the weight and bias gradients: part[block][(ci·3 + ky)·3 + kx][co] =
// Σ_{tile} dz[b][co][p] · in[b][ci][y + (ky−1)D][x + (kx−1)D], part[block][CIN·9][co] = Σ_{tile} dz[b][co][p].
template <typename Acc, int CIN, int COUT, int D>
__global__ void __launch_bounds__(kGradThreads)
    weight_grad_kernel(const Acc* __restrict__ in, const Acc* __restrict__ dz, Acc* __restrict__ part, int H, int W) {
  constexpr int TH = kGradTileH + 2 * D, TW = kTileW + 2 * D;
  __shared__ Acc tile[kChunk][TH][TW];
  __shared__ Acc dzs[COUT][kGradTileH][kTileW];
  const int64_t b = blockIdx.z, hw = static_cast<int64_t>(H) * W;
  const int x0 = blockIdx.x * kTileW, y0 = blockIdx.y * kGradTileH;
  const int tid = threadIdx.y * kTileW + threadIdx.x;
  const int64_t block = (b * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  Acc* out = part + block * (CIN * 9 + 1) * COUT;
  for (int i = tid; i < COUT * kGradTileH * kTileW; i += kGradThreads) {
    const int co = i / (kGradTileH * kTileW), r = (i / kTileW) % kGradTileH, col = i % kTileW;
    const int y = y0 + r, x = x0 + col;
    dzs[co][r][col] = y < H && x < W ? dz[(b * COUT + co) * hw + static_cast<int64_t>(y) * W + x] : Acc(0);
  }
  __syncthreads();
  for (int co = tid; co < COUT; co += kGradThreads) {
    Acc s = Acc(0);
    for (int r = 0; r < kGradTileH; ++r)
      for (int col = 0; col < kTileW; ++col) s += dzs[co][r][col];
    out[CIN * 9 * COUT + co] = s;
  }
  for (int c0 = 0; c0 < CIN; c0 += kChunk) {
    __syncthreads();
    for (int i = tid; i < kChunk * TH * TW; i += kGradThreads) {
      const int c = i / (TH * TW), r = (i / TW) % TH, col = i % TW;
      const int y = y0 - D + r, x = x0 - D + col;
      tile[c][r][col] = c0 + c < CIN && y >= 0 && y < H && x >= 0 && x < W
                            ? in[(b * CIN + c0 + c) * hw + static_cast<int64_t>(y) * W + x]
                            : Acc(0);
    }
    __syncthreads();
    // Work items (c, tap, co) of this chunk, each a dot product over the tile's pixels.
    for (int item = tid; item < kChunk * 9 * COUT; item += kGradThreads) {
      const int c = item / (9 * COUT), t = (item / COUT) % 9, co = item % COUT;
      if (c0 + c >= CIN) continue;
      const int dy = (t / 3) * D, dx = (t % 3) * D;
      Acc s = Acc(0);
      for (int r = 0; r < kGradTileH; ++r)
#pragma unroll 8
        for (int col = 0; col < kTileW; ++col) s += tile[c][r + dy][col + dx] * dzs[co][r][col];
      out[((c0 + c) * 9 + t) * COUT + co] = s;
    }
  }
}

// dz5[b][c] = gate[c] · grad[b] · [a5[b][c] > 0]; per-block partial sums part[block] = (Σ grad · a5[c] for
// c < 3, Σ grad).
template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads)
    gate_backward_kernel(const Acc* __restrict__ a5, const T* __restrict__ grad, const Acc* __restrict__ gate,
                         Acc* __restrict__ dz, Acc* __restrict__ part, int64_t hw) {
  __shared__ Acc red[4][kThreads];
  const int64_t b = blockIdx.y, p = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  Acc sums[4] = {Acc(0), Acc(0), Acc(0), Acc(0)};
  if (p < hw) {
    const Acc g = static_cast<Acc>(grad[b * hw + p]);
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      const Acc a = a5[(b * 3 + c) * hw + p];
      dz[(b * 3 + c) * hw + p] = a > Acc(0) ? g * gate[c] : Acc(0);
      sums[c] = g * a;
    }
    sums[3] = g;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) red[j][threadIdx.x] = sums[j];
  for (int s = kThreads / 2; s > 0; s /= 2) {
    __syncthreads();
    if (threadIdx.x < s) {
#pragma unroll
      for (int j = 0; j < 4; ++j) red[j][threadIdx.x] += red[j][threadIdx.x + s];
    }
  }
  __syncthreads();  // thread 0 wrote the four totals
  if (threadIdx.x < 4) part[(b * gridDim.x + blockIdx.x) * 4 + threadIdx.x] = red[threadIdx.x][0];
}

// ----------------------------------------------------------------------------------------------------
// Launchers.

template <typename TIn, typename TOut, typename Acc, int CIN, int COUT, int D, int EPI>
void conv(const at::Tensor& in, const at::Tensor& w, const at::Tensor& bias, at::Tensor& out, const at::Tensor& act,
          const at::Tensor& gate) {
  const int64_t B = in.size(0), H = in.size(2), W = in.size(3);
  TORCH_CHECK(B <= 65535, "dilated_encdec (cuda): batch ", B, " exceeds the grid limit 65535");
  const dim3 grid((W + kTileW - 1) / kTileW, (H + kTileH - 1) / kTileH, B), block(kTileW, kTileH);
  conv_kernel<TIn, TOut, Acc, CIN, COUT, D, EPI><<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(
      in.data_ptr<TIn>(), w.data_ptr<Acc>(), bias.data_ptr<Acc>(), out.data_ptr<TOut>(),
      act.defined() ? act.data_ptr<Acc>() : nullptr, gate.defined() ? gate.data_ptr<Acc>() : nullptr, H, W);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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
  weight_grad_kernel<Acc, cin, cout, kDilation[K]><<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(
      in.data_ptr<Acc>(), dz.data_ptr<Acc>(), part.data_ptr<Acc>(), H, W);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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
  TORCH_CHECK_VALUE(h.is_cuda(), "h must be a CUDA tensor, got ", h.device());
}

at::Tensor dilated_encdec_cuda(const at::Tensor& h_in, at::TensorList weights, at::TensorList biases) {
  check_cuda(h_in, weights, biases);
  const c10::cuda::CUDAGuard guard(h_in.device());
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
  const c10::cuda::CUDAGuard guard(h_in.device());
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
    gate_backward_kernel<scalar_t, Acc><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        acts[6].data_ptr<Acc>(), grad.data_ptr<scalar_t>(), gate.data_ptr<Acc>(), dz.data_ptr<Acc>(),
        part.data_ptr<Acc>(), hw);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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

TORCH_LIBRARY_IMPL(din_fast, CUDA, m) {
  m.impl("_dilated_encdec_cuda", &dilated_encdec_cuda);
  m.impl("_dilated_encdec_backward_cuda", &dilated_encdec_backward_cuda);
}

}  // namespace din_fast
