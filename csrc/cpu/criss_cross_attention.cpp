// Criss-cross attention on CPU: forward and backward.
//
// Position p = (i, j) attends to row i and column j (p once): H + W - 1 keys.
//
// Forward, on q, k, v in their (B, C, H, W) layout (no transposed copies), vectorised over the column
// index j. A unit of work is a block of kRows rows by a tile of up to kTile vectors of columns. For it:
//   1. energies of every position of the block against its column, e[r][t][j] = q(i_r, j) . k(t, j)
//      (lanes: j; register blocks of rows x keys), and against its row, e[r][H + s][j] = q(i_r, j) . k(i_r, s)
//      (k broadcast); the H + W energies of a position sit in one lane of a per-thread buffer of
//      kRows * (H + W) * tile values, never a (B, H, W, H + W - 1) tensor;
//   2. a two-pass softmax per lane: the maximum over the H + W - 1 keys is kept while step 1 stores the
//      energies (the column's own position is stored as -inf), then one pass of exp and sum (vector exp,
//      vec_math.h) over the position's contiguous H + W entries;
//   3. the column sum o[r][c][j] = sum_t e[r][t][j] v(c, t, j) (register blocks of rows x channels, so each
//      v vector loaded serves kRows rows), then the row sum out = (o + sum_s e[r][H + s][j] v(c, i_r, s)) / l
//      (register blocks of channels x column vectors, v broadcast). Work is about 2 (H + W) (Cq + C)
//      flops per position, nearly all in these register-blocked multiply-adds.
// Widths that are not a multiple of the vector length run on zero-padded copies (padding lanes are
// computed and never stored); the output is written in (B, C, H, W). The forward can also write
// lse = m + log l per position, which the backward uses.
//
// Backward (flash-attention style) on channels-last copies: out and lse from the forward, D_p = g_p . out_p,
// then per line (a row or a column) a = exp(e - lse), dE = a (g_p . v_s - D_p), dq_p += dE k_s,
// dk_s += dE q_p, dv_s += a g_p. Rows then columns; within a phase each line owns every position it
// writes, so there are no atomics.
//
// float32 and float64 hot loops are compiled for AVX-512 / AVX2+FMA / baseline and picked once at run
// time (vec_math.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common.h"
#include "simd.h"
#include "vec_math.h"

namespace din_fast {
namespace {

constexpr int64_t kRows = 4;     // queries per block: four rows of energies, reused across the channels

// One line (a row or a column) of n positions. Position t of the line lives at base + t * step
// (in positions); each position has cq query/key channels and c value channels.
template <typename T>
struct Line {
  const T* q;
  const T* k;
  const T* v;
  int64_t n, step, cq, c;
};

// e[r][s] = q_{j0+r} . k_s for r < rows, s < n; kt is k transposed (cq x n). Blocks of one vector of keys
// accumulate in registers over the cq channels.
template <typename T>
inline __attribute__((always_inline)) void energies(const Line<T>& L, const T* kt, int64_t j0, int64_t rows,
                                                    T* e) {
  constexpr int64_t chunk = 64 / sizeof(T);
  for (int64_t r = 0; r < rows; ++r) {
    const T* qr = L.q + (j0 + r) * L.step * L.cq;
    T* er = e + r * L.n;
    int64_t s0 = 0;
    for (; s0 + chunk <= L.n; s0 += chunk) {
      T a[chunk] = {};
      for (int64_t ch = 0; ch < L.cq; ++ch) {
        const T qv = qr[ch];
        const T* kr = kt + ch * L.n + s0;
#pragma omp simd
        for (int64_t cc = 0; cc < chunk; ++cc) a[cc] += qv * kr[cc];
      }
      for (int64_t cc = 0; cc < chunk; ++cc) er[s0 + cc] = a[cc];
    }
    for (int64_t s = s0; s < L.n; ++s) {
      T acc = 0;
      for (int64_t ch = 0; ch < L.cq; ++ch) acc += qr[ch] * kt[ch * L.n + s];
      er[s] = acc;
    }
  }
}

// Backward over one line; `self` says whether the query's own position is among the keys (the row).
template <typename T, Isa I>
inline __attribute__((always_inline)) void line_backward(const Line<T>& L, bool self, const T* g, const T* lse,
                                                         const T* dsum, T* dq, T* dk, T* dv, T* kt, T* e) {
  for (int64_t s = 0; s < L.n; ++s)
    for (int64_t ch = 0; ch < L.cq; ++ch) kt[ch * L.n + s] = L.k[s * L.step * L.cq + ch];
  T* de = e + kRows * L.n;
  for (int64_t j0 = 0; j0 < L.n; j0 += kRows) {
    const int64_t rows = std::min(kRows, L.n - j0);
    energies(L, kt, j0, rows, e);
    const T* gr[kRows];
    for (int64_t r = 0; r < kRows; ++r) gr[r] = g + (j0 + std::min(r, rows - 1)) * L.step * L.c;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pos = (j0 + r) * L.step;
      T* __restrict er = e + r * L.n;
      const T shift = lse[pos];
      exp_shift_sum<I>(er, L.n, shift);
      if (!self) er[j0 + r] = 0;
    }
    // de[r][s] = a (g_r . v_s - D_r)
    for (int64_t s = 0; s < L.n; ++s) {
      const T* vs = L.v + s * L.step * L.c;
      T d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
      for (int64_t ch = 0; ch < L.c; ++ch) {
        const T vv = vs[ch];
        d0 += gr[0][ch] * vv;
        d1 += gr[1][ch] * vv;
        d2 += gr[2][ch] * vv;
        d3 += gr[3][ch] * vv;
      }
      const T d[kRows] = {d0, d1, d2, d3};
      for (int64_t r = 0; r < rows; ++r)
        de[r * L.n + s] = e[r * L.n + s] * (d[r] - dsum[(j0 + r) * L.step]);
      // dv_s += sum_r a[r][s] g_r
      T* dvs = dv + s * L.step * L.c;
      T w[kRows];
      for (int64_t r = 0; r < kRows; ++r) w[r] = r < rows ? e[r * L.n + s] : T(0);
#pragma omp simd
      for (int64_t ch = 0; ch < L.c; ++ch)
        dvs[ch] += w[0] * gr[0][ch] + w[1] * gr[1][ch] + w[2] * gr[2][ch] + w[3] * gr[3][ch];
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t pos = (j0 + r) * L.step;
      const T* qr = L.q + pos * L.cq;
      T* dqr = dq + pos * L.cq;
      const T* der = de + r * L.n;
      for (int64_t ch = 0; ch < L.cq; ++ch) {
        const T* kr = kt + ch * L.n;
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t s = 0; s < L.n; ++s) acc += der[s] * kr[s];
        dqr[ch] += acc;
      }
      for (int64_t s = 0; s < L.n; ++s) {
        const T w = der[s];
        T* dks = dk + s * L.step * L.cq;
        for (int64_t ch = 0; ch < L.cq; ++ch) dks[ch] += w * qr[ch];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Forward (see the top of the file).

constexpr int64_t kTile = 4;  // column vectors per unit of work

// Inputs as the forward kernel reads them: (B, C, H, wv) rows, wv = W rounded up to the vector length.
template <typename T>
struct Planes {
  const T* q;
  const T* k;
  const T* v;
  T* out;  // (B, C, H, W)
  T* lse;  // (B, H, W), or nullptr
  int64_t b, h, w, wv, cq, c;
};

// Register blocks per vector width: about 16 accumulators for 32 registers (AVX-512), 8 for 16.
template <int VB>
struct Blocks {
  static constexpr int kKeys = VB == 64 ? 4 : 2;      // keys per block of column energies (x kRows rows)
  static constexpr int kRowKeys = VB == 64 ? 4 : 2;   // keys per block of row energies (x column vectors)
  static constexpr int kChannels = VB == 64 ? 4 : 2;  // channels per aggregation block
};

// One unit: rows i_r = i0 + min(r, rows - 1) (a short last block repeats its last row; nothing is stored
// for the repeats), column vectors [j0, j0 + NV * L) of image b. Scratch: e, kRows x kTile x (H + W) vectors
// (entry t < H: column key t, entry H + s: row key s; the H + W entries of one row and column vector are
// contiguous), o, kRows x C x kTile vectors of column sums, and inv, kRows x kTile vectors.
template <typename T, int VB, int NV>
inline __attribute__((always_inline)) void forward_unit(const Planes<T>& P, int64_t b, int64_t i0, int64_t rows,
                                                        int64_t j0, T* e, T* o, T* inv) {
  using S = Simd<T, VB>;
  using V = typename S::V;
  constexpr int L = S::L, R = kRows;
  using Bk = Blocks<VB>;
  const int64_t H = P.h, W = P.w, wv = P.wv, plane = H * wv, n = H + W;
  const T* q = P.q + b * P.cq * plane + j0;
  const T* k = P.k + b * P.cq * plane;
  const T* v = P.v + b * P.c * plane;
  const auto at = [&](int r, int jv, int64_t t) __attribute__((always_inline)) {
    return e + ((r * kTile + jv) * n + t) * L;
  };
  int64_t ir[R];
  for (int r = 0; r < R; ++r) ir[r] = i0 + std::min<int64_t>(r, rows - 1);
  // Running maxima of the energies (the column's own position, stored as -inf, never wins).
  const V lowest = S::splat(-std::numeric_limits<T>::infinity());
  V mx[R][NV];
  for (int r = 0; r < R; ++r)
    for (int jv = 0; jv < NV; ++jv) mx[r][jv] = lowest;

  // 1a. Column energies e[r][t] = q(i_r) . k(t), lane-wise over the columns.
  for (int jv = 0; jv < NV; ++jv) {
    const T* qj = q + jv * L;
    const T* kj = k + j0 + jv * L;
    auto block = [&](auto keys, int64_t t0) __attribute__((always_inline)) {
      constexpr int KB = decltype(keys)::value;
      V acc[R][KB] = {};
      for (int64_t ch = 0; ch < P.cq; ++ch) {
        V qv[R], kv[KB];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) qv[r] = S::load(qj + ch * plane + ir[r] * wv);
#pragma GCC unroll 8
        for (int t = 0; t < KB; ++t) kv[t] = S::load(kj + ch * plane + (t0 + t) * wv);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
          for (int t = 0; t < KB; ++t) acc[r][t] += qv[r] * kv[t];
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int t = 0; t < KB; ++t) {
          const V x = t0 + t == ir[r] ? lowest : acc[r][t];
          mx[r][jv] = x > mx[r][jv] ? x : mx[r][jv];
          S::store(at(r, jv, t0 + t), x);
        }
    };
    int64_t t0 = 0;
    for (; t0 + Bk::kKeys <= H; t0 += Bk::kKeys) block(std::integral_constant<int, Bk::kKeys>{}, t0);
    for (; t0 < H; ++t0) block(std::integral_constant<int, 1>{}, t0);
  }

  // 1b. Row energies e[r][H + s] = q(i_r) . k(i_r, s), k broadcast.
  for (int r = 0; r < R; ++r) {
    const T* qr = q + ir[r] * wv;
    const T* kr = k + ir[r] * wv;
    auto block = [&](auto keys, int64_t s0) __attribute__((always_inline)) {
      constexpr int KB = decltype(keys)::value;
      V acc[KB][NV] = {};
      for (int64_t ch = 0; ch < P.cq; ++ch) {
        V qv[NV];
#pragma GCC unroll 8
        for (int jv = 0; jv < NV; ++jv) qv[jv] = S::load(qr + ch * plane + jv * L);
#pragma GCC unroll 8
        for (int s = 0; s < KB; ++s) {
          const T ks = kr[ch * plane + s0 + s];
#pragma GCC unroll 8
          for (int jv = 0; jv < NV; ++jv) acc[s][jv] += qv[jv] * ks;
        }
      }
#pragma GCC unroll 8
      for (int s = 0; s < KB; ++s)
#pragma GCC unroll 8
        for (int jv = 0; jv < NV; ++jv) {
          mx[r][jv] = acc[s][jv] > mx[r][jv] ? acc[s][jv] : mx[r][jv];
          S::store(at(r, jv, H + s0 + s), acc[s][jv]);
        }
    };
    int64_t s0 = 0;
    for (; s0 + Bk::kRowKeys <= W; s0 += Bk::kRowKeys) block(std::integral_constant<int, Bk::kRowKeys>{}, s0);
    for (; s0 < W; ++s0) block(std::integral_constant<int, 1>{}, s0);
  }

  // 2. Softmax numerators and sums per lane (the excluded entry: exp(-inf) = 0, or ~1e-38 for float).
  for (int r = 0; r < R; ++r) {
    for (int jv = 0; jv < NV; ++jv) {
      T* er = at(r, jv, 0);
      const V m = mx[r][jv];
      V sum = {};
      for (int64_t t = 0; t < n; ++t) {
        const V a = exp_nonpositive_lanes(S::load(er + t * L) - m);
        S::store(er + t * L, a);
        sum += a;
      }
      S::store(inv + (r * kTile + jv) * L, T(1) / sum);
      if (P.lse != nullptr && r < rows) {
        const int64_t count = std::min<int64_t>(L, W - (j0 + jv * L));
        T* lse = P.lse + (b * H + ir[r]) * W + j0 + jv * L;
        for (int64_t l = 0; l < count; ++l) lse[l] = m[l] + std::log(sum[l]);
      }
    }
  }

  // 3a. Column sums o[r][c] = sum_t e[r][t] v(c, t), lane-wise; each v vector serves the kRows rows.
  for (int jv = 0; jv < NV; ++jv) {
    const T* vj = v + j0 + jv * L;
    auto block = [&](auto channels, int64_t c0) __attribute__((always_inline)) {
      constexpr int CB = decltype(channels)::value;
      V acc[R][CB] = {};
      for (int64_t t = 0; t < H; ++t) {
        V a[R], x[CB];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) a[r] = S::load(at(r, jv, t));
#pragma GCC unroll 8
        for (int c = 0; c < CB; ++c) x[c] = S::load(vj + (c0 + c) * plane + t * wv);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
          for (int c = 0; c < CB; ++c) acc[r][c] += a[r] * x[c];
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int c = 0; c < CB; ++c) S::store(o + ((r * P.c + c0 + c) * kTile + jv) * L, acc[r][c]);
    };
    int64_t c0 = 0;
    for (; c0 + Bk::kChannels <= P.c; c0 += Bk::kChannels) block(std::integral_constant<int, Bk::kChannels>{}, c0);
    for (; c0 < P.c; ++c0) block(std::integral_constant<int, 1>{}, c0);
  }

  // 3b. out(c, i_r) = (o[r][c] + sum_s e[r][H + s] v(c, i_r, s)) / l, v broadcast; stored for real rows and
  // real columns only.
  const int64_t count = W - j0;  // columns of this tile that exist (the last vector may be partial)
  for (int r = 0; r < rows; ++r) {
    const T* vr = v + ir[r] * wv;
    T* out = P.out + (b * P.c * H + ir[r]) * W + j0;
    auto block = [&](auto channels, int64_t c0) __attribute__((always_inline)) {
      constexpr int CB = decltype(channels)::value;
      V acc[CB][NV];
#pragma GCC unroll 8
      for (int c = 0; c < CB; ++c)
#pragma GCC unroll 8
        for (int jv = 0; jv < NV; ++jv) acc[c][jv] = S::load(o + ((r * P.c + c0 + c) * kTile + jv) * L);
      for (int64_t s = 0; s < W; ++s) {
        V a[NV];
#pragma GCC unroll 8
        for (int jv = 0; jv < NV; ++jv) a[jv] = S::load(at(r, jv, H + s));
#pragma GCC unroll 8
        for (int c = 0; c < CB; ++c) {
          const T x = vr[(c0 + c) * plane + s];
#pragma GCC unroll 8
          for (int jv = 0; jv < NV; ++jv) acc[c][jv] += a[jv] * x;
        }
      }
#pragma GCC unroll 8
      for (int jv = 0; jv < NV; ++jv) {
        const V scale = S::load(inv + (r * kTile + jv) * L);
#pragma GCC unroll 8
        for (int c = 0; c < CB; ++c) {
          T* dst = out + (c0 + c) * H * W + jv * L;
          if (count >= (jv + 1) * L)
            S::store(dst, acc[c][jv] * scale);
          else
            S::store_partial(dst, acc[c][jv] * scale, count - jv * L);
        }
      }
    };
    int64_t c0 = 0;
    for (; c0 + Bk::kChannels <= P.c; c0 += Bk::kChannels) block(std::integral_constant<int, Bk::kChannels>{}, c0);
    for (; c0 < P.c; ++c0) block(std::integral_constant<int, 1>{}, c0);
  }
}

// Units [lo, hi) of the forward: unit u is image u / (row blocks x tiles), then row block, then tile.
template <typename T, int VB>
inline __attribute__((always_inline)) void forward_units(const Planes<T>& P, int64_t lo, int64_t hi, T* scratch) {
  constexpr int64_t TL = kTile * Simd<T, VB>::L;
  const int64_t blocks = (P.h + kRows - 1) / kRows, tiles = (P.wv + TL - 1) / TL;
  T* e = scratch;
  T* o = e + kRows * (P.h + P.w) * TL;
  T* inv = o + kRows * P.c * TL;
  for (int64_t u = lo; u < hi; ++u) {
    const int64_t b = u / (blocks * tiles), i0 = (u / tiles) % blocks * kRows, j0 = u % tiles * TL;
    const int64_t rows = std::min(kRows, P.h - i0);
    switch (std::min<int64_t>(kTile, (P.wv - j0) / Simd<T, VB>::L)) {
      case 4: forward_unit<T, VB, 4>(P, b, i0, rows, j0, e, o, inv); break;
      case 3: forward_unit<T, VB, 3>(P, b, i0, rows, j0, e, o, inv); break;
      case 2: forward_unit<T, VB, 2>(P, b, i0, rows, j0, e, o, inv); break;
      default: forward_unit<T, VB, 1>(P, b, i0, rows, j0, e, o, inv); break;
    }
  }
}

static_assert(kTile == 4, "forward_units dispatches on 1..4 column vectors per tile");

// The kernels that threads run, compiled per instruction set (float32 and float64).
#define DIN_FAST_CCA_KERNELS(suffix, target, isa, vb)                                                          \
  template <typename T>                                                                                       \
  target void forward_units_##suffix(const Planes<T>& P, int64_t lo, int64_t hi, T* scratch) {                 \
    forward_units<T, vb>(P, lo, hi, scratch);                                                                 \
  }                                                                                                           \
  template <typename T>                                                                                       \
  target void line_backward_##suffix(const Line<T>& L, bool self, const T* g, const T* lse, const T* dsum,     \
                                     T* dq, T* dk, T* dv, T* kt, T* e) {                                      \
    line_backward<T, isa>(L, self, g, lse, dsum, dq, dk, dv, kt, e);                                          \
  }

#if defined(__x86_64__) && defined(__GNUC__)
DIN_FAST_CCA_KERNELS(avx512, DIN_FAST_TARGET_AVX512, Isa::kAvx512, 64)
DIN_FAST_CCA_KERNELS(avx2, DIN_FAST_TARGET_AVX2, Isa::kAvx2, 32)
#endif
DIN_FAST_CCA_KERNELS(base, , Isa::kBase, 16)

// Vector width (bytes) of the forward kernel this CPU runs: the padding unit of the rows it reads.
inline int vector_bytes() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_isa() == Isa::kAvx512) return 64;
  if (cpu_isa() == Isa::kAvx2) return 32;
#endif
  return 16;
}

template <typename T>
void run_forward_units(const Planes<T>& P, int64_t lo, int64_t hi, T* scratch) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_isa() == Isa::kAvx512) return forward_units_avx512(P, lo, hi, scratch);
  if (cpu_isa() == Isa::kAvx2) return forward_units_avx2(P, lo, hi, scratch);
#endif
  forward_units_base(P, lo, hi, scratch);
}

template <typename T>
void run_line_backward(const Line<T>& L, bool self, const T* g, const T* lse, const T* dsum, T* dq, T* dk, T* dv,
                       T* kt, T* e) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_isa() == Isa::kAvx512) return line_backward_avx512(L, self, g, lse, dsum, dq, dk, dv, kt, e);
  if (cpu_isa() == Isa::kAvx2) return line_backward_avx2(L, self, g, lse, dsum, dq, dk, dv, kt, e);
#endif
  line_backward_base(L, self, g, lse, dsum, dq, dk, dv, kt, e);
}

struct Dims {
  int64_t b, h, w, cq, c;
};

// (B, C, H, W) as contiguous rows of wv >= W values (zero padding), without a copy when it already is.
at::Tensor padded_rows(const at::Tensor& t, int64_t wv) {
  const at::Tensor c = t.contiguous();
  return wv == t.size(3) ? c : at::constant_pad_nd(c, {0, wv - t.size(3)});
}

// out (B, C, H, W), and lse (B, H, W) when lse is defined.
void forward(const Dims& d, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out,
             at::Tensor* lse) {
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "criss_cross_attention_cpp", [&] {
    const int64_t lanes = vector_bytes() / static_cast<int64_t>(sizeof(scalar_t));
    const int64_t wv = (d.w + lanes - 1) / lanes * lanes, tile = kTile * lanes;
    const at::Tensor qp = padded_rows(q, wv), kp = padded_rows(k, wv), vp = padded_rows(v, wv);
    const Planes<scalar_t> P{qp.const_data_ptr<scalar_t>(), kp.const_data_ptr<scalar_t>(),
                             vp.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                             lse != nullptr ? lse->mutable_data_ptr<scalar_t>() : nullptr,
                             d.b, d.h, d.w, wv, d.cq, d.c};
    const int64_t units = d.b * ((d.h + kRows - 1) / kRows) * ((wv + tile - 1) / tile);
    at::parallel_for(0, units, 1, [&](int64_t lo, int64_t hi) {
      std::vector<scalar_t> scratch(kRows * (d.h + d.w + d.c + 1) * tile);
      run_forward_units(P, lo, hi, scratch.data());
    });
  });
}

// Offset (in positions) of line `idx` of a phase: rows are (b, i), columns (b, j).
inline int64_t line_base(const Dims& d, bool rows, int64_t idx) {
  return rows ? idx * d.w : (idx / d.w) * d.h * d.w + idx % d.w;
}

// One backward phase (rows or columns) on channels-last (B, H, W, C) data; lse and dsum per position.
template <typename T>
void backward_phase(const Dims& d, bool rows, const T* q, const T* k, const T* v, const T* g, const T* lse,
                    const T* dsum, T* dq, T* dk, T* dv) {
  const int64_t lines = rows ? d.b * d.h : d.b * d.w;
  const int64_t n = rows ? d.w : d.h;
  at::parallel_for(0, lines, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> scratch(d.cq * n + 2 * kRows * n);
    for (int64_t idx = lo; idx < hi; ++idx) {
      const int64_t base = line_base(d, rows, idx);
      const Line<T> L{q + base * d.cq, k + base * d.cq, v + base * d.c, n, rows ? 1 : d.w, d.cq, d.c};
      run_line_backward(L, rows, g + base * d.c, lse + base, dsum + base, dq + base * d.cq, dk + base * d.cq,
                        dv + base * d.c, scratch.data(), scratch.data() + d.cq * n);
    }
  });
}

// (B, C, H, W) -> contiguous (B, H, W, C) (free for channels_last inputs).
at::Tensor to_nhwc(const at::Tensor& t) { return t.permute({0, 2, 3, 1}).contiguous(); }

// A contiguous (B, H, W, C) buffer seen as the (B, C, H, W) channels_last tensor it is.
at::Tensor as_nchw(const at::Tensor& t) { return t.permute({0, 3, 1, 2}); }

Dims check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_feature(q, "q");
  check_same(k, "k", q, "q", q.sizes());
  check_feature(v, "v");
  check_same(v, "v", q, "q", {q.size(0), v.size(1), q.size(2), q.size(3)});
  TORCH_CHECK_VALUE(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble,
                    "q must be float32 or float64 for the cpp implementation, got ", q.scalar_type());
  return Dims{q.size(0), q.size(2), q.size(3), q.size(1), v.size(1)};
}

at::Tensor criss_cross_attention_cpp(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const Dims d = check(q, k, v);
  at::Tensor out = at::empty({d.b, d.c, d.h, d.w}, v.options());
  forward(d, q, k, v, out, nullptr);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> criss_cross_attention_backward_cpp(const at::Tensor& grad,
                                                                                  const at::Tensor& q,
                                                                                  const at::Tensor& k,
                                                                                  const at::Tensor& v) {
  const Dims d = check(q, k, v);
  check_same(grad, "grad", v, "v", v.sizes());
  at::Tensor out = at::empty({d.b, d.c, d.h, d.w}, v.options());
  at::Tensor lse = at::empty({d.b, d.h, d.w}, v.options());
  forward(d, q, k, v, out, &lse);
  const at::Tensor dsum = (grad * out).sum(1);  // D_p = g_p . out_p, (B, H, W)
  const at::Tensor qt = to_nhwc(q), kt = to_nhwc(k), vt = to_nhwc(v), gt = to_nhwc(grad);
  at::Tensor dq = at::zeros({d.b, d.h, d.w, d.cq}, q.options());
  at::Tensor dk = at::zeros({d.b, d.h, d.w, d.cq}, q.options());
  at::Tensor dv = at::zeros({d.b, d.h, d.w, d.c}, v.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "criss_cross_attention_backward_cpp", [&] {
    for (const bool rows : {true, false}) {
      if (!rows && d.h == 1) break;  // the column holds only the position itself, excluded
      backward_phase(d, rows, qt.const_data_ptr<scalar_t>(), kt.const_data_ptr<scalar_t>(),
                     vt.const_data_ptr<scalar_t>(), gt.const_data_ptr<scalar_t>(), lse.const_data_ptr<scalar_t>(),
                     dsum.const_data_ptr<scalar_t>(), dq.mutable_data_ptr<scalar_t>(), dk.mutable_data_ptr<scalar_t>(),
                     dv.mutable_data_ptr<scalar_t>());
    }
  });
  return {as_nchw(dq), as_nchw(dk), as_nchw(dv)};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_criss_cross_attention_cpp", &criss_cross_attention_cpp);
  m.impl("_criss_cross_attention_backward_cpp", &criss_cross_attention_backward_cpp);
}

}  // namespace din_fast
