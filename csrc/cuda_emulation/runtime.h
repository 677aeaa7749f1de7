// A small emulation of the CUDA execution model on the CPU, so that the kernels of csrc/cuda/ run in
// tests on machines without a GPU (tests/cuda_emulation.py builds them with it; never part of din_fast._C).
//
// The kernel sources are compiled unchanged as host C++ with DIN_FAST_CUDA_EMULATION defined:
// csrc/cuda/cuda_utils.cuh includes this header, which defines the CUDA keywords away (__shared__
// becomes `static`) and supplies the built-ins the kernels use. A launch (launch() below, reached
// through din_fast::cuda::launch in csrc/cuda/launch.cuh) runs the grid's blocks one after another,
// in blockIdx order (x fastest); the threads of a block are fibers (one stack each) on the calling
// thread, switched cooperatively:
//   threadIdx / blockIdx / blockDim / gridDim   set for the running fiber
//   __shared__ (static) arrays                   one instance, reused by each block in turn, so a block
//                                                sees the previous block's values where it forgot to write
//   extern shared memory (dynamic_shared_memory) `shared_bytes` per block, filled with 0xFF bytes
//                                                (NaN for float/double) before each block
//   __syncthreads()                              a real barrier: the fiber waits until every thread of the
//                                                block that has not returned is at a barrier
//   __shfl_down_sync(mask, v, d)                 lanes = consecutive linear thread ids in 32s; every lane
//                                                stores v, waits for its warp, reads lane + d (its own v
//                                                past the warp's end), waits again; a lane of `mask`
//                                                that has returned is an error
//   atomicAdd                                    a plain read-modify-write (fibers never interleave inside it)
// Threads run in order of their linear id in even-numbered blocks and in reverse order in odd ones, up
// to their next barrier, so a missing barrier is seen from both sides of a dependency. A barrier that
// can never complete (a __syncthreads not reached by all threads while others wait in a warp
// operation) raises an error instead of hanging.
//
// What it cannot see: data races beyond the two orders above (no race detection: use compute-sanitizer
// --tool racecheck on a GPU), the memory model (every write is visible at once; no caches, no
// __threadfence effects), warp divergence and lock-step execution, occupancy, registers and the
// shared-memory limit per block (ptxas -v reports those), launch bounds, grid limits, and rounding of
// GPU arithmetic (no FMA contraction as nvcc does by default; device sqrt/exp are the host's).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace din_fast {
namespace cuda_emulation {

constexpr unsigned kWarpSize = 32;

// Runs body() as every thread of every block of the grid; returns when all have finished. Throws
// std::runtime_error for a barrier that cannot complete or an exception thrown by a thread.
void launch(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body);

// The running block's extern shared memory.
unsigned char* dynamic_shared_memory();

// Waits for every thread of the block that has not returned (__syncthreads).
void block_barrier();

// Waits for the lanes of `mask` in the running thread's warp; stores `value` (≤ 8 bytes) in this lane's
// slot before, and returns the warp's slot array (32 slots of 8 bytes) valid until the next warp_exchange.
const uint64_t* warp_exchange(unsigned mask, const void* value, size_t bytes);

// Waits until the warp has read the slots (the second half of a shuffle).
void warp_release(unsigned mask);

// Linear id of the running thread within its warp.
unsigned lane();

}  // namespace cuda_emulation
}  // namespace din_fast

inline void __syncthreads() { din_fast::cuda_emulation::block_barrier(); }

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move values of up to 8 bytes");
  namespace emu = din_fast::cuda_emulation;
  const uint64_t* slots = emu::warp_exchange(mask, &value, sizeof(T));
  const unsigned src = emu::lane() + delta;
  T out = value;
  if (src < emu::kWarpSize) std::memcpy(&out, &slots[src], sizeof(T));
  emu::warp_release(mask);
  return out;
}

template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

// CUDA's min/max overloads for the device code (std::min needs equal argument types, as here).
template <typename T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
T max(T a, T b) {
  return a < b ? b : a;
}
