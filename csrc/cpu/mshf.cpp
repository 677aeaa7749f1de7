// C++ CPU kernels of `mshf` (DeFiAN's multi-scale Hessian filter; din_fast/ops/mshf.py has the maths).
//
// Forward: tasks are (batch, block of about kBlockRows output rows; row_blocks picks the count so the
// tasks split evenly over the threads). Each task zeroes a padded tile once; per channel it copies the
// block's rows plus a halo of kHalo rows into the tile's interior (the zero border is never written) and
// evaluates the three scales' nine stencils and λ from it; λ accumulates over channels in the task's own
// buffer, so x is read once (plus the halo rows) and nothing is shared between tasks.
// The stencils run in the form u = (gxx + gyy)/2, v = (gxx − gyy)/2, g = gxy (weights combined once per
// channel), λ = u + sqrt(v² + g²): the same 27 multiply-adds per point, fewer operations after them, and
// u's chain starts from the channel sum so far. The loop is bound by multiply-add throughput and the
// loads feeding it, not by the square root (one per 27 FMAs): each step computes a group of 4 output
// rows i, i + d, i + 2d, i + 3d of one scale (dilation d) for one vector of columns, so the 6 input rows
// they span are loaded once (18 vector loads for 108 FMAs instead of 36) and the 12 accumulators stay
// in registers; the weights are broadcast once per (channel, scale), outside the loops over rows and
// columns. The vector width follows the CPU (simd.h; AVX-512, AVX2 or baseline, chosen at run time).
//
// Backward: tasks are channels (dweight, dbias and dx of a channel belong to one task, so there is no
// reduction across tasks). Per (batch, channel): recompute g and the derivatives e_kj = ∂λ_k/∂g_kj · grad_k/C
// into zero-padded planes; then dbias = Σ e, dweight = correlation of e with the padded x at the nine
// taps, and dx = the transposed (flipped) stencils applied to e.
//
// Where the square root's argument is 0 the derivative is computed as PyTorch's autograd computes it
// for the reference formula, (grad/2)/s · (gxx − gyy) with s = 0, which is NaN (0 · inf or 0/0).
#pragma GCC optimize("fp-contract=fast")  // fuse a * b + c into FMAs (the ISO mode of -std=c++20 turns it off)

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common.h"
#include "simd.h"
#include "vec_math.h"

namespace din_fast {
namespace {

constexpr int64_t kScales = 3;     // dilations 1, 2, 3 (scale s has dilation s + 1)
constexpr int64_t kHalo = 3;       // the largest dilation: padding every tile carries
constexpr int64_t kBlockRows = 24; // output rows per forward task, nominally (a multiple of 4·d, d = 1, 2, 3)
constexpr int64_t kMinBlockRows = 8;  // thinnest row block the thread split may make
constexpr int kGroupRows = 4;      // output rows (of one scale) per step of the forward loop
constexpr int64_t kMargin = 16;    // forward tile columns each side of the image's: aligned copies and centre loads
constexpr int64_t kWidthMultiple = 16;  // forward tiles are this many columns wide (a multiple of any vector)

template <typename T>
struct Problem {
  const T* x;       // (B, C, H, W) contiguous
  const T* weight;  // (3 scales, 3 kinds, C, 3, 3)
  const T* bias;    // (3, 3, C)
  int64_t B, C, H, W;

  int64_t stride() const { return W + 2 * kHalo; }  // row stride of a padded backward plane
  // The 27 weights (kinds xx, yy, xy × 9 taps) and 3 biases of scale s, channel c.
  void params(int64_t s, int64_t c, T* k, T* b) const {
    for (int64_t j = 0; j < 3; ++j) {
      std::copy_n(weight + ((s * 3 + j) * C + c) * 9, 9, k + j * 9);
      b[j] = bias[(s * 3 + j) * C + c];
    }
  }
};

// Width of the forward tiles and accumulators: W rounded up to whole vectors of any ISA.
inline int64_t forward_width(int64_t W) { return (W + kWidthMultiple - 1) / kWidthMultiple * kWidthMultiple; }

// Rows [r0, r1) of the (H, W) plane into dst (row stride W + 2·kHalo: kHalo zero columns each side of
// the row), zero outside the image.
template <typename T>
DIN_FAST_INLINE void pad_rows(const T* plane, int64_t H, int64_t W, int64_t r0, int64_t r1, T* dst) {
  const int64_t stride = W + 2 * kHalo;
  for (int64_t r = r0; r < r1; ++r) {
    T* row = dst + (r - r0) * stride;
    if (r < 0 || r >= H) {
      std::fill(row, row + stride, T(0));
      continue;
    }
    std::fill(row, row + kHalo, T(0));
    std::copy(plane + r * W, plane + (r + 1) * W, row + kHalo);
    std::fill(row + kHalo + W, row + stride, T(0));
  }
}

// The image rows of [r0, r1) of the (H, W) plane into their rows of a forward tile (row stride
// Wv + 2·kMargin, tile row 0 = image row r0, image column 0 at kMargin). The padding (columns outside
// [0, W), rows outside the image) is zeroed once per task and never written, so per channel only the
// data moves (vector copies: a library call per row cost ~5% of the forward at 48²).
template <typename T, int VB>
DIN_FAST_INLINE void copy_rows(const T* plane, int64_t H, int64_t W, int64_t Wv, int64_t r0, int64_t r1, T* tile) {
  using S = Simd<T, VB>;
  const int64_t stride = Wv + 2 * kMargin;
  for (int64_t r = std::max<int64_t>(r0, 0); r < std::min(r1, H); ++r) {
    const T* src = plane + r * W;
    T* dst = tile + (r - r0) * stride + kMargin;
    int64_t w = 0;
    for (; w + S::L <= W; w += S::L) S::store(dst + w, S::load(src + w));
    for (; w < W; ++w) dst[w] = src[w];
  }
}

// acc + Σ_{p,q} k[3p+q] · rows[p][w + (q−1)·d], rows pointing at image column 0 of padded rows.
template <typename T>
DIN_FAST_INLINE T stencil(const T* r0, const T* r1, const T* r2, int64_t w, int64_t d, const T* k, T acc) {
  acc += k[0] * r0[w - d] + k[1] * r0[w] + k[2] * r0[w + d];
  acc += k[3] * r1[w - d] + k[4] * r1[w] + k[5] * r1[w + d];
  acc += k[6] * r2[w - d] + k[7] * r2[w] + k[8] * r2[w + d];
  return acc;
}

// The stencils of scale s, channel c in the (u, v, g) form: u = (kxx + kyy)/2, v = (kxx − kyy)/2, g = kxy
// (9 taps each); v and g carry their biases, u's bias is summed over channels separately (u is linear).
template <typename T>
struct UvgWeights {
  T u[9], v[9], g[9], bias_u, bias_v, bias_g;
  UvgWeights(const Problem<T>& p, int64_t s, int64_t c) {
    T k[27], b[3];
    p.params(s, c, k, b);
    for (int t = 0; t < 9; ++t) {
      u[t] = T(0.5) * (k[t] + k[9 + t]);
      v[t] = T(0.5) * (k[t] - k[9 + t]);
      g[t] = k[18 + t];
    }
    bias_u = T(0.5) * (b[0] + b[1]);
    bias_v = T(0.5) * (b[0] - b[1]);
    bias_g = b[2];
  }
};

// The (u, v, g) weights of one scale and channel as vectors (every lane the same), built once per
// lambda_scale call so the broadcasts stay out of its loops.
template <typename T, int VB>
struct UvgVectors {
  using S = Simd<T, VB>;
  typename S::V u[9], v[9], g[9], bias_v, bias_g;
  explicit DIN_FAST_INLINE UvgVectors(const UvgWeights<T>& k) {
    for (int t = 0; t < 9; ++t) {
      u[t] = S::splat(k.u[t]);
      v[t] = S::splat(k.v[t]);
      g[t] = S::splat(k.g[t]);
    }
    bias_v = S::splat(k.bias_v);
    bias_g = S::splat(k.bias_g);
  }
};

// a[m·d·as] += u + sqrt(v² + g²) (without u's bias) for output rows m = 0 … NR−1 of a row group (rows
// i + m·d) and one vector of columns; t points at tile row i, column x (row stride rs). Tile row i + (k−1)·d
// is tap row p = k − m of output row m, so each of the NR + 2 input rows is loaded once.
template <typename T, int VB, int D, int NR>
DIN_FAST_INLINE void lambda_group(const T* t, int64_t rs, const UvgVectors<T, VB>& k, T* a, int64_t as) {
  using S = Simd<T, VB>;
  using V = typename S::V;
  V u[NR], v[NR], g[NR];
#pragma GCC unroll 4
  for (int m = 0; m < NR; ++m) {
    u[m] = S::load(a + m * D * as);
    v[m] = k.bias_v;
    g[m] = k.bias_g;
  }
#pragma GCC unroll 6
  for (int r = 0; r < NR + 2; ++r) {
    const T* row = t + (r - 1) * D * rs;
#pragma GCC unroll 3
    for (int q = 0; q < 3; ++q) {
      const V x = S::load(row + (q - 1) * D);
#pragma GCC unroll 3
      for (int p = 0; p < 3; ++p) {
        const int m = r - p, tap = p * 3 + q;
        if (m < 0 || m >= NR) continue;
        u[m] += k.u[tap] * x;
        v[m] += k.v[tap] * x;
        g[m] += k.g[tap] * x;
      }
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < NR; ++m) S::store(a + m * D * as, u[m] + S::sqrt(v[m] * v[m] + g[m] * g[m]));
}

// Row groups of NR rows i, i + D, … for i in [i0, i1), every vector of columns in [0, Wv).
template <typename T, int VB, int D, int NR>
DIN_FAST_INLINE void lambda_groups(const T* tile, int64_t Wv, int64_t i0, int64_t i1, const UvgVectors<T, VB>& k,
                                   T* acc) {
  constexpr int L = Simd<T, VB>::L;
  const int64_t rs = Wv + 2 * kMargin;
  for (int64_t i = i0; i < i1; ++i) {
    const T* t = tile + (i + kHalo) * rs + kMargin;
    T* a = acc + i * Wv;
    for (int64_t x = 0; x < Wv; x += L) lambda_group<T, VB, D, NR>(t + x, rs, k, a + x, Wv);
  }
}

// One scale (dilation D) of one channel over the tile's rows [0, rows): bands of kGroupRows·D rows are
// D full groups each; the rows after the last full band form groups of fewer rows. acc has row stride Wv.
template <typename T, int VB, int D>
DIN_FAST_INLINE void lambda_scale(const T* tile, int64_t Wv, int64_t rows, const UvgWeights<T>& w, T* acc) {
  const UvgVectors<T, VB> k(w);
  constexpr int64_t band = kGroupRows * D;
  const int64_t full = rows / band * band;
  for (int64_t i0 = 0; i0 < full; i0 += band) lambda_groups<T, VB, D, kGroupRows>(tile, Wv, i0, i0 + D, k, acc);
  // Rows [full, rows): fewer than kGroupRows·D, so the group starting at row i has (rows − 1 − i)/D + 1 ≤ 4 rows.
  for (int64_t i = full; i < std::min(full + D, rows); ++i) {
    switch ((rows - 1 - i) / D + 1) {
      case 1: lambda_groups<T, VB, D, 1>(tile, Wv, i, i + 1, k, acc); break;
      case 2: lambda_groups<T, VB, D, 2>(tile, Wv, i, i + 1, k, acc); break;
      case 3: lambda_groups<T, VB, D, 3>(tile, Wv, i, i + 1, k, acc); break;
      default: lambda_groups<T, VB, D, kGroupRows>(tile, Wv, i, i + 1, k, acc);
    }
  }
}

// One forward task: λ summed over channels for output rows [h0, h1) of batch b, then divided by C.
// tile: (h1 − h0 + 2·kHalo) rows of Wv + 2·kMargin, 64-byte aligned; acc: kScales · (h1 − h0) rows of Wv
// (Wv = W rounded up to kWidthMultiple).
template <typename T, int VB>
DIN_FAST_INLINE void forward_task_impl(const Problem<T>& p, int64_t b, int64_t h0, int64_t h1, T* tile, T* acc,
                                       T* out) {
  const int64_t W = p.W, Wv = forward_width(W), rows = h1 - h0, plane = p.H * W;
  std::fill(acc, acc + kScales * rows * Wv, T(0));
  std::fill(tile, tile + (rows + 2 * kHalo) * (Wv + 2 * kMargin), T(0));
  T bias_u[kScales] = {0};
  for (int64_t c = 0; c < p.C; ++c) {
    copy_rows<T, VB>(p.x + (b * p.C + c) * plane, p.H, W, Wv, h0 - kHalo, h1 + kHalo, tile);
    for (int64_t s = 0; s < kScales; ++s) {
      const UvgWeights<T> k(p, s, c);
      bias_u[s] += k.bias_u;
      T* a = acc + s * rows * Wv;
      switch (s) {
        case 0: lambda_scale<T, VB, 1>(tile, Wv, rows, k, a); break;
        case 1: lambda_scale<T, VB, 2>(tile, Wv, rows, k, a); break;
        default: lambda_scale<T, VB, 3>(tile, Wv, rows, k, a);
      }
    }
  }
  for (int64_t s = 0; s < kScales; ++s) {
    for (int64_t i = 0; i < rows; ++i) {
      const T* a = acc + (s * rows + i) * Wv;
      T* o = out + ((b * kScales + s) * p.H + h0 + i) * W;
#pragma omp simd
      for (int64_t w = 0; w < W; ++w) o[w] = (a[w] + bias_u[s]) / T(p.C);
    }
  }
}

template <typename T>
using ForwardTask = void (*)(const Problem<T>&, int64_t, int64_t, int64_t, T*, T*, T*);

template <typename T>
void forward_task_baseline(const Problem<T>& p, int64_t b, int64_t h0, int64_t h1, T* tile, T* acc, T* out) {
  forward_task_impl<T, 16>(p, b, h0, h1, tile, acc, out);
}

#if defined(__x86_64__) && defined(__GNUC__)
template <typename T>
DIN_FAST_TARGET_AVX512 void forward_task_avx512(const Problem<T>& p, int64_t b, int64_t h0, int64_t h1, T* tile,
                                                T* acc, T* out) {
  forward_task_impl<T, 64>(p, b, h0, h1, tile, acc, out);
}
template <typename T>
DIN_FAST_TARGET_AVX2 void forward_task_avx2(const Problem<T>& p, int64_t b, int64_t h0, int64_t h1, T* tile, T* acc,
                                            T* out) {
  forward_task_impl<T, 32>(p, b, h0, h1, tile, acc, out);
}
#endif

// The forward task for the running CPU's widest vectors.
template <typename T>
ForwardTask<T> forward_task() {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (cpu_isa()) {
    case Isa::kAvx512: return &forward_task_avx512<T>;
    case Isa::kAvx2: return &forward_task_avx2<T>;
    case Isa::kBase: break;
  }
#endif
  return &forward_task_baseline<T>;
}

// Per scale, the column sums of the 3 dbias and 27 dweight terms (rows of width W): summing over
// rows first keeps the inner loops free of horizontal vector reductions (W is often under 8 vectors).
constexpr int64_t kColumnSums = 30;

// Scratch of one backward task: the padded x plane, the nine padded e planes (borders stay 0) and
// the column sums.
template <typename T>
struct BackwardScratch {
  std::vector<T> xp, e, cols;
  int64_t plane;  // elements of one padded plane
  BackwardScratch(int64_t H, int64_t W)
      : plane((H + 2 * kHalo) * (W + 2 * kHalo)) {
    xp.assign(plane, T(0));
    e.assign(9 * plane, T(0));
    cols.assign(kColumnSums * W, T(0));
  }
};

// One backward task: dweight[:, :, c], dbias[:, :, c] and dx[:, c] for channel c.
template <typename T>
DIN_FAST_INLINE void backward_channel_impl(const Problem<T>& p, const T* grad, int64_t c, T* xp, T* e, T* cols,
                                           int64_t padded_plane, T* dx, T* dweight, T* dbias) {
  const int64_t H = p.H, W = p.W, stride = p.stride(), plane = H * W;
  // Accumulate the parameter gradients in double: they sum B·H·W terms.
  double dw[kScales * 27] = {0}, db[kScales * 3] = {0};
  T k[kScales][27], kflip[kScales][27], bias[kScales][3];
  for (int64_t s = 0; s < kScales; ++s) {
    p.params(s, c, k[s], bias[s]);
    for (int64_t j = 0; j < 3; ++j) {
      for (int64_t t = 0; t < 9; ++t) kflip[s][j * 9 + t] = k[s][j * 9 + 8 - t];
    }
  }
  const T inv_c = T(1) / T(p.C);
  // Padded plane (s, j) of e, pointer at image (0, 0).
  auto e_at = [&](int64_t s, int64_t j) { return e + (s * 3 + j) * padded_plane + kHalo * stride + kHalo; };
  const T* x0 = xp + kHalo * stride + kHalo;
  for (int64_t b = 0; b < p.B; ++b) {
    pad_rows(p.x + (b * p.C + c) * plane, H, W, -kHalo, H + kHalo, xp);
    for (int64_t s = 0; s < kScales; ++s) {
      const int64_t d = s + 1;
      T* exx = e_at(s, 0);
      T* eyy = e_at(s, 1);
      T* exy = e_at(s, 2);
      std::fill(cols, cols + kColumnSums * W, T(0));
      for (int64_t h = 0; h < H; ++h) {
        const T* r1 = x0 + h * stride;
        const T* r0 = r1 - d * stride;
        const T* r2 = r1 + d * stride;
        const T* g = grad + ((b * kScales + s) * H + h) * W;
        T* ex = exx + h * stride;
        T* ey = eyy + h * stride;
        T* exyr = exy + h * stride;
#pragma omp simd
        for (int64_t w = 0; w < W; ++w) {
          const T gxx = stencil(r0, r1, r2, w, d, k[s], bias[s][0]);
          const T gyy = stencil(r0, r1, r2, w, d, k[s] + 9, bias[s][1]);
          const T gxy = stencil(r0, r1, r2, w, d, k[s] + 18, bias[s][2]);
          const T diff = gxx - gyy;
          const T root = std::sqrt(diff * diff + T(4) * (gxy * gxy));
          const T half = g[w] * inv_c * T(0.5);  // ∂/∂(gxx + gyy) and ∂/∂root
          const T q = half / root;               // root = 0: inf or NaN, as autograd's sqrt backward
          const T vx = half + q * diff, vy = half - q * diff, vxy = T(4) * q * gxy;
          ex[w] = vx;
          ey[w] = vy;
          exyr[w] = vxy;
          cols[w] += vx;
          cols[W + w] += vy;
          cols[2 * W + w] += vxy;
        }
      }
      // dweight[s, j, c, p, q] = Σ_{h,w} e_sj(h, w) · x(h + (p−1)d, w + (q−1)d), zero padding.
      for (int64_t t = 0; t < 9; ++t) {
        const int64_t offset = (t / 3 - 1) * d * stride + (t % 3 - 1) * d;
        for (int64_t h = 0; h < H; ++h) {
          const T* xr = x0 + h * stride + offset;
          const T* ex = exx + h * stride;
          const T* ey = eyy + h * stride;
          const T* exyr = exy + h * stride;
          T* cx = cols + (3 + t) * W;
          T* cy = cols + (12 + t) * W;
          T* cxy = cols + (21 + t) * W;
#pragma omp simd
          for (int64_t w = 0; w < W; ++w) {
            cx[w] += ex[w] * xr[w];
            cy[w] += ey[w] * xr[w];
            cxy[w] += exyr[w] * xr[w];
          }
        }
      }
      for (int64_t i = 0; i < kColumnSums; ++i) {
        double sum = 0;
        for (int64_t w = 0; w < W; ++w) sum += cols[i * W + w];
        (i < 3 ? db[s * 3 + i] : dw[s * 27 + i - 3]) += sum;
      }
    }
    // dx(h, w) = Σ_{s,j,p,q} k_sj[p][q] · e_sj(h − (p−1)d, w − (q−1)d): the flipped stencils on e.
    T* dxp = dx + (b * p.C + c) * plane;
    std::fill(dxp, dxp + plane, T(0));
    for (int64_t s = 0; s < kScales; ++s) {
      const int64_t d = s + 1;
      for (int64_t j = 0; j < 3; ++j) {
        for (int64_t h = 0; h < H; ++h) {
          const T* r1 = e_at(s, j) + h * stride;
          const T* r0 = r1 - d * stride;
          const T* r2 = r1 + d * stride;
          const T* kf = kflip[s] + j * 9;
          T* o = dxp + h * W;
#pragma omp simd
          for (int64_t w = 0; w < W; ++w) o[w] = stencil(r0, r1, r2, w, d, kf, o[w]);
        }
      }
    }
  }
  for (int64_t s = 0; s < kScales; ++s) {
    for (int64_t j = 0; j < 3; ++j) {
      dbias[(s * 3 + j) * p.C + c] = static_cast<T>(db[s * 3 + j]);
      for (int64_t t = 0; t < 9; ++t) dweight[((s * 3 + j) * p.C + c) * 9 + t] = static_cast<T>(dw[s * 27 + j * 9 + t]);
    }
  }
}

DIN_FAST_MULTIVERSION void backward_channel(const Problem<float>& p, const float* grad, int64_t c, float* xp,
                                            float* e, float* cols, int64_t padded_plane, float* dx, float* dweight,
                                            float* dbias) {
  backward_channel_impl(p, grad, c, xp, e, cols, padded_plane, dx, dweight, dbias);
}
DIN_FAST_MULTIVERSION void backward_channel(const Problem<double>& p, const double* grad, int64_t c, double* xp,
                                            double* e, double* cols, int64_t padded_plane, double* dx, double* dweight,
                                            double* dbias) {
  backward_channel_impl(p, grad, c, xp, e, cols, padded_plane, dx, dweight, dbias);
}

void check_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  check_feature(x, "x");
  TORCH_CHECK_VALUE(x.device().is_cpu(), "x must be a CPU tensor for the cpp implementation, got ", x.device());
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                    "x must be float32 or float64 for the cpp implementation, got ", x.scalar_type());
  const int64_t c = x.size(1);
  check_same(weight, "weight", x, "x", {3, 3, c, 3, 3});
  check_same(bias, "bias", x, "x", {3, 3, c});
}

template <typename T>
Problem<T> problem(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return {x.data_ptr<T>(), weight.data_ptr<T>(), bias.data_ptr<T>(), x.size(0), x.size(1), x.size(2), x.size(3)};
}

// Row blocks per image: about kBlockRows rows each, their count a multiple of what makes B · blocks
// divisible by the thread count (so at B = 1 two threads get equal halves, not 2 blocks against 1),
// but blocks of at least kMinBlockRows rows (thinner ones reload too much halo per row).
int64_t row_blocks(int64_t B, int64_t H, int64_t threads) {
  const int64_t m = threads / std::gcd(B, threads);
  const int64_t blocks = std::max<int64_t>(1, (H + kBlockRows * m / 2) / (kBlockRows * m)) * m;
  return std::min(blocks, std::max<int64_t>(1, H / kMinBlockRows));
}

at::Tensor mshf_cpu(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& bias_in) {
  check_args(x_in, weight_in, bias_in);
  const at::Tensor x = x_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  at::Tensor out = at::empty({x.size(0), kScales, x.size(2), x.size(3)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mshf_cpu", [&] {
    const Problem<scalar_t> p = problem<scalar_t>(x, weight, bias);
    const int64_t blocks = row_blocks(p.B, p.H, at::get_num_threads()), rows = (p.H + blocks - 1) / blocks;
    const int64_t Wv = forward_width(p.W);
    const ForwardTask<scalar_t> task_fn = forward_task<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, p.B * blocks, 1, [&](int64_t begin, int64_t end) {
      // The tile 64-byte aligned (row stride and kMargin are multiples of 64 bytes): aligned row copies.
      std::vector<scalar_t> tile_mem((rows + 2 * kHalo) * (Wv + 2 * kMargin) + 64 / sizeof(scalar_t));
      scalar_t* tile = reinterpret_cast<scalar_t*>((reinterpret_cast<uintptr_t>(tile_mem.data()) + 63) & ~uintptr_t(63));
      std::vector<scalar_t> acc(kScales * rows * Wv);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / blocks, h0 = (task % blocks) * rows;
        if (h0 < p.H) task_fn(p, b, h0, std::min(p.H, h0 + rows), tile, acc.data(), o);  // (rounding may leave none)
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mshf_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                                 const at::Tensor& weight_in,
                                                                 const at::Tensor& bias_in) {
  check_args(x_in, weight_in, bias_in);
  check_same(grad_in, "grad", x_in, "x", {x_in.size(0), kScales, x_in.size(2), x_in.size(3)});
  const at::Tensor grad = grad_in.contiguous(), x = x_in.contiguous(), weight = weight_in.contiguous(),
                   bias = bias_in.contiguous();
  at::Tensor dx = at::empty_like(x), dweight = at::empty_like(weight), dbias = at::empty_like(bias);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mshf_backward_cpu", [&] {
    const Problem<scalar_t> p = problem<scalar_t>(x, weight, bias);
    at::parallel_for(0, p.C, 1, [&](int64_t begin, int64_t end) {
      BackwardScratch<scalar_t> scratch(p.H, p.W);
      for (int64_t c = begin; c < end; ++c) {
        backward_channel(p, grad.data_ptr<scalar_t>(), c, scratch.xp.data(), scratch.e.data(), scratch.cols.data(),
                         scratch.plane,
                         dx.data_ptr<scalar_t>(), dweight.data_ptr<scalar_t>(), dbias.data_ptr<scalar_t>());
      }
    });
  });
  return {dx, dweight, dbias};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_mshf_cpp", &mshf_cpu);
  m.impl("_mshf_backward_cpp", &mshf_backward_cpu);
}

}  // namespace din_fast
