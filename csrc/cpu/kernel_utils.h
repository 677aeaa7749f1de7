// Helpers shared by the CPU kernels: the two memory layouts they run on, and how per-channel
// reductions are split into work items.
//
// Every feature-map kernel runs on one of two dense layouts, chosen from its first input: NCHW
// (contiguous) or NHWC (channels_last). Other inputs are brought to the same layout; any other
// strides are made contiguous first (the op contract: non-contiguous inputs are copied, not rejected).
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"

namespace din_fast {

// An uninitialised (B, C, H, W) tensor like `t` in memory format `fmt`.
inline at::Tensor empty_in(const at::Tensor& t, at::MemoryFormat fmt) {
  return at::empty(t.sizes(), t.options().memory_format(fmt));
}

// The CPU kernels support float32 and float64 (the Python router sends other dtypes elsewhere; a direct
// call gets this error instead of AT_DISPATCH's "not implemented").
inline void check_cpu_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                    " must be float32 or float64 for the C++ CPU kernels, got ", t.scalar_type());
}

// Number of independent partial sums kept per reduction; 16 float lanes let the compiler put one
// reduction into SIMD registers without reassociating floating-point adds (no -ffast-math needed).
constexpr int kLanes = 16;

// Work split of a per-(batch, channel) reduction over H*W on NHWC data: each batch's H*W rows are cut
// into `blocks` blocks of `rows` rows; each block gets its own partial sums (so there is no sharing
// between threads), and the partials are added in block order afterwards, so the result does not
// depend on the thread count.
struct RowBlocks {
  int64_t rows;
  int64_t blocks;
  RowBlocks(int64_t hw, int64_t channels) {
    rows = std::max<int64_t>(1, 16384 / std::max<int64_t>(channels, 1));
    blocks = (hw + rows - 1) / rows;
  }
};

// Grain (items per task) so that a task touches about 32K elements: small planes are batched,
// large ones split one per task.
inline int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(elements_per_item, 1));
}

}  // namespace din_fast
