// Kernels of `mshf` (launched by mshf.cu, whose header comment has the design; maths in
// din_fast/ops/mshf.py). Device code only (cuda_utils.cuh says why).
#pragma once

#include <ATen/OpMathType.h>

#include <cstdint>

#include "cuda/cuda_utils.cuh"

namespace din_fast {
namespace {

constexpr int kTile = 16;                // output tile edge (kTile² threads per block)
constexpr int kHalo = 3;                 // the largest dilation
constexpr int kSpan = kTile + 2 * kHalo; // staged tile edge

// Stage the kSpan² window of `plane` whose top-left is (h0 − kHalo, w0 − kHalo), zero outside the image.
template <typename scalar_t, typename acc_t>
__device__ void stage(const scalar_t* plane, int H, int W, int h0, int w0, acc_t (*tile)[kSpan]) {
  for (int i = threadIdx.y * kTile + threadIdx.x; i < kSpan * kSpan; i += kTile * kTile) {
    const int r = i / kSpan, c = i % kSpan, h = h0 - kHalo + r, w = w0 - kHalo + c;
    tile[r][c] = (h >= 0 && h < H && w >= 0 && w < W) ? static_cast<acc_t>(plane[h * W + w]) : acc_t(0);
  }
}

// g of scale s (dilation s + 1) at the thread's pixel; k points at weight[s, 0, c] (kinds are C·9 apart).
template <typename scalar_t, typename acc_t>
__device__ void hessian(const acc_t (*tile)[kSpan], int s, const scalar_t* k, const scalar_t* b, int64_t kind_stride,
                        int64_t bias_stride, acc_t& gxx, acc_t& gyy, acc_t& gxy) {
  const int d = s + 1, y = threadIdx.y + kHalo, x = threadIdx.x + kHalo;
  gxx = static_cast<acc_t>(b[0]);
  gyy = static_cast<acc_t>(b[bias_stride]);
  gxy = static_cast<acc_t>(b[2 * bias_stride]);
#pragma unroll
  for (int t = 0; t < 9; ++t) {
    const acc_t tap = tile[y + (t / 3 - 1) * d][x + (t % 3 - 1) * d];
    gxx += static_cast<acc_t>(k[t]) * tap;
    gyy += static_cast<acc_t>(k[kind_stride + t]) * tap;
    gxy += static_cast<acc_t>(k[2 * kind_stride + t]) * tap;
  }
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight,
                               const scalar_t* __restrict__ bias, scalar_t* __restrict__ out, int C, int H, int W) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t tile[kSpan][kSpan];
  const int b = blockIdx.z, h0 = blockIdx.y * kTile, w0 = blockIdx.x * kTile;
  const int h = h0 + threadIdx.y, w = w0 + threadIdx.x;
  const int64_t plane = static_cast<int64_t>(H) * W;
  acc_t lam[3] = {0, 0, 0};
  for (int c = 0; c < C; ++c) {
    stage(x + (static_cast<int64_t>(b) * C + c) * plane, H, W, h0, w0, tile);
    __syncthreads();
#pragma unroll
    for (int s = 0; s < 3; ++s) {
      acc_t gxx, gyy, gxy;
      hessian(tile, s, weight + (s * 3 * C + c) * 9, bias + s * 3 * C + c, int64_t(C) * 9, C, gxx, gyy, gxy);
      const acc_t diff = gxx - gyy;
      lam[s] += ((gxx + gyy) + sqrt(diff * diff + acc_t(4) * (gxy * gxy))) * acc_t(0.5);
    }
    __syncthreads();
  }
  if (h < H && w < W) {
#pragma unroll
    for (int s = 0; s < 3; ++s) out[(static_cast<int64_t>(b) * 3 + s) * plane + h * W + w] = lam[s] / acc_t(C);
  }
}

// e (B, C, 9, H, W) in acc_t, ordered [scale][kind]; partial (blocks, C, 90): the block's sums of 9 dbias
// then 81 dweight terms [scale][kind][tap] (warp shuffles, then the 8 warps through shared memory).
template <typename scalar_t>
__global__ void eigen_grad_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                                  const scalar_t* __restrict__ weight, const scalar_t* __restrict__ bias,
                                  at::opmath_type<scalar_t>* __restrict__ e,
                                  at::opmath_type<scalar_t>* __restrict__ partial, int C, int H, int W) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kWarps = kTile * kTile / 32;
  __shared__ acc_t tile[kSpan][kSpan];
  __shared__ acc_t warp_sums[kWarps][90];
  const int b = blockIdx.z, h0 = blockIdx.y * kTile, w0 = blockIdx.x * kTile;
  const int h = h0 + threadIdx.y, w = w0 + threadIdx.x;
  const bool inside = h < H && w < W;
  const int64_t plane = static_cast<int64_t>(H) * W;
  const int thread = threadIdx.y * kTile + threadIdx.x, warp = thread / 32, lane = thread % 32;
  const int64_t block = (static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  for (int c = 0; c < C; ++c) {
    stage(x + (static_cast<int64_t>(b) * C + c) * plane, H, W, h0, w0, tile);
    __syncthreads();
    for (int s = 0; s < 3; ++s) {
      acc_t gxx, gyy, gxy;
      hessian(tile, s, weight + (s * 3 * C + c) * 9, bias + s * 3 * C + c, int64_t(C) * 9, C, gxx, gyy, gxy);
      acc_t ev[3] = {0, 0, 0};
      if (inside) {
        const acc_t diff = gxx - gyy, root = sqrt(diff * diff + acc_t(4) * (gxy * gxy));
        const acc_t half = static_cast<acc_t>(grad[(static_cast<int64_t>(b) * 3 + s) * plane + h * W + w]) *
                           acc_t(0.5) / acc_t(C);
        const acc_t q = half / root;  // root = 0: inf or NaN, as autograd's sqrt backward
        ev[0] = half + q * diff;
        ev[1] = half - q * diff;
        ev[2] = acc_t(4) * q * gxy;
        acc_t* ep = e + ((static_cast<int64_t>(b) * C + c) * 9 + s * 3) * plane + h * W + w;
        ep[0] = ev[0];
        ep[plane] = ev[1];
        ep[2 * plane] = ev[2];
      }
      const int d = s + 1, y = threadIdx.y + kHalo, xx = threadIdx.x + kHalo;
      for (int j = 0; j < 3; ++j) {
        const acc_t tot = cuda::warp_sum(ev[j]);
        if (lane == 0) warp_sums[warp][s * 3 + j] = tot;
#pragma unroll
        for (int t = 0; t < 9; ++t) {
          const acc_t part = cuda::warp_sum(ev[j] * tile[y + (t / 3 - 1) * d][xx + (t % 3 - 1) * d]);
          if (lane == 0) warp_sums[warp][9 + (s * 3 + j) * 9 + t] = part;
        }
      }
    }
    __syncthreads();
    if (thread < 90) {
      acc_t tot = 0;
      for (int i = 0; i < kWarps; ++i) tot += warp_sums[i][thread];
      partial[(block * C + c) * 90 + thread] = tot;
    }
  }
}

// dx(h, w) = Σ_{s,j,t} weight[s, j, c, t] · e_sj(h − (t/3 − 1)d, w − (t%3 − 1)d).
template <typename scalar_t>
__global__ void input_grad_kernel(const at::opmath_type<scalar_t>* __restrict__ e, const scalar_t* __restrict__ weight,
                                  scalar_t* __restrict__ dx, int C, int H, int W) {
  using acc_t = at::opmath_type<scalar_t>;
  const int bc = blockIdx.z, c = bc % C, h = blockIdx.y * kTile + threadIdx.y, w = blockIdx.x * kTile + threadIdx.x;
  if (h >= H || w >= W) return;
  const int64_t plane = static_cast<int64_t>(H) * W;
  acc_t acc = 0;
  for (int s = 0; s < 3; ++s) {
    const int d = s + 1;
    for (int j = 0; j < 3; ++j) {
      const acc_t* ep = e + (static_cast<int64_t>(bc) * 9 + s * 3 + j) * plane;
      const scalar_t* k = weight + ((s * 3 + j) * C + c) * 9;
#pragma unroll
      for (int t = 0; t < 9; ++t) {
        const int hh = h - (t / 3 - 1) * d, ww = w - (t % 3 - 1) * d;
        if (hh >= 0 && hh < H && ww >= 0 && ww < W) acc += static_cast<acc_t>(k[t]) * ep[hh * W + ww];
      }
    }
  }
  dx[static_cast<int64_t>(bc) * plane + h * W + w] = acc;
}

}  // namespace
}  // namespace din_fast
