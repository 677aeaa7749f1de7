// Helpers shared by din_fast's CUDA kernels: 16-byte vector access, warp/block sums, and the layout
// description of a dense (B, C, H, W) feature map.
//
// A dense NCHW or channels_last map is addressed as b·stride_b + c·stride_c + p·stride_p with the
// flattened spatial index p = h·W + w (NCHW: stride_p = 1; channels_last: stride_c = 1).
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"

namespace din_fast {
namespace cuda {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

// VEC elements of T in one 16-byte load/store.
template <typename T>
struct Vec {
  static constexpr int N = 16 / sizeof(T);
  alignas(16) T v[N];
};

template <typename T>
__device__ __forceinline__ Vec<T> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T>*>(p);
}

template <typename T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T>& v) {
  *reinterpret_cast<Vec<T>*>(p) = v;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (kThreads threads); the result is valid in thread 0. `smem` holds kThreads/32 values.
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* smem) {
  v = warp_sum(v);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / kWarp ? smem[threadIdx.x] : A(0);
  if (warp == 0) v = warp_sum(v);
  return v;
}

struct Layout {
  int64_t B, C, HW;
  bool nhwc;
};

inline Layout layout_of(const at::Tensor& t) {
  return {t.size(0), t.size(1), t.size(2) * t.size(3), memory_format_of(t) == at::MemoryFormat::ChannelsLast};
}

// True when every pointer is 16-byte aligned and the contiguous axis splits into whole vectors, so
// vector accesses never straddle a (b, c) plane (NCHW) or a pixel's channel row (NHWC).
template <typename T>
inline bool vectorisable(const Layout& l, std::initializer_list<const void*> ptrs) {
  const int64_t inner = l.nhwc ? l.C : l.HW;
  if (inner % Vec<T>::N != 0) return false;
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

inline void check_cuda_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble ||
                        t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16,
                    name, " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
}

// Splits of H·W for a reduction so that the grid has at least ~4 blocks per SM on an H100.
inline int64_t reduction_splits(int64_t items, int64_t hw, int64_t min_per_split) {
  const int64_t target = 4 * 132;
  int64_t splits = (target + items - 1) / items;
  const int64_t max_splits = (hw + min_per_split - 1) / min_per_split;
  return std::max<int64_t>(1, std::min(splits, max_splits));
}

}  // namespace cuda
}  // namespace din_fast
