// C++ CPU kernels of `channel_attention_residual` (the tail of DeFiAN's RCAB;
// din_fast/ops/channel_attention_residual.py has the maths).
//
// Forward, on contiguous NCHW copies (other layouts are copied first):
//   pass 1 (per (b, c) plane): Σ_HW t;  the MLP per sample (channel_mlp.h) gives a = sigmoid(z);
//   pass 2 (per plane): y = u + a t.
// Backward:
//   pass 1 (per plane): Σ t and Σ g t in one read of both;  the MLP forward (a) and backward per sample
//   with dz = Σ(g t) a (1 − a), which gives every parameter gradient and dmean = ∂L/∂mean_HW(t);
//   pass 2 (per plane): dt = g a + dmean / HW and du = g, from one read of g.
// The plane loops are DIN_FAST_MULTIVERSION functions (the parallel_for lambdas would get only the
// baseline ISA). Small maps run on the calling thread (grain_for: ~32K elements per task), where
// waking the pool would cost more than the pass.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "channel_attention_residual.h"
#include "common.h"
#include "cpu/channel_mlp.h"
#include "cpu/kernel_utils.h"

namespace din_fast {
namespace {

template <typename T>
DIN_FAST_INLINE T plane_sum(const T* t, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += t[i];
  return sum;
}

// Σ t and Σ g t of one plane.
template <typename T>
DIN_FAST_INLINE void plane_sums(const T* t, const T* g, int64_t n, T* sum_t, T* sum_gt) {
  T s = 0, d = 0;
#pragma omp simd reduction(+ : s, d)
  for (int64_t i = 0; i < n; ++i) {
    s += t[i];
    d += g[i] * t[i];
  }
  *sum_t = s;
  *sum_gt = d;
}

template <typename T>
DIN_FAST_INLINE void residual_plane(T* y, const T* u, const T* t, T a, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = u[i] + a * t[i];
}

template <typename T>
DIN_FAST_INLINE void grad_plane(T* dt, T* du, const T* g, T a, T shift, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    dt[i] = g[i] * a + shift;
    du[i] = g[i];
  }
}

#define DIN_FAST_CAR_PLANES(T)                                                                              \
  DIN_FAST_MULTIVERSION T plane_sum_k(const T* t, int64_t n) { return plane_sum<T>(t, n); }                 \
  DIN_FAST_MULTIVERSION void plane_sums_k(const T* t, const T* g, int64_t n, T* sum_t, T* sum_gt) {         \
    plane_sums<T>(t, g, n, sum_t, sum_gt);                                                                  \
  }                                                                                                         \
  DIN_FAST_MULTIVERSION void residual_plane_k(T* y, const T* u, const T* t, T a, int64_t n) {               \
    residual_plane<T>(y, u, t, a, n);                                                                       \
  }                                                                                                         \
  DIN_FAST_MULTIVERSION void grad_plane_k(T* dt, T* du, const T* g, T a, T shift, int64_t n) {              \
    grad_plane<T>(dt, du, g, a, shift, n);                                                                  \
  }

DIN_FAST_CAR_PLANES(float)
DIN_FAST_CAR_PLANES(double)

struct Sizes {
  int64_t b, c, hw, r;
};

// a = sigmoid(MLP(mean)) per sample; hidden (B, R) keeps the pre-ReLU values for the backward.
template <typename T>
void attention(const Sizes& d, const T* mean, const T* w1, const T* b1, const T* w2, const T* b2, T* hidden, T* a) {
  for (int64_t b = 0; b < d.b; ++b) {
    T* z = a + b * d.c;
    channel_mlp_forward<T, T>(w1, b1, w2, b2, mean + b * d.c, 1, d.c, d.r, hidden + b * d.r, z);
    for (int64_t c = 0; c < d.c; ++c) z[c] = T(1) / (T(1) + std::exp(-z[c]));
  }
}

Sizes check(const at::Tensor& u, const at::Tensor& t, const at::Tensor& w1, const at::Tensor& b1,
            const at::Tensor& w2, const at::Tensor& b2) {
  const int64_t r = check_channel_attention_residual_args(u, t, w1, b1, w2, b2, check_cpu_float);
  return Sizes{u.size(0), u.size(1), u.size(2) * u.size(3), r};
}

at::Tensor channel_attention_residual_cpp(const at::Tensor& u_in, const at::Tensor& t_in, const at::Tensor& w1_in,
                                          const at::Tensor& b1_in, const at::Tensor& w2_in, const at::Tensor& b2_in) {
  const Sizes d = check(u_in, t_in, w1_in, b1_in, w2_in, b2_in);
  const at::Tensor u = u_in.contiguous(), t = t_in.contiguous(), w1 = w1_in.contiguous(), b1 = b1_in.contiguous(),
                   w2 = w2_in.contiguous(), b2 = b2_in.contiguous();
  at::Tensor y = at::empty_like(u);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "channel_attention_residual_cpp", [&] {
    using T = scalar_t;
    const T* tp = t.const_data_ptr<T>();
    const T* up = u.const_data_ptr<T>();
    T* yp = y.mutable_data_ptr<T>();
    std::vector<T> mean(d.b * d.c), hidden(d.b * d.r), a(d.b * d.c);
    const int64_t grain = grain_for(d.hw);
    at::parallel_for(0, d.b * d.c, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t pc = lo; pc < hi; ++pc) mean[pc] = plane_sum_k(tp + pc * d.hw, d.hw) / T(d.hw);
    });
    attention<T>(d, mean.data(), w1.const_data_ptr<T>(), b1.const_data_ptr<T>(), w2.const_data_ptr<T>(),
                 b2.const_data_ptr<T>(), hidden.data(), a.data());
    at::parallel_for(0, d.b * d.c, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t pc = lo; pc < hi; ++pc) {
        residual_plane_k(yp + pc * d.hw, up + pc * d.hw, tp + pc * d.hw, a[pc], d.hw);
      }
    });
  });
  return y;
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads channel_attention_residual_backward_cpp(const at::Tensor& grad, const at::Tensor& u_in,
                                              const at::Tensor& t_in, const at::Tensor& w1_in,
                                              const at::Tensor& b1_in, const at::Tensor& w2_in,
                                              const at::Tensor& b2_in) {
  const Sizes d = check(u_in, t_in, w1_in, b1_in, w2_in, b2_in);
  check_same(grad, "grad", u_in, "u", u_in.sizes());
  const at::Tensor g = grad.contiguous(), t = t_in.contiguous(), w1 = w1_in.contiguous(), b1 = b1_in.contiguous(),
                   w2 = w2_in.contiguous(), b2 = b2_in.contiguous();
  at::Tensor du = at::empty_like(g), dt = at::empty_like(t);
  at::Tensor dw1 = at::zeros_like(w1), db1 = at::zeros_like(b1), dw2 = at::zeros_like(w2), db2 = at::zeros_like(b2);
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "channel_attention_residual_backward_cpp", [&] {
    using T = scalar_t;
    const T* tp = t.const_data_ptr<T>();
    const T* gp = g.const_data_ptr<T>();
    const T* w1p = w1.const_data_ptr<T>();
    const T* w2p = w2.const_data_ptr<T>();
    std::vector<T> mean(d.b * d.c), sum_gt(d.b * d.c), hidden(d.b * d.r), a(d.b * d.c);
    const int64_t grain = grain_for(2 * d.hw);
    at::parallel_for(0, d.b * d.c, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t pc = lo; pc < hi; ++pc) {
        plane_sums_k(tp + pc * d.hw, gp + pc * d.hw, d.hw, &mean[pc], &sum_gt[pc]);
        mean[pc] /= T(d.hw);
      }
    });
    attention<T>(d, mean.data(), w1p, b1.const_data_ptr<T>(), w2p, b2.const_data_ptr<T>(), hidden.data(), a.data());
    // dz = Σ(g t) a (1 − a); the MLP backward turns it into the parameter gradients and dmean, whose
    // share of dt is dmean / HW at every pixel.
    std::vector<T> dz(d.c), shift(d.b * d.c);
    for (int64_t b = 0; b < d.b; ++b) {
      for (int64_t c = 0; c < d.c; ++c) {
        const T ac = a[b * d.c + c];
        dz[c] = sum_gt[b * d.c + c] * ac * (T(1) - ac);
      }
      channel_mlp_backward<T, T>(w1p, w2p, mean.data() + b * d.c, hidden.data() + b * d.r, dz.data(), 1, d.c, d.r,
                                 dw1.mutable_data_ptr<T>(), db1.mutable_data_ptr<T>(), dw2.mutable_data_ptr<T>(),
                                 db2.mutable_data_ptr<T>(), shift.data() + b * d.c);
    }
    T* dtp = dt.mutable_data_ptr<T>();
    T* dup = du.mutable_data_ptr<T>();
    at::parallel_for(0, d.b * d.c, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t pc = lo; pc < hi; ++pc) {
        grad_plane_k(dtp + pc * d.hw, dup + pc * d.hw, gp + pc * d.hw, a[pc], shift[pc] / T(d.hw), d.hw);
      }
    });
  });
  return {du, dt, dw1, db1, dw2, db2};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_channel_attention_residual_cpp", &channel_attention_residual_cpp);
  m.impl("_channel_attention_residual_backward_cpp", &channel_attention_residual_backward_cpp);
}

}  // namespace din_fast
