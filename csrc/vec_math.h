// Small numeric helpers shared by din_fast's CPU kernels, written so that GCC vectorises the loops that
// call them (no libm calls, no branches).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <bit>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

// exp_nonpositive on every lane of a float vector of simd.h's Simd (the same reduction and polynomial, written on
// whole vectors so that it compiles to vector instructions of any width; n = round(x / ln 2) and 2^n
// come from the bits of one float addition instead of conversions: max relative error 8.4e-8 on
// [-87, 0], as the scalar form); double lanes call std::exp.
template <typename V>
inline __attribute__((always_inline)) V exp_nonpositive_lanes(V x) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(x[0])>>;
  if constexpr (std::is_same_v<T, float>) {
    typedef int32_t VI __attribute__((vector_size(sizeof(V))));
    const V lo = V{} - 87.3f;
    x = x < lo ? lo : x;  // not x > lo ? x : lo, which maps NaN to lo: NaN must stay NaN
    // n = round(x / ln 2) by the adder: 1.5 * 2^23 + n holds n in its low mantissa bits.
    const V y = x * 1.44269504088896341f + 12582912.0f;
    const V n = y - 12582912.0f;
    const V r = x - n * 0.693359375f + n * 2.12194440e-4f;
    V p = V{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    // 2^n: n + 127 shifted into the exponent field; y's own exponent bits shift out.
    return p * reinterpret_cast<V>((reinterpret_cast<VI>(y) + 127) << 23);
  } else {
    for (int l = 0; l < static_cast<int>(sizeof(V) / sizeof(T)); ++l) x[l] = std::exp(x[l]);
    return x;
  }
}

}  // namespace din_fast

namespace din_fast {

// Instruction sets that float32 hot loops are compiled for (the extension itself is built for the
// baseline x86-64): a kernel defines one function per set with these attributes and calls
// the best one the CPU supports, chosen once. (common.h's DIN_FAST_MULTIVERSION clones one function
// per ISA level for compiler-vectorised loops; the explicit intrinsics below need the ISA known at
// compile time, as a template argument, hence separate functions.)
#define DIN_FAST_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#define DIN_FAST_TARGET_AVX2 __attribute__((target("avx2,fma")))

enum class Isa { kBase, kAvx2, kAvx512 };

// The widest instruction set the CPU supports, capped by the environment variable DIN_FAST_CPU_ISA
// ("avx2" or "baseline") if set when the extension first asks: so the narrower kernels can be tested
// (and compared) on a machine that would otherwise always run the widest. Read once per process.
inline Isa cpu_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const Isa isa = [] {
    Isa best = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
                   ? Isa::kAvx512
                   : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? Isa::kAvx2 : Isa::kBase);
    const char* cap = std::getenv("DIN_FAST_CPU_ISA");
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && best == Isa::kAvx512) best = Isa::kAvx2;
    if (cap != nullptr && std::strcmp(cap, "baseline") == 0) best = Isa::kBase;
    return best;
  }();
  return isa;
#else
  return Isa::kBase;
#endif
}

}  // namespace din_fast

namespace din_fast {

// e[i] <- exp(e[i] - shift) for i < n (every e[i] <= shift), returning the sum: the softmax numerators
// of one row. Explicit AVX-512 / AVX2 code of exp_nonpositive's algorithm (GCC does not vectorise the
// inlined scalar form reliably); the remainder runs the scalar form.
template <typename T>
inline T exp_shift_sum_scalar(T* e, int64_t from, int64_t n, T shift) {
  T sum = 0;
  for (int64_t i = from; i < n; ++i) {
    e[i] = exp_nonpositive(e[i] - shift);
    sum += e[i];
  }
  return sum;
}

#if defined(__x86_64__) && defined(__GNUC__)
DIN_FAST_TARGET_AVX512 inline float exp_shift_sum_avx512(float* e, int64_t n, float shift) {
  const __m512 vshift = _mm512_set1_ps(shift), lo = _mm512_set1_ps(-87.3f);
  __m512 total = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // lo first: maxps returns its second operand when either is NaN, so NaN stays NaN.
    __m512 x = _mm512_max_ps(lo, _mm512_sub_ps(_mm512_loadu_ps(e + i), vshift));
    __m512 k = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                                    _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
    p = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
    _mm512_storeu_ps(e + i, p);
    total = _mm512_add_ps(total, p);
  }
  return _mm512_reduce_add_ps(total) + exp_shift_sum_scalar(e, i, n, shift);
}

DIN_FAST_TARGET_AVX2 inline float exp_shift_sum_avx2(float* e, int64_t n, float shift) {
  const __m256 vshift = _mm256_set1_ps(shift), lo = _mm256_set1_ps(-87.3f);
  __m256 total = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    // lo first: maxps returns its second operand when either is NaN, so NaN stays NaN.
    __m256 x = _mm256_max_ps(lo, _mm256_sub_ps(_mm256_loadu_ps(e + i), vshift));
    __m256 k = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fmadd_ps(k, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    _mm256_storeu_ps(e + i, p);
    total = _mm256_add_ps(total, p);
  }
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_shuffle_ps(half, half, 1));
  return _mm_cvtss_f32(half) + exp_shift_sum_scalar(e, i, n, shift);
}
#endif

// The best of the above for this CPU (float), or the scalar form (double: std::exp).
template <Isa I>
inline __attribute__((always_inline)) float exp_shift_sum(float* e, int64_t n, float shift) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (I == Isa::kAvx512) return exp_shift_sum_avx512(e, n, shift);
  if constexpr (I == Isa::kAvx2) return exp_shift_sum_avx2(e, n, shift);
#endif
  return exp_shift_sum_scalar(e, 0, n, shift);
}

template <Isa I>
inline __attribute__((always_inline)) double exp_shift_sum(double* e, int64_t n, double shift) {
  return exp_shift_sum_scalar(e, 0, n, shift);
}

}  // namespace din_fast
