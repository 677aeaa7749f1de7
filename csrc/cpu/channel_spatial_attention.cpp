// DRFN's channel attention, spatial attention and group residual on CPU (one op, few passes over x).
//
// Forward, x (B, C, H, W) read as contiguous NCHW:
//   pass 1 (per channel plane): mean and max over H x W; the tiny MLP gives a = sigmoid(z) per (b, c);
//   pass 2 (per pixel block, channels streamed): mean and max over channels of x' = a x -> (B, 2, H, W);
//   7x7 conv + sigmoid on that two-channel map -> s (B, H, W) (small);
//   pass 3 (per channel plane): y = s a x + skip.
// x' is never written. Backward recomputes the statistics; ds = sum_c g x' needs no s, so it is
// gathered in the same pass as the channel statistics:
//   pass 1 as forward (and the spatial argmax per plane);
//   pass 2: channel mean / max / argmax of x' and ds = sum_c g x' per pixel; conv, s, its backward;
//   pass 3 (per plane): dx' = g s + dmean / C + [c = argmax] dmax, da_c = sum dx' x, dx = a dx';
//   MLP backward per batch; pass 4: dx += dmean_HW / HW (+ dmax_HW at the argmax).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common.h"
#include "cpu/channel_mlp.h"

namespace din_fast {
namespace {

constexpr int64_t kTaps = 7;
constexpr int64_t kPad = 3;
constexpr int64_t kPixelBlock = 256;  // pixels per work item of the channel-streaming pass

template <typename T>
inline T sigmoid(T v) {
  return T(1) / (T(1) + std::exp(-v));
}

struct Sizes {
  int64_t b, c, h, w, r;
  int64_t hw() const { return h * w; }
};

// The row loops of the passes, compiled per ISA level (DIN_FAST_MULTIVERSION, common.h): the
// parallel_for lambdas call these, since a lambda body would get only the baseline build.
template <typename T>
DIN_FAST_INLINE void plane_reduce(const T* p, int64_t n, T* sum_out, T* max_out) {
  T sum = 0, best = p[0];
#pragma omp simd reduction(+ : sum) reduction(max : best)
  for (int64_t i = 0; i < n; ++i) {
    sum += p[i];
    best = p[i] > best ? p[i] : best;  // (the select form vectorises without -ffinite-math-only)
  }
  *sum_out = sum;
  *max_out = best;
}

template <typename T>
DIN_FAST_INLINE void pixel_accumulate(const T* xp, T ac, int64_t n, T* sum, T* best) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T v = ac * xp[i];
    sum[i] += v;
    best[i] = v > best[i] ? v : best[i];
  }
}

template <typename T>
DIN_FAST_INLINE void pixel_accumulate_grad(const T* xp, const T* gp, T ac, int32_t c, int64_t n, T* sum, T* best,
                                           T* dot, int32_t* arg) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T v = ac * xp[i];
    sum[i] += v;
    dot[i] += gp[i] * v;
    const bool more = v > best[i];
    arg[i] = more ? c : arg[i];
    best[i] = more ? v : best[i];
  }
}

template <typename T>
DIN_FAST_INLINE void apply_row(T* yp, const T* sp, const T* xp, const T* kp, T ac, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) yp[i] = sp[i] * ac * xp[i] + kp[i];
}

// dx' = g s + dmean / C + [arg = c] dmax; out = a dx'; returns sum dx' x.
template <typename T>
DIN_FAST_INLINE T input_grad_row(T* out, const T* xr, const T* gr, const T* sp, const T* dmean, const T* dmax,
                                 const int32_t* arg, int32_t c, T ac, T inv_c, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    const T dxq = gr[i] * sp[i] + dmean[i] * inv_c + (arg[i] == c ? dmax[i] : T(0));
    acc += dxq * xr[i];
    out[i] = ac * dxq;
  }
  return acc;
}

template <typename T>
DIN_FAST_INLINE void add_row(T* out, T shift, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] += shift;
}

#define DIN_FAST_CSA_ROWS(T)                                                                                  \
  DIN_FAST_MULTIVERSION void plane_reduce_k(const T* p, int64_t n, T* sum, T* mx) {                           \
    plane_reduce<T>(p, n, sum, mx);                                                                           \
  }                                                                                                           \
  DIN_FAST_MULTIVERSION void pixel_accumulate_k(const T* xp, T ac, int64_t n, T* sum, T* best) {              \
    pixel_accumulate<T>(xp, ac, n, sum, best);                                                                \
  }                                                                                                           \
  DIN_FAST_MULTIVERSION void pixel_accumulate_grad_k(const T* xp, const T* gp, T ac, int32_t c, int64_t n,     \
                                                     T* sum, T* best, T* dot, int32_t* arg) {                 \
    pixel_accumulate_grad<T>(xp, gp, ac, c, n, sum, best, dot, arg);                                          \
  }                                                                                                           \
  DIN_FAST_MULTIVERSION void apply_row_k(T* yp, const T* sp, const T* xp, const T* kp, T ac, int64_t n) {     \
    apply_row<T>(yp, sp, xp, kp, ac, n);                                                                      \
  }                                                                                                           \
  DIN_FAST_MULTIVERSION T input_grad_row_k(T* out, const T* xr, const T* gr, const T* sp, const T* dmean,      \
                                           const T* dmax, const int32_t* arg, int32_t c, T ac, T inv_c,       \
                                           int64_t n) {                                                       \
    return input_grad_row<T>(out, xr, gr, sp, dmean, dmax, arg, c, ac, inv_c, n);                             \
  }                                                                                                           \
  DIN_FAST_MULTIVERSION void add_row_k(T* out, T shift, int64_t n) { add_row<T>(out, shift, n); }

DIN_FAST_CSA_ROWS(float)
DIN_FAST_CSA_ROWS(double)

// Pass 1: per (b, c) plane mean and max into stats (B, 2, C), and the first position of the max.
template <typename T>
void plane_stats(const Sizes& d, const T* x, T* stats, int64_t* argmax) {
  at::parallel_for(0, d.b * d.c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t pc = lo; pc < hi; ++pc) {
      const T* p = x + pc * d.hw();
      T sum, best;
      plane_reduce_k(p, d.hw(), &sum, &best);
      const int64_t b = pc / d.c, c = pc % d.c;
      stats[b * 2 * d.c + c] = sum / T(d.hw());
      stats[(b * 2 + 1) * d.c + c] = best;
      if (argmax != nullptr) argmax[pc] = std::find(p, p + d.hw(), best) - p;
    }
  });
}

// The channel MLP per batch (channel_mlp.h, K = 2): z = W2 relu(W1 avg + b1) + b2 + W2 relu(W1 max + b1) + b2,
// a = sigmoid(z). stats (B, 2, C) holds avg and max; hidden (B, 2, R) keeps W1 t + b1 for the backward.
template <typename T>
void channel_mlp(const Sizes& d, const T* stats, const T* w1, const T* b1, const T* w2, const T* b2, T* hidden,
                 T* a) {
  for (int64_t b = 0; b < d.b; ++b) {
    T* z = a + b * d.c;
    channel_mlp_forward<T, T>(w1, b1, w2, b2, stats + b * 2 * d.c, 2, d.c, d.r, hidden + b * 2 * d.r, z);
    for (int64_t c = 0; c < d.c; ++c) z[c] = sigmoid(z[c]);
  }
}

// Pass 2: per pixel, channel mean and max of x' = a x (pooled (B, 2, HW)) and, if g is given, the first
// channel of the max and ds = sum_c g x'.
template <typename T>
void pixel_stats(const Sizes& d, const T* x, const T* a, T* pooled, const T* g, int32_t* argmax, T* ds) {
  const int64_t blocks = (d.hw() + kPixelBlock - 1) / kPixelBlock;
  at::parallel_for(0, d.b * blocks, 1, [&](int64_t lo, int64_t hi) {
    T sum[kPixelBlock], best[kPixelBlock], dot[kPixelBlock];
    int32_t arg[kPixelBlock];
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t b = item / blocks, p0 = (item % blocks) * kPixelBlock;
      const int64_t n = std::min(kPixelBlock, d.hw() - p0);
      for (int64_t i = 0; i < n; ++i) {
        sum[i] = 0;
        best[i] = -std::numeric_limits<T>::infinity();
        dot[i] = 0;
        arg[i] = 0;
      }
      for (int64_t c = 0; c < d.c; ++c) {
        const T ac = a[b * d.c + c];
        const T* xp = x + (b * d.c + c) * d.hw() + p0;
        if (g == nullptr) {
          pixel_accumulate_k(xp, ac, n, sum, best);
        } else {
          pixel_accumulate_grad_k(xp, g + (b * d.c + c) * d.hw() + p0, ac, static_cast<int32_t>(c), n, sum, best,
                                  dot, arg);
        }
      }
      T* pm = pooled + b * 2 * d.hw() + p0;
      for (int64_t i = 0; i < n; ++i) {
        pm[i] = sum[i] / T(d.c);
        pm[d.hw() + i] = best[i];
      }
      if (g != nullptr) {
        for (int64_t i = 0; i < n; ++i) {
          argmax[b * d.hw() + p0 + i] = arg[i];
          ds[b * d.hw() + p0 + i] = dot[i];
        }
      }
    }
  });
}

// s = sigmoid(conv7x7(pooled) + bias), zero padding; per batch image (B, HW).
template <typename T>
void spatial_gate(const Sizes& d, const T* pooled, const T* w, T bias, T* s) {
  at::parallel_for(0, d.b * d.h, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t b = row / d.h, y = row % d.h;
      T* out = s + b * d.hw() + y * d.w;
      for (int64_t xx = 0; xx < d.w; ++xx) out[xx] = bias;
      for (int64_t k = 0; k < 2; ++k) {
        const T* map = pooled + (b * 2 + k) * d.hw();
        for (int64_t dy = 0; dy < kTaps; ++dy) {
          const int64_t yy = y + dy - kPad;
          if (yy < 0 || yy >= d.h) continue;
          const T* src = map + yy * d.w;
          for (int64_t dx = 0; dx < kTaps; ++dx) {
            const T wt = w[(k * kTaps + dy) * kTaps + dx];
            const int64_t x0 = std::max<int64_t>(0, kPad - dx), x1 = std::min<int64_t>(d.w, d.w + kPad - dx);
            const T* shifted = src + dx - kPad;
#pragma omp simd
            for (int64_t xx = x0; xx < x1; ++xx) out[xx] += wt * shifted[xx];
          }
        }
      }
      for (int64_t xx = 0; xx < d.w; ++xx) out[xx] = sigmoid(out[xx]);
    }
  });
}

// y = s a x + skip per plane.
template <typename T>
void apply(const Sizes& d, const T* x, const T* skip, const T* a, const T* s, T* y) {
  at::parallel_for(0, d.b * d.c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t pc = lo; pc < hi; ++pc) {
      const T ac = a[pc];
      const T* sp = s + (pc / d.c) * d.hw();
      const T* xp = x + pc * d.hw();
      const T* kp = skip + pc * d.hw();
      apply_row_k(y + pc * d.hw(), sp, xp, kp, ac, d.hw());
    }
  });
}

template <typename T>
void forward_impl(const Sizes& d, const at::Tensor& x, const at::Tensor& skip, const at::Tensor& w1,
                  const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& ws,
                  const at::Tensor& b_sa, at::Tensor& y) {
  std::vector<T> stats(d.b * 2 * d.c), hidden(d.b * 2 * d.r), a(d.b * d.c);
  std::vector<T> pooled(d.b * 2 * d.hw()), s(d.b * d.hw());
  const T* xp = x.const_data_ptr<T>();
  plane_stats<T>(d, xp, stats.data(), nullptr);
  channel_mlp<T>(d, stats.data(), w1.const_data_ptr<T>(), b1.const_data_ptr<T>(), w2.const_data_ptr<T>(),
                 b2.const_data_ptr<T>(), hidden.data(), a.data());
  pixel_stats<T>(d, xp, a.data(), pooled.data(), nullptr, nullptr, nullptr);
  spatial_gate<T>(d, pooled.data(), ws.const_data_ptr<T>(), b_sa.item<T>(), s.data());
  apply<T>(d, xp, skip.const_data_ptr<T>(), a.data(), s.data(), y.mutable_data_ptr<T>());
}

template <typename T>
void backward_impl(const Sizes& d, const at::Tensor& g, const at::Tensor& x, const at::Tensor& w1,
                   const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& ws,
                   const at::Tensor& b_sa, at::Tensor& dx, at::Tensor& dw1, at::Tensor& db1, at::Tensor& dw2,
                   at::Tensor& db2, at::Tensor& dws, at::Tensor& dbs) {
  const int64_t hw = d.hw();
  std::vector<T> stats(d.b * 2 * d.c), hidden(d.b * 2 * d.r), a(d.b * d.c);
  std::vector<int64_t> plane_arg(d.b * d.c);
  std::vector<int32_t> pixel_arg(d.b * hw);
  std::vector<T> pooled(d.b * 2 * hw), s(d.b * hw), ds(d.b * hw), dpooled(d.b * 2 * hw, T(0));
  const T* xp = x.const_data_ptr<T>();
  const T* gp = g.const_data_ptr<T>();
  const T* w1p = w1.const_data_ptr<T>();
  const T* w2p = w2.const_data_ptr<T>();
  const T* wsp = ws.const_data_ptr<T>();
  plane_stats<T>(d, xp, stats.data(), plane_arg.data());
  channel_mlp<T>(d, stats.data(), w1p, b1.const_data_ptr<T>(), w2p, b2.const_data_ptr<T>(),
                 hidden.data(), a.data());
  pixel_stats<T>(d, xp, a.data(), pooled.data(), gp, pixel_arg.data(), ds.data());
  spatial_gate<T>(d, pooled.data(), wsp, b_sa.item<T>(), s.data());
  // ds -> dlogit = ds s (1 - s); conv backward: dpooled (transposed conv), dw_sa, db_sa.
  for (int64_t i = 0; i < d.b * hw; ++i) ds[i] *= s[i] * (T(1) - s[i]);
  T* dwsp = dws.mutable_data_ptr<T>();
  T dbias = 0;
  for (int64_t b = 0; b < d.b; ++b) {
    const T* dl = ds.data() + b * hw;
    // The reference multiplies every dlogit by every tap, the zero padding's included, so one non-finite
    // dlogit makes every tap's gradient non-finite; the loops below skip the padding, and 0 · Σ dlogit
    // (+0 when all are finite) restores that.
    T dl_sum = 0;
    for (int64_t i = 0; i < hw; ++i) dl_sum += dl[i];
    dbias += dl_sum;
    for (int64_t k = 0; k < 2; ++k) {
      const T* map = pooled.data() + (b * 2 + k) * hw;
      T* dmap = dpooled.data() + (b * 2 + k) * hw;
      for (int64_t dy = 0; dy < kTaps; ++dy) {
        for (int64_t dxx = 0; dxx < kTaps; ++dxx) {
          const T wt = wsp[(k * kTaps + dy) * kTaps + dxx];
          T acc = 0;
          const int64_t y0 = std::max<int64_t>(0, kPad - dy), y1 = std::min<int64_t>(d.h, d.h + kPad - dy);
          const int64_t x0 = std::max<int64_t>(0, kPad - dxx), x1 = std::min<int64_t>(d.w, d.w + kPad - dxx);
          for (int64_t yy = y0; yy < y1; ++yy) {
            const T* dlr = dl + yy * d.w;
            const T* mr = map + (yy + dy - kPad) * d.w + dxx - kPad;
            T* dmr = dmap + (yy + dy - kPad) * d.w + dxx - kPad;
            T row = 0;
#pragma omp simd reduction(+ : row)
            for (int64_t xx = x0; xx < x1; ++xx) row += dlr[xx] * mr[xx];
            acc += row;
#pragma omp simd
            for (int64_t xx = x0; xx < x1; ++xx) dmr[xx] += wt * dlr[xx];
          }
          dwsp[(k * kTaps + dy) * kTaps + dxx] += acc + T(0) * dl_sum;
        }
      }
    }
  }
  dbs.fill_(dbias);
  // Pass 3: dx' per element, da per plane, dx = a dx'.
  std::vector<T> da(d.b * d.c);
  T* dxp = dx.mutable_data_ptr<T>();
  at::parallel_for(0, d.b * d.c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t pc = lo; pc < hi; ++pc) {
      const int64_t b = pc / d.c, c = pc % d.c;
      const T ac = a[pc];
      const T* sp = s.data() + b * hw;
      const T* dmean = dpooled.data() + b * 2 * hw;
      const T* dmax = dmean + hw;
      da[pc] = input_grad_row_k(dxp + pc * hw, xp + pc * hw, gp + pc * hw, sp, dmean, dmax,
                                pixel_arg.data() + b * hw, static_cast<int32_t>(c), ac, T(1) / T(d.c), hw);
    }
  });
  // MLP backward per batch (tiny), then pass 4: the pooled statistics' share of dx.
  T* dw1p = dw1.mutable_data_ptr<T>();
  T* db1p = db1.mutable_data_ptr<T>();
  T* dw2p = dw2.mutable_data_ptr<T>();
  T* db2p = db2.mutable_data_ptr<T>();
  std::vector<T> dstat(d.b * 2 * d.c), dz(d.c);
  for (int64_t b = 0; b < d.b; ++b) {
    for (int64_t c = 0; c < d.c; ++c) {
      const T ac = a[b * d.c + c];
      dz[c] = da[b * d.c + c] * ac * (T(1) - ac);
    }
    channel_mlp_backward<T, T>(w1p, w2p, stats.data() + b * 2 * d.c, hidden.data() + b * 2 * d.r, dz.data(), 2, d.c,
                               d.r, dw1p, db1p, dw2p, db2p, dstat.data() + b * 2 * d.c);
  }
  at::parallel_for(0, d.b * d.c, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t pc = lo; pc < hi; ++pc) {
      const int64_t b = pc / d.c, c = pc % d.c;
      const T shift = dstat[b * 2 * d.c + c] / T(hw);
      T* out = dxp + pc * hw;
      add_row_k(out, shift, hw);
      out[plane_arg[pc]] += dstat[(b * 2 + 1) * d.c + c];
    }
  });
}

Sizes check(const at::Tensor& x, const at::Tensor& skip, const at::Tensor& w_ca1, const at::Tensor& b_ca1,
            const at::Tensor& w_ca2, const at::Tensor& b_ca2, const at::Tensor& w_sa, const at::Tensor& b_sa) {
  check_feature(x, "x");
  check_same(skip, "skip", x, "x", x.sizes());
  const int64_t r = check_channel_mlp(x, "x", w_ca1, "w_ca1", b_ca1, "b_ca1", w_ca2, "w_ca2", b_ca2, "b_ca2");
  check_same(w_sa, "w_sa", x, "x", {1, 2, kTaps, kTaps});
  check_same(b_sa, "b_sa", x, "x", {1});
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                    "x must be float32 or float64 for the cpp implementation, got ", x.scalar_type());
  return Sizes{x.size(0), x.size(1), x.size(2), x.size(3), r};
}

at::Tensor channel_spatial_attention_cpp(const at::Tensor& x_in, const at::Tensor& skip_in, const at::Tensor& w_ca1,
                                         const at::Tensor& b_ca1, const at::Tensor& w_ca2, const at::Tensor& b_ca2,
                                         const at::Tensor& w_sa, const at::Tensor& b_sa) {
  const Sizes d = check(x_in, skip_in, w_ca1, b_ca1, w_ca2, b_ca2, w_sa, b_sa);
  const at::Tensor x = x_in.contiguous(), skip = skip_in.contiguous();
  const at::Tensor w1 = w_ca1.contiguous(), b1 = b_ca1.contiguous(), w2 = w_ca2.contiguous(),
                   b2 = b_ca2.contiguous(), ws = w_sa.contiguous();
  at::Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_spatial_attention_cpp",
                             [&] { forward_impl<scalar_t>(d, x, skip, w1, b1, w2, b2, ws, b_sa, y); });
  return y;
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor>;

Grads channel_spatial_attention_backward_cpp(const at::Tensor& grad, const at::Tensor& x_in,
                                             const at::Tensor& skip, const at::Tensor& w_ca1,
                                             const at::Tensor& b_ca1, const at::Tensor& w_ca2,
                                             const at::Tensor& b_ca2, const at::Tensor& w_sa,
                                             const at::Tensor& b_sa) {
  const Sizes d = check(x_in, skip, w_ca1, b_ca1, w_ca2, b_ca2, w_sa, b_sa);
  check_same(grad, "grad", x_in, "x", x_in.sizes());
  const at::Tensor x = x_in.contiguous(), g = grad.contiguous();
  const at::Tensor w1 = w_ca1.contiguous(), b1 = b_ca1.contiguous(), w2 = w_ca2.contiguous(),
                   b2 = b_ca2.contiguous(), ws = w_sa.contiguous();
  at::Tensor dx = at::empty_like(x);
  at::Tensor dw1 = at::zeros_like(w1), db1 = at::zeros_like(b1), dw2 = at::zeros_like(w2),
             db2 = at::zeros_like(b2), dws = at::zeros_like(ws), dbs = at::zeros_like(b_sa);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_spatial_attention_backward_cpp", [&] {
    backward_impl<scalar_t>(d, g, x, w1, b1, w2, b2, ws, b_sa, dx, dw1, db1, dw2, db2, dws, dbs);
  });
  return {dx, grad.clone(at::MemoryFormat::Contiguous), dw1, db1, dw2, db2, dws, dbs};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_channel_spatial_attention_cpp", &channel_spatial_attention_cpp);
  m.impl("_channel_spatial_attention_backward_cpp", &channel_spatial_attention_backward_cpp);
}

}  // namespace din_fast
