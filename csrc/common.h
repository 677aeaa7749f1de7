// Shared helpers of din_fast's C++ kernels: argument checks that name the argument (raising
// ValueError, like the Python checks in din_fast/ops/_checks.py) and the memory-format rule of the
// op contract (din_fast/ops/_library.py): channels_last iff 4-D, channels_last-contiguous and not
// also contiguous.
#pragma once

#include <ATen/ATen.h>

#include <string>

// Kernels marked DIN_FAST_MULTIVERSION are compiled once per x86-64 ISA level (AVX-512, AVX2+FMA,
// baseline) and the best one for the running CPU is picked at load time (GCC/Clang function
// multiversioning), so `#pragma omp simd` loops get wide vectors without tying the .so to one CPU.
// Put the loops in always-inline templates called from the marked non-template functions.
//
// DIN_FAST_MULTIVERSION_256 stops at AVX2 (256-bit vectors), for streaming loops (a few loads and one
// store per element, no arithmetic to speak of): with 512-bit accesses, an output placed 64-128 bytes
// after an input modulo 4096 (what consecutive allocations often give) stalls the loads behind the
// stores (4K aliasing; benchmarks/NOTES.md), while the 256-bit loop runs at the same speed at
// every offset.
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define DIN_FAST_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define DIN_FAST_MULTIVERSION_256 __attribute__((target_clones("arch=x86-64-v3", "default")))
#define DIN_FAST_INLINE inline __attribute__((always_inline))
#else
#define DIN_FAST_MULTIVERSION
#define DIN_FAST_MULTIVERSION_256
#define DIN_FAST_INLINE inline
#endif

namespace din_fast {

inline void check_feature(const at::Tensor& t, const char* name, int64_t channels = -1) {
  TORCH_CHECK_VALUE(t.is_floating_point(), name, " must be a floating tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 4, name, " must have shape (B, C, H, W), got ", t.sizes());
  TORCH_CHECK_VALUE(t.numel() > 0, name, " must not be empty, got shape ", t.sizes());
  TORCH_CHECK_VALUE(channels < 0 || t.size(1) == channels, name, " must have ", channels,
                    " channels, got shape ", t.sizes());
}

// t has ref's device and dtype and exactly `shape`.
inline void check_same(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name,
                       at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name, " is on ",
                    ref.device());
  TORCH_CHECK_VALUE(t.scalar_type() == ref.scalar_type(), name, " has dtype ", t.scalar_type(), " but ",
                    ref_name, " has ", ref.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
}

// The weights of a squeeze-excitation MLP C→R→C on ref (B, C, H, W): w1 (R, C, 1, 1) with R > 0, b1 (R),
// w2 (C, R, 1, 1), b2 (C), with ref's device and dtype (the twin of din_fast/ops/_checks.py's
// channel_mlp). Returns R.
inline int64_t check_channel_mlp(const at::Tensor& ref, const char* ref_name, const at::Tensor& w1, const char* w1_name,
                                 const at::Tensor& b1, const char* b1_name, const at::Tensor& w2, const char* w2_name,
                                 const at::Tensor& b2, const char* b2_name) {
  const int64_t c = ref.size(1);
  TORCH_CHECK_VALUE(w1.dim() == 4 && w1.size(0) > 0, w1_name, " must have shape (R, ", c,
                    ", 1, 1) with R > 0, got ", w1.sizes());
  const int64_t r = w1.size(0);
  check_same(w1, w1_name, ref, ref_name, {r, c, 1, 1});
  check_same(b1, b1_name, ref, ref_name, {r});
  check_same(w2, w2_name, ref, ref_name, {c, r, 1, 1});
  check_same(b2, b2_name, ref, ref_name, {c});
  return r;
}

inline at::MemoryFormat memory_format_of(const at::Tensor& t) {
  if (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

}  // namespace din_fast
