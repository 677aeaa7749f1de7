// Criss-cross attention on CPU: forward with an online softmax, and backward.
//
// Position p = (i, j) attends to row i and column j (p once). The kernel works on "lines": first every
// row (the softmax over the row, with p), then every column (p excluded), merging the column into the
// row's running maximum m, sum l and unnormalised output as flash attention merges key blocks. Only
// per-line scratch is allocated (keys transposed, four rows of energies), never the (B, H, W, H + W - 1)
// energy tensor of the reference. q, k, v are read as channels-last (B, H, W, C) so that every
// position's vector is contiguous; the output is produced channels-last.
//
// Backward (flash-attention style): recompute out and lse = m + log l, D_p = g_p . out_p, then per line
// a = exp(e - lse), dE = a (g_p . v_s - D_p), dq_p += dE k_s, dk_s += dE q_p, dv_s += a g_p. Rows then
// columns; within a phase each line owns every position it writes, so there are no atomics.
//
// float32 hot loops are compiled for AVX-512 / AVX2+FMA / baseline and picked once at run time
// (vec_math.h); float64 runs the baseline build.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common.h"
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

// acc_r[0:c] (+)= sum_s p[r][s] v_s for R rows: blocks of R x chunk outputs stay in registers while the
// line's values stream through (for R = 4 and float, 8 vector accumulators: enough to hide FMA latency).
template <typename T, int64_t R>
inline __attribute__((always_inline)) void aggregate_rows(const Line<T>& L, const T* p, T* const* acc, bool add) {
  constexpr int64_t chunk = 128 / sizeof(T);
  int64_t c0 = 0;
  for (; c0 + chunk <= L.c; c0 += chunk) {
    T a[R][chunk];
    for (int64_t r = 0; r < R; ++r)
      for (int64_t cc = 0; cc < chunk; ++cc) a[r][cc] = add ? acc[r][c0 + cc] : T(0);
    for (int64_t s = 0; s < L.n; ++s) {
      const T* vs = L.v + s * L.step * L.c + c0;
      for (int64_t r = 0; r < R; ++r) {
        const T w = p[r * L.n + s];
#pragma omp simd
        for (int64_t cc = 0; cc < chunk; ++cc) a[r][cc] += w * vs[cc];
      }
    }
    for (int64_t r = 0; r < R; ++r)
      for (int64_t cc = 0; cc < chunk; ++cc) acc[r][c0 + cc] = a[r][cc];
  }
  if (c0 < L.c) {  // channel tail
    for (int64_t r = 0; r < R; ++r) {
      T* out = acc[r];
      if (!add) std::fill(out + c0, out + L.c, T(0));
      for (int64_t s = 0; s < L.n; ++s) {
        const T w = p[r * L.n + s];
        const T* vs = L.v + s * L.step * L.c;
#pragma omp simd
        for (int64_t ch = c0; ch < L.c; ++ch) out[ch] += w * vs[ch];
      }
    }
  }
}

template <typename T>
inline __attribute__((always_inline)) void aggregate(const Line<T>& L, const T* p, int64_t rows, T* const* acc,
                                                     bool add) {
  if (rows == kRows) return aggregate_rows<T, kRows>(L, p, acc, add);
  for (int64_t r = 0; r < rows; ++r) aggregate_rows<T, 1>(L, p + r * L.n, acc + r, add);
}

// Forward over one line. first (the row): stats m, l and acc are written. Otherwise (the column, the
// query's own position excluded) they are merged in and the output normalised in place.
template <typename T, Isa I>
inline __attribute__((always_inline)) void line_forward(const Line<T>& L, bool first, T* acc, T* m, T* l,
                                                        T* kt, T* e) {
  for (int64_t s = 0; s < L.n; ++s)
    for (int64_t ch = 0; ch < L.cq; ++ch) kt[ch * L.n + s] = L.k[s * L.step * L.cq + ch];
  for (int64_t j0 = 0; j0 < L.n; j0 += kRows) {
    const int64_t rows = std::min(kRows, L.n - j0);
    energies(L, kt, j0, rows, e);
    T* outs[kRows];
    T alpha[kRows];
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t j = j0 + r;
      T* __restrict er = e + r * L.n;
      if (!first) er[j] = -std::numeric_limits<T>::infinity();
      T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
      for (int64_t s = 0; s < L.n; ++s) mx = std::max(mx, er[s]);
      const int64_t pos = j * L.step;
      const T mnew = first ? mx : std::max(m[pos], mx);
      T sum = exp_shift_sum<I>(er, L.n, mnew);
      if (!first) {
        sum -= er[j];  // the position itself was counted by its row
        er[j] = 0;
        alpha[r] = exp_nonpositive(m[pos] - mnew);
        l[pos] = l[pos] * alpha[r] + sum;
      } else {
        l[pos] = sum;
      }
      m[pos] = mnew;
      outs[r] = acc + pos * L.c;
    }
    if (!first) {
      for (int64_t r = 0; r < rows; ++r) {
        T* o = outs[r];
        const T a = alpha[r];
#pragma omp simd
        for (int64_t ch = 0; ch < L.c; ++ch) o[ch] *= a;
      }
    }
    aggregate(L, e, rows, outs, !first);
    if (!first) {
      for (int64_t r = 0; r < rows; ++r) {
        T* o = outs[r];
        const T inv = T(1) / l[(j0 + r) * L.step];
#pragma omp simd
        for (int64_t ch = 0; ch < L.c; ++ch) o[ch] *= inv;
      }
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

// The per-line kernels, the unit of work of every thread: float32 is compiled per instruction set.
#define DIN_FAST_LINE_KERNELS(suffix, target, isa)                                                              \
  target void line_forward_##suffix(const Line<float>& L, bool first, float* acc, float* m, float* l, float* kt, \
                                    float* e) {                                                                 \
    line_forward<float, isa>(L, first, acc, m, l, kt, e);                                                       \
  }                                                                                                             \
  target void line_backward_##suffix(const Line<float>& L, bool self, const float* g, const float* lse,         \
                                     const float* dsum, float* dq, float* dk, float* dv, float* kt, float* e) {  \
    line_backward<float, isa>(L, self, g, lse, dsum, dq, dk, dv, kt, e);                                        \
  }

#if defined(__x86_64__) && defined(__GNUC__)
DIN_FAST_LINE_KERNELS(avx512, DIN_FAST_TARGET_AVX512, Isa::kAvx512)
DIN_FAST_LINE_KERNELS(avx2, DIN_FAST_TARGET_AVX2, Isa::kAvx2)
#endif
DIN_FAST_LINE_KERNELS(base, , Isa::kBase)

void run_line_forward(const Line<float>& L, bool first, float* acc, float* m, float* l, float* kt, float* e) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_isa() == Isa::kAvx512) return line_forward_avx512(L, first, acc, m, l, kt, e);
  if (cpu_isa() == Isa::kAvx2) return line_forward_avx2(L, first, acc, m, l, kt, e);
#endif
  line_forward_base(L, first, acc, m, l, kt, e);
}

void run_line_forward(const Line<double>& L, bool first, double* acc, double* m, double* l, double* kt,
                      double* e) {
  line_forward<double, Isa::kBase>(L, first, acc, m, l, kt, e);
}

void run_line_backward(const Line<float>& L, bool self, const float* g, const float* lse, const float* dsum,
                       float* dq, float* dk, float* dv, float* kt, float* e) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_isa() == Isa::kAvx512) return line_backward_avx512(L, self, g, lse, dsum, dq, dk, dv, kt, e);
  if (cpu_isa() == Isa::kAvx2) return line_backward_avx2(L, self, g, lse, dsum, dq, dk, dv, kt, e);
#endif
  line_backward_base(L, self, g, lse, dsum, dq, dk, dv, kt, e);
}

void run_line_backward(const Line<double>& L, bool self, const double* g, const double* lse, const double* dsum,
                       double* dq, double* dk, double* dv, double* kt, double* e) {
  line_backward<double, Isa::kBase>(L, self, g, lse, dsum, dq, dk, dv, kt, e);
}

struct Dims {
  int64_t b, h, w, cq, c;
};

// Offset (in positions) of line `idx` of a phase: rows are (b, i), columns (b, j).
inline int64_t line_base(const Dims& d, bool rows, int64_t idx) {
  return rows ? idx * d.w : (idx / d.w) * d.h * d.w + idx % d.w;
}

template <typename T>
inline __attribute__((always_inline)) void forward_phase(const Dims& d, bool rows, const T* q, const T* k,
                                                         const T* v, T* acc, T* m, T* l) {
  const int64_t lines = rows ? d.b * d.h : d.b * d.w;
  const int64_t n = rows ? d.w : d.h;
  at::parallel_for(0, lines, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> scratch(d.cq * n + kRows * n);
    for (int64_t idx = lo; idx < hi; ++idx) {
      const int64_t base = line_base(d, rows, idx);
      const Line<T> L{q + base * d.cq, k + base * d.cq, v + base * d.c, n, rows ? 1 : d.w, d.cq, d.c};
      run_line_forward(L, rows, acc + base * d.c, m + base, l + base, scratch.data(), scratch.data() + d.cq * n);
    }
  });
}

template <typename T>
inline __attribute__((always_inline)) void backward_phase(const Dims& d, bool rows, const T* q, const T* k,
                                                          const T* v, const T* g, const T* lse, const T* dsum,
                                                          T* dq, T* dk, T* dv) {
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

// Full forward: rows, then columns (skipped when H == 1: the column holds only the position itself).
template <typename T>
inline __attribute__((always_inline)) void forward_all(const Dims& d, const T* q, const T* k, const T* v, T* out,
                                                       T* m, T* l) {
  forward_phase(d, true, q, k, v, out, m, l);
  if (d.h > 1) {
    forward_phase(d, false, q, k, v, out, m, l);
  } else {
    at::parallel_for(0, d.b * d.w, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        const T inv = T(1) / l[p];
        for (int64_t ch = 0; ch < d.c; ++ch) out[p * d.c + ch] *= inv;
      }
    });
  }
}

template <typename T>
inline __attribute__((always_inline)) void backward_all(const Dims& d, const T* q, const T* k, const T* v,
                                                        const T* g, T* out, T* m, T* l, T* dq, T* dk, T* dv) {
  forward_all(d, q, k, v, out, m, l);
  const int64_t positions = d.b * d.h * d.w;
  // m <- lse, l <- D = g . out
  at::parallel_for(0, positions, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) {
      m[p] += std::log(l[p]);
      T acc = 0;
      for (int64_t ch = 0; ch < d.c; ++ch) acc += g[p * d.c + ch] * out[p * d.c + ch];
      l[p] = acc;
    }
  });
  backward_phase(d, true, q, k, v, g, m, l, dq, dk, dv);
  if (d.h > 1) backward_phase(d, false, q, k, v, g, m, l, dq, dk, dv);
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
  const at::Tensor qt = to_nhwc(q), kt = to_nhwc(k), vt = to_nhwc(v);
  at::Tensor out = at::empty({d.b, d.h, d.w, d.c}, v.options());
  at::Tensor stats = at::empty({2, d.b * d.h * d.w}, v.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "criss_cross_attention_cpp", [&] {
    forward_all(d, qt.const_data_ptr<scalar_t>(), kt.const_data_ptr<scalar_t>(), vt.const_data_ptr<scalar_t>(),
                 out.mutable_data_ptr<scalar_t>(), stats[0].mutable_data_ptr<scalar_t>(),
                 stats[1].mutable_data_ptr<scalar_t>());
  });
  return as_nchw(out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> criss_cross_attention_backward_cpp(const at::Tensor& grad,
                                                                                  const at::Tensor& q,
                                                                                  const at::Tensor& k,
                                                                                  const at::Tensor& v) {
  const Dims d = check(q, k, v);
  check_same(grad, "grad", v, "v", v.sizes());
  const at::Tensor qt = to_nhwc(q), kt = to_nhwc(k), vt = to_nhwc(v), gt = to_nhwc(grad);
  at::Tensor out = at::empty({d.b, d.h, d.w, d.c}, v.options());
  at::Tensor stats = at::empty({2, d.b * d.h * d.w}, v.options());
  at::Tensor dq = at::zeros({d.b, d.h, d.w, d.cq}, q.options());
  at::Tensor dk = at::zeros({d.b, d.h, d.w, d.cq}, q.options());
  at::Tensor dv = at::zeros({d.b, d.h, d.w, d.c}, v.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "criss_cross_attention_backward_cpp", [&] {
    backward_all(d, qt.const_data_ptr<scalar_t>(), kt.const_data_ptr<scalar_t>(), vt.const_data_ptr<scalar_t>(),
                  gt.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                  stats[0].mutable_data_ptr<scalar_t>(), stats[1].mutable_data_ptr<scalar_t>(),
                  dq.mutable_data_ptr<scalar_t>(), dk.mutable_data_ptr<scalar_t>(), dv.mutable_data_ptr<scalar_t>());
  });
  return {as_nchw(dq), as_nchw(dk), as_nchw(dv)};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_criss_cross_attention_cpp", &criss_cross_attention_cpp);
  m.impl("_criss_cross_attention_backward_cpp", &criss_cross_attention_backward_cpp);
}

}  // namespace din_fast
