// Small numeric helpers shared by din_fast's CPU kernels, written so that GCC vectorises the loops that
// call them (no libm calls, no branches).
#pragma once

#include <cmath>
#include <cstdint>
#include <bit>

namespace din_fast {

// exp(x) for x <= 0 (softmax numerators). float: Cephes' expf (range reduction by ln 2, degree-5
// polynomial, 2^n built in the exponent bits), relative error about 2 ulp; inputs below -87.3 give
// exp(-87.3) ~ 1e-38 instead of a denormal or 0, negligible next to the softmax's maximum term 1.
// double: std::exp (the float64 path is the accuracy path, not the speed path).
inline __attribute__((always_inline)) float exp_nonpositive(float x) {
  x = x < -87.3f ? -87.3f : x;
  float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

inline double exp_nonpositive(double x) { return std::exp(x); }

}  // namespace din_fast

namespace din_fast {

// Instruction sets that float32 hot loops are compiled for (the extension itself is built for the
// baseline x86-64): a kernel defines one function per set with these attributes and calls
// the best one the CPU supports, chosen once.
#define DIN_FAST_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#define DIN_FAST_TARGET_AVX2 __attribute__((target("avx2,fma")))

enum class Isa { kBase, kAvx2, kAvx512 };

inline Isa cpu_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const Isa isa = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
                             ? Isa::kAvx512
                             : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? Isa::kAvx2
                                                                                                : Isa::kBase);
  return isa;
#else
  return Isa::kBase;
#endif
}

}  // namespace din_fast
