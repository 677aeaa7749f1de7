// Device-side helpers shared by din_fast's CUDA kernels: 16-byte vector access, warp/block sums, the
// launch's dynamic shared memory, and the layout description of a dense (B, C, H, W) feature map.
// Device code only (no ATen or CUDA runtime calls), so the kernels that include it also compile as host
// C++ under the CPU emulation of the CUDA execution model (DIN_FAST_CUDA_EMULATION,
// csrc/cuda_emulation/runtime.h). The host side of a launch is csrc/cuda/launch.cuh.
//
// A dense NCHW or channels_last map is addressed as b·stride_b + c·stride_c + p·stride_p with the
// flattened spatial index p = h·W + w (NCHW: stride_p = 1; channels_last: stride_c = 1).
#pragma once

#ifdef DIN_FAST_CUDA_EMULATION
#include "cuda_emulation/runtime.h"
#endif

#include <cstdint>

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

// The launch's dynamic (extern __shared__) shared memory as T, 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* dynamic_shared_memory() {
#ifdef DIN_FAST_CUDA_EMULATION
  return reinterpret_cast<T*>(cuda_emulation::dynamic_shared_memory());
#else
  extern __shared__ __align__(16) unsigned char dynamic_smem[];
  return reinterpret_cast<T*>(dynamic_smem);
#endif
}

struct Layout {
  int64_t B, C, HW;
  bool nhwc;
};

}  // namespace cuda
}  // namespace din_fast
