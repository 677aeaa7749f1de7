// Host side of din_fast's CUDA kernels: the launch, the device guard, the registration block, and the
// tensor checks and layout queries the launchers share. Every kernel launch goes through `launch`, so
// the same launcher source runs the kernels on a GPU (nvcc) and, compiled as host C++ with
// DIN_FAST_CUDA_EMULATION, under the CPU emulation of csrc/cuda_emulation/ on CPU tensors; there the
// ops register under the test-only library din_fast_cuda_emulation (CPU key) instead of din_fast (CUDA).
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "common.h"
#include "cuda/cuda_utils.cuh"

#ifdef DIN_FAST_CUDA_EMULATION
#include <tuple>
#define DIN_FAST_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(din_fast_cuda_emulation, CPU, m)
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#define DIN_FAST_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(din_fast, CUDA, m)
#endif

namespace din_fast {
namespace cuda {

#ifdef DIN_FAST_CUDA_EMULATION
// Emulated kernels take CPU tensors; there is no device to select.
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};
inline bool on_kernel_device(const at::Tensor& t) { return t.is_cpu(); }
#else
using DeviceGuard = c10::cuda::CUDAGuard;
inline bool on_kernel_device(const at::Tensor& t) { return t.is_cuda(); }
#endif

// The dynamic shared memory a launch may request without opting in per kernel
// (cudaFuncSetAttribute(..., cudaFuncAttributeMaxDynamicSharedMemorySize, ...)), on every GPU din_fast
// builds for. The launchers keep within it: the channels_last reductions, whose shared memory grows
// with C, take fewer inputs per launch or reduce an NCHW copy instead.
constexpr size_t kMaxDynamicShared = 48 * 1024;

// kernel<<<grid, block, shared_bytes, current stream>>>(args...), then the launch-error check. A request
// above kMaxDynamicShared is refused here, under the emulation too (a GPU would fail the launch).
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, Args&&... args) {
  TORCH_CHECK(shared_bytes <= kMaxDynamicShared, "din_fast: a CUDA launch requests ", shared_bytes,
              " bytes of dynamic shared memory, above the ", kMaxDynamicShared, " a launch may use");
#ifdef DIN_FAST_CUDA_EMULATION
  // Each emulated thread calls the kernel with its own copies of the parameters, as on a GPU.
  const std::tuple<Params...> params(std::forward<Args>(args)...);
  cuda_emulation::launch(grid, block, shared_bytes, [&] { std::apply(kernel, params); });
#else
  kernel<<<grid, block, shared_bytes, c10::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

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
  TORCH_CHECK_VALUE(on_kernel_device(t), name, " must be a CUDA tensor, got ", t.device());
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
