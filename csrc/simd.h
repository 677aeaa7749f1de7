// Portable SIMD vectors for the CPU kernels: GCC vector extensions of VB bytes (64 for AVX-512, 32 for
// AVX2, 16 for the baseline). A kernel template takes VB as a parameter and is instantiated inside
// functions compiled for each instruction set (see vec_math.h's DIN_FAST_TARGET_* and cpu_isa()), so
// one source serves every ISA with the vector width the registers have.
#pragma once
#pragma GCC diagnostic ignored "-Wpsabi"  // vector types only cross always-inlined calls

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace din_fast {

template <typename T, int VB>
struct Simd {
  typedef T V __attribute__((vector_size(VB)));
  static constexpr int L = VB / sizeof(T);
  static inline __attribute__((always_inline)) V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static inline __attribute__((always_inline)) void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
  static inline __attribute__((always_inline)) V splat(T s) { return V{} + s; }
  // v < 0 ? 0 : v, not v > 0 ? v : 0: NaN lanes stay NaN, as in torch.relu (one vmaxps/vmaxpd with 0 as
  // its first operand, which returns the second when either is NaN).
  static inline __attribute__((always_inline)) V relu(V v) { return v < T(0) ? V{} : v; }
  // Lane-wise square root (GCC turns the unrolled loop into one vsqrtps/vsqrtpd with -fno-math-errno).
  static inline __attribute__((always_inline)) V sqrt(V v) {
    V r;
#pragma GCC unroll 16
    for (int i = 0; i < L; ++i) r[i] = std::sqrt(v[i]);
    return r;
  }
  // Writes the first min(L, n) lanes (the last vector of an image row).
  static inline __attribute__((always_inline)) void store_partial(T* p, V v, int64_t n) {
    std::memcpy(p, &v, sizeof(T) * std::min<int64_t>(L, n));
  }
};

}  // namespace din_fast
