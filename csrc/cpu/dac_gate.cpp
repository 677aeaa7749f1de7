// C++ CPU kernels of `dac_gate` (DeFiAN's distribution alignment + sigmoid gate + residual;
// din_fast/ops/dac_gate.py has the maths).
//
// Forward: one reduction pass (per-plane mean and unbiased variance of x and v), the tiny FCs per batch,
// then one elementwise pass y = x + r ⊙ sigmoid(nv · scale_c + shift_c), nv = (v − μ_v)/σ_v.
//
// Backward: the same reduction pass; then a pass over (batch, pixel chunk) tasks that loops over all
// channels, writing dr, summing the per-channel ∂L/∂scale and ∂L/∂shift partials and the per-pixel
// ∂L/∂nv = Σ_c dz_c · scale_c (a chunk owns all channels of its pixels, so nothing is shared); then
// the FC backward per batch, and a last elementwise pass for dx and dv.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"
#include "cpu/channel_mlp.h"

namespace din_fast {
namespace {

constexpr double kEps = 1e-5;      // added to the unbiased variance (official DAC)
constexpr int64_t kChunk = 4096;   // pixels per backward task

// exp(x) for float in a form `#pragma omp simd` vectorises: Cody–Waite reduction x = n·ln2 + r,
// |r| ≤ ln2/2, exp(r) by its degree-7 Taylor polynomial (truncation < 1e-8 relative), times 2^n
// built in the exponent bits. x is clamped to [−87, 88], where 2^n stays a normal float.
DIN_FAST_INLINE float vexp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;  // ln2 = hi + lo
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
// float64 is the checking dtype: exact libm exp.
DIN_FAST_INLINE double vexp(double x) { return std::exp(x); }

template <typename T>
DIN_FAST_INLINE T sigmoid(T z) {
  return T(1) / (T(1) + vexp(-z));
}

template <typename T>
struct Problem {
  const T *x, *r, *v, *wm1, *wm2, *ws1, *ws2;
  int64_t B, C, R, N;  // N = H·W
};

// Statistics and FC outputs of one call, per batch (and channel), in double.
struct Stats {
  std::vector<double> mu_x, sd_x, mu_v, sd_v;         // (B, C), (B, C), (B), (B)
  std::vector<double> hid_m, hid_s, shift, scale;     // pre-ReLU hidden (B, R); FC outputs (B, C)
};

// Mean and sqrt(unbiased variance + eps) of n values, one pass with sums shifted by the first value
// (which keeps the variance free of the cancellation of raw Σx² − (Σx)²/n).
template <typename T>
DIN_FAST_INLINE void plane_stats(const T* t, int64_t n, double* mean, double* sd) {
  const T k = t[0];
  double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(t[i] - k);
    s1 += d;
    s2 += d * d;
  }
  *mean = static_cast<double>(k) + s1 / n;
  *sd = std::sqrt(std::max(s2 - s1 * s1 / n, 0.0) / (n - 1) + kEps);
}

DIN_FAST_MULTIVERSION void plane_stats_mv(const float* t, int64_t n, double* mean, double* sd) {
  plane_stats(t, n, mean, sd);
}
DIN_FAST_MULTIVERSION void plane_stats_mv(const double* t, int64_t n, double* mean, double* sd) {
  plane_stats(t, n, mean, sd);
}

template <typename T>
Stats statistics(const Problem<T>& p) {
  Stats s;
  const int64_t B = p.B, C = p.C, R = p.R;
  s.mu_x.resize(B * C);
  s.sd_x.resize(B * C);
  s.mu_v.resize(B);
  s.sd_v.resize(B);
  at::parallel_for(0, B * C + B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (i < B * C) {
        plane_stats_mv(p.x + i * p.N, p.N, &s.mu_x[i], &s.sd_x[i]);
      } else {
        plane_stats_mv(p.v + (i - B * C) * p.N, p.N, &s.mu_v[i - B * C], &s.sd_v[i - B * C]);
      }
    }
  });
  s.hid_m.resize(B * R);
  s.hid_s.resize(B * R);
  s.shift.resize(B * C);
  s.scale.resize(B * C);
  for (int64_t b = 0; b < B; ++b) {
    // out = W2 relu(W1 in), bias-free (channel_mlp.h with K = 1)
    channel_mlp_forward<T, double>(p.wm1, nullptr, p.wm2, nullptr, &s.mu_x[b * C], 1, C, R, &s.hid_m[b * R],
                                   &s.shift[b * C]);
    channel_mlp_forward<T, double>(p.ws1, nullptr, p.ws2, nullptr, &s.sd_x[b * C], 1, C, R, &s.hid_s[b * R],
                                   &s.scale[b * C]);
  }
  return s;
}

// y = x + r ⊙ sigmoid(nv · scale + shift) on one plane.
template <typename T>
DIN_FAST_INLINE void gate_plane(const T* x, const T* r, const T* v, T mu_v, T inv_sd_v, T scale, T shift,
                                int64_t n, T* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] + r[i] * sigmoid((v[i] - mu_v) * inv_sd_v * scale + shift);
}

DIN_FAST_MULTIVERSION void gate_plane_mv(const float* x, const float* r, const float* v, float mu_v, float inv_sd_v,
                                         float scale, float shift, int64_t n, float* y) {
  gate_plane(x, r, v, mu_v, inv_sd_v, scale, shift, n, y);
}
DIN_FAST_MULTIVERSION void gate_plane_mv(const double* x, const double* r, const double* v, double mu_v,
                                         double inv_sd_v, double scale, double shift, int64_t n, double* y) {
  gate_plane(x, r, v, mu_v, inv_sd_v, scale, shift, n, y);
}

// One channel of one backward chunk: writes dr, adds dz · scale to dnv, returns Σ dz · nv and Σ dz.
template <typename T>
DIN_FAST_INLINE void gate_grad_chunk(const T* g, const T* r, const T* v, T mu_v, T inv_sd_v, T scale, T shift,
                                     int64_t n, T* dr, T* dnv, double* dscale, double* dshift) {
  T s_nv = 0, s_dz = 0;
#pragma omp simd reduction(+ : s_nv, s_dz)
  for (int64_t i = 0; i < n; ++i) {
    const T nv = (v[i] - mu_v) * inv_sd_v;
    const T a = sigmoid(nv * scale + shift);
    dr[i] = g[i] * a;
    const T dz = g[i] * r[i] * a * (T(1) - a);
    dnv[i] += dz * scale;
    s_nv += dz * nv;
    s_dz += dz;
  }
  *dscale += s_nv;
  *dshift += s_dz;
}

DIN_FAST_MULTIVERSION void gate_grad_chunk_mv(const float* g, const float* r, const float* v, float mu_v,
                                              float inv_sd_v, float scale, float shift, int64_t n, float* dr,
                                              float* dnv, double* dscale, double* dshift) {
  gate_grad_chunk(g, r, v, mu_v, inv_sd_v, scale, shift, n, dr, dnv, dscale, dshift);
}
DIN_FAST_MULTIVERSION void gate_grad_chunk_mv(const double* g, const double* r, const double* v, double mu_v,
                                              double inv_sd_v, double scale, double shift, int64_t n, double* dr,
                                              double* dnv, double* dscale, double* dshift) {
  gate_grad_chunk(g, r, v, mu_v, inv_sd_v, scale, shift, n, dr, dnv, dscale, dshift);
}

// dx = g + dμ/N + dσ · (x − μ)/(σ (N − 1)) on one plane.
template <typename T>
DIN_FAST_INLINE void input_grad_plane(const T* g, const T* x, T mu, T a, T b, int64_t n, T* dx) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = g[i] + a + b * (x[i] - mu);
}

void check_args(const at::Tensor& x, const at::Tensor& r, const at::Tensor& v, const at::Tensor& wm1,
                const at::Tensor& wm2, const at::Tensor& ws1, const at::Tensor& ws2) {
  check_feature(x, "x");
  TORCH_CHECK_VALUE(x.device().is_cpu(), "x must be a CPU tensor for the cpp implementation, got ", x.device());
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                    "x must be float32 or float64 for the cpp implementation, got ", x.scalar_type());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK_VALUE(H * W > 1, "x must have H*W > 1 (the unbiased variance of one pixel is undefined), got shape ",
                    x.sizes());
  check_same(r, "r", x, "x", x.sizes());
  check_same(v, "v", x, "x", {B, 1, H, W});
  TORCH_CHECK_VALUE(wm1.dim() == 4 && wm1.size(0) > 0, "w_mean1 must have shape (R, ", C, ", 1, 1) with R > 0, got ",
                    wm1.sizes());
  const int64_t R = wm1.size(0);
  check_same(wm1, "w_mean1", x, "x", {R, C, 1, 1});
  check_same(wm2, "w_mean2", x, "x", {C, R, 1, 1});
  check_same(ws1, "w_std1", x, "x", {R, C, 1, 1});
  check_same(ws2, "w_std2", x, "x", {C, R, 1, 1});
}

template <typename T>
Problem<T> problem(const at::Tensor& x, const at::Tensor& r, const at::Tensor& v, const at::Tensor& wm1,
                   const at::Tensor& wm2, const at::Tensor& ws1, const at::Tensor& ws2) {
  return {x.data_ptr<T>(),   r.data_ptr<T>(),   v.data_ptr<T>(), wm1.data_ptr<T>(), wm2.data_ptr<T>(),
          ws1.data_ptr<T>(), ws2.data_ptr<T>(), x.size(0),       x.size(1),         wm1.size(0),
          x.size(2) * x.size(3)};
}

at::Tensor dac_gate_cpu(const at::Tensor& x_in, const at::Tensor& r_in, const at::Tensor& v_in,
                        const at::Tensor& wm1_in, const at::Tensor& wm2_in, const at::Tensor& ws1_in,
                        const at::Tensor& ws2_in) {
  check_args(x_in, r_in, v_in, wm1_in, wm2_in, ws1_in, ws2_in);
  const at::Tensor x = x_in.contiguous(), r = r_in.contiguous(), v = v_in.contiguous(), wm1 = wm1_in.contiguous(),
                   wm2 = wm2_in.contiguous(), ws1 = ws1_in.contiguous(), ws2 = ws2_in.contiguous();
  at::Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dac_gate_cpu", [&] {
    using T = scalar_t;
    const Problem<T> p = problem<T>(x, r, v, wm1, wm2, ws1, ws2);
    const Stats s = statistics(p);
    T* out = y.data_ptr<T>();
    at::parallel_for(0, p.B * p.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / p.C;
        gate_plane_mv(p.x + i * p.N, p.r + i * p.N, p.v + b * p.N, static_cast<T>(s.mu_v[b]),
                      static_cast<T>(1.0 / s.sd_v[b]), static_cast<T>(s.scale[i]), static_cast<T>(s.shift[i]), p.N,
                      out + i * p.N);
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> dac_gate_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& r_in, const at::Tensor& v_in,
    const at::Tensor& wm1_in, const at::Tensor& wm2_in, const at::Tensor& ws1_in, const at::Tensor& ws2_in) {
  check_args(x_in, r_in, v_in, wm1_in, wm2_in, ws1_in, ws2_in);
  check_same(grad_in, "grad", x_in, "x", x_in.sizes());
  const at::Tensor g = grad_in.contiguous(), x = x_in.contiguous(), r = r_in.contiguous(), v = v_in.contiguous(),
                   wm1 = wm1_in.contiguous(), wm2 = wm2_in.contiguous(), ws1 = ws1_in.contiguous(),
                   ws2 = ws2_in.contiguous();
  at::Tensor dx = at::empty_like(x), dr = at::empty_like(r), dv = at::empty_like(v);
  at::Tensor dwm1 = at::empty_like(wm1), dwm2 = at::empty_like(wm2), dws1 = at::empty_like(ws1),
             dws2 = at::empty_like(ws2);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dac_gate_backward_cpu", [&] {
    using T = scalar_t;
    const Problem<T> p = problem<T>(x, r, v, wm1, wm2, ws1, ws2);
    const int64_t B = p.B, C = p.C, R = p.R, N = p.N;
    const Stats s = statistics(p);
    const int64_t chunks = (N + kChunk - 1) / kChunk;
    // Per (batch, chunk): C partial Σ dz·nv, C partial Σ dz, then Σ dnv and Σ dnv·nv.
    const int64_t slots = 2 * C + 2;
    std::vector<double> partial(B * chunks * slots, 0.0);
    T* dnv = dv.data_ptr<T>();  // holds ∂L/∂nv until the last pass turns it into ∂L/∂v
    const T* gp = g.data_ptr<T>();
    T* drp = dr.data_ptr<T>();
    at::parallel_for(0, B * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / chunks, i0 = (task % chunks) * kChunk, n = std::min(kChunk, N - i0);
        const T mu_v = static_cast<T>(s.mu_v[b]), inv_sd_v = static_cast<T>(1.0 / s.sd_v[b]);
        double* part = &partial[task * slots];
        T* dnv_chunk = dnv + b * N + i0;
        const T* v_chunk = p.v + b * N + i0;
        std::fill(dnv_chunk, dnv_chunk + n, T(0));
        for (int64_t c = 0; c < C; ++c) {
          const int64_t off = (b * C + c) * N + i0;
          gate_grad_chunk_mv(gp + off, p.r + off, v_chunk, mu_v, inv_sd_v, static_cast<T>(s.scale[b * C + c]),
                             static_cast<T>(s.shift[b * C + c]), n, drp + off, dnv_chunk, &part[c], &part[C + c]);
        }
        double s1 = 0, s2 = 0;
        for (int64_t i = 0; i < n; ++i) {
          s1 += dnv_chunk[i];
          s2 += static_cast<double>(dnv_chunk[i]) * ((v_chunk[i] - mu_v) * inv_sd_v);
        }
        part[2 * C] = s1;
        part[2 * C + 1] = s2;
      }
    });
    // Per batch: reduce the chunks, then the FC backward (double accumulation over the batch).
    std::vector<double> gwm1(R * C, 0.0), gwm2(C * R, 0.0), gws1(R * C, 0.0), gws2(C * R, 0.0);
    std::vector<double> d_mu(B * C), d_sd(B * C), sum_dnv(B, 0.0), sum_dnv_nv(B, 0.0);
    std::vector<double> d_scale(C), d_shift(C);
    for (int64_t b = 0; b < B; ++b) {
      std::fill(d_scale.begin(), d_scale.end(), 0.0);
      std::fill(d_shift.begin(), d_shift.end(), 0.0);
      for (int64_t k = 0; k < chunks; ++k) {
        const double* part = &partial[(b * chunks + k) * slots];
        for (int64_t c = 0; c < C; ++c) {
          d_scale[c] += part[c];
          d_shift[c] += part[C + c];
        }
        sum_dnv[b] += part[2 * C];
        sum_dnv_nv[b] += part[2 * C + 1];
      }
      channel_mlp_backward<T, double>(p.wm1, p.wm2, &s.mu_x[b * C], &s.hid_m[b * R], d_shift.data(), 1, C, R,
                                      gwm1.data(), nullptr, gwm2.data(), nullptr, &d_mu[b * C]);
      channel_mlp_backward<T, double>(p.ws1, p.ws2, &s.sd_x[b * C], &s.hid_s[b * R], d_scale.data(), 1, C, R,
                                      gws1.data(), nullptr, gws2.data(), nullptr, &d_sd[b * C]);
    }
    auto store = [](const std::vector<double>& from, at::Tensor& to) {
      T* t = to.data_ptr<T>();
      for (size_t i = 0; i < from.size(); ++i) t[i] = static_cast<T>(from[i]);
    };
    store(gwm1, dwm1);
    store(gwm2, dwm2);
    store(gws1, dws1);
    store(gws2, dws2);
    // dx per plane; dv = (dnv − mean(dnv) − nv · Σ(dnv·nv)/(N − 1)) / σ_v per batch.
    T* dxp = dx.data_ptr<T>();
    at::parallel_for(0, B * C + B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (i < B * C) {
          const double mu = s.mu_x[i], a = d_mu[i] / N, k = d_sd[i] / (s.sd_x[i] * (N - 1));
          input_grad_plane(gp + i * N, p.x + i * N, static_cast<T>(mu), static_cast<T>(a), static_cast<T>(k), N,
                           dxp + i * N);
          continue;
        }
        const int64_t b = i - B * C;
        const T mu_v = static_cast<T>(s.mu_v[b]), inv_sd_v = static_cast<T>(1.0 / s.sd_v[b]);
        const T mean_dnv = static_cast<T>(sum_dnv[b] / N), k = static_cast<T>(sum_dnv_nv[b] / (N - 1));
        T* d = dnv + b * N;
        const T* vb = p.v + b * N;
        for (int64_t j = 0; j < N; ++j) {
          const T nv = (vb[j] - mu_v) * inv_sd_v;
          d[j] = (d[j] - mean_dnv - nv * k) * inv_sd_v;
        }
      }
    });
  });
  return {dx, dr, dv, dwm1, dwm2, dws1, dws2};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_dac_gate_cpp", &dac_gate_cpu);
  m.impl("_dac_gate_backward_cpp", &dac_gate_backward_cpu);
}

}  // namespace din_fast
