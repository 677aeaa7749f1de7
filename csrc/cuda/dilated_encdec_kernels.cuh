// Kernels of `dilated_encdec` (launched by dilated_encdec.cu, whose header comment has the design; maths
// and shapes in din_fast/ops/dilated_encdec.py). Device code only (cuda_utils.cuh says why).
#pragma once

#include <cstdint>

#include "cuda/cuda_utils.cuh"

namespace din_fast {
namespace {

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
    for (int c = 0; c < COUT; ++c) v += gate[c] * (acc[c] < Acc(0) ? Acc(0) : acc[c]);
    out[b * hw + p] = static_cast<TOut>(v);
  } else {
#pragma unroll
    for (int co = 0; co < COUT; ++co) {
      const int64_t i = (b * COUT + co) * hw + p;
      Acc v = acc[co];
      if constexpr (EPI == kRelu) v = v < Acc(0) ? Acc(0) : v;
      if constexpr (EPI == kMask) v = act[i] <= Acc(0) ? Acc(0) : v;
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
      dz[(b * 3 + c) * hw + p] = a <= Acc(0) ? Acc(0) : g * gate[c];
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

}  // namespace
}  // namespace din_fast
