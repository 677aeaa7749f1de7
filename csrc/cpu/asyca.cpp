// C++ CPU kernels of din_fast::asyca (DIN's asymmetric co-attention node) and its backward.
//
// Forward, two passes over the inputs (x1, x2: (B, C, H, W), NCHW or NHWC):
//   pass 1   m = [mean_HW x1, mean_HW x2]                                  (B, 2C)
//   tiny     z = W_init m + b_init (C);  p = W_dc z + b_dc, h = relu(p) (R);  s = W_ic h + b_ic (2C)
//            (a_c, b_c) = softmax(s_c, s_{C+c})
//   pass 2   out = a ⊙ x1 + b ⊙ x2
// conv_init is applied to the means because its output is only used through its spatial mean.
//
// Backward, two passes over (g, x1, x2):
//   pass 1   the means again and da_c = Σ_HW g·x1, db_c = Σ_HW g·x2
//   tiny     ds = softmax backward of (da, db); back through W_ic, relu, W_dc, W_init to dm (2C), with
//            every parameter gradient (summed over the batch)
//   pass 2   dx1 = a ⊙ g + dm[:C]/HW,  dx2 = b ⊙ g + dm[C:]/HW
// No full-size temporary besides the outputs. Accumulation in float32 (float64 for float64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "common.h"
#include "asyca.h"
#include "cpu/kernel_utils.h"
#include "cpu/relu.h"

namespace din_fast {
namespace {

struct Shape {
  int64_t B, C, HW, R;
  bool nhwc;
};


// Per-(batch, channel) sums over H*W: sums[(b*NS + s)*C + c] for s = 0..NS-1, where NS = 2 gives
// (Σx1, Σx2) and NS = 4 (g given) also (Σg·x1, Σg·x2). One read of each input.
template <int NS, typename scalar_t, typename acc_t>
std::vector<acc_t> channel_sums(const Shape& sh, const scalar_t* x1, const scalar_t* x2, const scalar_t* g) {
  static_assert(NS == 2 || NS == 4, "2 (means) or 4 (means and products with g) sums");
  const int64_t B = sh.B, C = sh.C, HW = sh.HW;
  std::vector<acc_t> sums(B * NS * C, acc_t(0));
  if (!sh.nhwc) {
    // Each (b, c) plane is contiguous: kLanes partial sums per quantity vectorise without reassociation.
    at::parallel_for(0, B * C, grain_for(HW), [&](int64_t begin, int64_t end) {
      for (int64_t bc = begin; bc < end; ++bc) {
        const int64_t o = bc * HW;
        const scalar_t* p1 = x1 + o;
        const scalar_t* p2 = x2 + o;
        const scalar_t* pg = NS == 4 ? g + o : nullptr;
        acc_t lane[NS][kLanes] = {};
        int64_t i = 0;
        for (; i + kLanes <= HW; i += kLanes) {
          for (int l = 0; l < kLanes; ++l) {
            const acc_t u = p1[i + l], v = p2[i + l];
            lane[0][l] += u;
            lane[1][l] += v;
            if constexpr (NS == 4) {
              const acc_t w = pg[i + l];
              lane[2][l] += w * u;
              lane[3][l] += w * v;
            }
          }
        }
        for (; i < HW; ++i) {
          const acc_t u = p1[i], v = p2[i];
          lane[0][0] += u;
          lane[1][0] += v;
          if constexpr (NS == 4) {
            const acc_t w = pg[i];
            lane[2][0] += w * u;
            lane[3][0] += w * v;
          }
        }
        const int64_t b = bc / C, c = bc % C;
        for (int s = 0; s < NS; ++s) {
          acc_t t = 0;
          for (int l = 0; l < kLanes; ++l) t += lane[s][l];
          sums[(b * NS + s) * C + c] = t;
        }
      }
    });
    return sums;
  }
  // NHWC: rows of C contiguous channels; each row block accumulates its own partial sums over c.
  const RowBlocks rb(HW, C);
  std::vector<acc_t> part(B * rb.blocks * NS * C, acc_t(0));
  at::parallel_for(0, B * rb.blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / rb.blocks, p0 = (item % rb.blocks) * rb.rows;
      const int64_t p1end = std::min(HW, p0 + rb.rows);
      acc_t* acc = part.data() + item * NS * C;
      for (int64_t p = p0; p < p1end; ++p) {
        const int64_t o = (b * HW + p) * C;
        const scalar_t* r1 = x1 + o;
        const scalar_t* r2 = x2 + o;
        for (int64_t c = 0; c < C; ++c) {
          acc[c] += acc_t(r1[c]);
          acc[C + c] += acc_t(r2[c]);
        }
        if constexpr (NS == 4) {
          const scalar_t* rg = g + o;
          for (int64_t c = 0; c < C; ++c) {
            acc[2 * C + c] += acc_t(rg[c]) * acc_t(r1[c]);
            acc[3 * C + c] += acc_t(rg[c]) * acc_t(r2[c]);
          }
        }
      }
    }
  });
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = 0; k < rb.blocks; ++k) {
      const acc_t* acc = part.data() + (b * rb.blocks + k) * NS * C;
      for (int64_t i = 0; i < NS * C; ++i) sums[b * NS * C + i] += acc[i];
    }
  }
  return sums;
}

// The small per-sample network from the channel means m (2C) to the pair weights (a, b), keeping
// the intermediates the backward needs.
template <typename scalar_t, typename acc_t>
struct Attention {
  int64_t C, R;
  const scalar_t *w_init, *b_init, *w_dc, *b_dc, *w_ic, *b_ic;
  std::vector<acc_t> z, p, h, s;

  Attention(int64_t C_, int64_t R_, const at::Tensor& wi, const at::Tensor& bi, const at::Tensor& wd,
            const at::Tensor& bd, const at::Tensor& wc, const at::Tensor& bc)
      : C(C_), R(R_), w_init(wi.data_ptr<scalar_t>()), b_init(bi.data_ptr<scalar_t>()),
        w_dc(wd.data_ptr<scalar_t>()), b_dc(bd.data_ptr<scalar_t>()), w_ic(wc.data_ptr<scalar_t>()),
        b_ic(bc.data_ptr<scalar_t>()), z(C_), p(R_), h(R_), s(2 * C_) {}

  // m: the 2C means; writes a[c], b[c].
  void forward(const acc_t* m, acc_t* a, acc_t* b) {
    for (int64_t c = 0; c < C; ++c) {
      acc_t t = b_init[c];
      for (int64_t k = 0; k < 2 * C; ++k) t += acc_t(w_init[c * 2 * C + k]) * m[k];
      z[c] = t;
    }
    for (int64_t r = 0; r < R; ++r) {
      acc_t t = b_dc[r];
      for (int64_t c = 0; c < C; ++c) t += acc_t(w_dc[r * C + c]) * z[c];
      p[r] = t;
      h[r] = relu(t);
    }
    for (int64_t o = 0; o < 2 * C; ++o) {
      acc_t t = b_ic[o];
      for (int64_t r = 0; r < R; ++r) t += acc_t(w_ic[o * R + r]) * h[r];
      s[o] = t;
    }
    for (int64_t c = 0; c < C; ++c) {
      const acc_t mx = std::max(s[c], s[C + c]);
      const acc_t e1 = std::exp(s[c] - mx), e2 = std::exp(s[C + c] - mx);
      a[c] = e1 / (e1 + e2);
      b[c] = e2 / (e1 + e2);
    }
  }

  // After forward(m): from da, db (Σ g·x1, Σ g·x2) accumulate the parameter gradients into
  // g_* (acc_t, parameter-shaped) and write dm (2C), the gradient of the means.
  void backward(const acc_t* m, const acc_t* a, const acc_t* b, const acc_t* da, const acc_t* db, acc_t* g_w_init,
                acc_t* g_b_init, acc_t* g_w_dc, acc_t* g_b_dc, acc_t* g_w_ic, acc_t* g_b_ic, acc_t* dm) {
    std::vector<acc_t> ds(2 * C), dp(R), dz(C);
    for (int64_t c = 0; c < C; ++c) {
      const acc_t dot = a[c] * da[c] + b[c] * db[c];
      ds[c] = a[c] * (da[c] - dot);
      ds[C + c] = b[c] * (db[c] - dot);
    }
    for (int64_t o = 0; o < 2 * C; ++o) {
      g_b_ic[o] += ds[o];
      for (int64_t r = 0; r < R; ++r) g_w_ic[o * R + r] += ds[o] * h[r];
    }
    for (int64_t r = 0; r < R; ++r) {
      acc_t t = 0;
      for (int64_t o = 0; o < 2 * C; ++o) t += acc_t(w_ic[o * R + r]) * ds[o];
      dp[r] = relu_backward(p[r], t);
      g_b_dc[r] += dp[r];
      for (int64_t c = 0; c < C; ++c) g_w_dc[r * C + c] += dp[r] * z[c];
    }
    for (int64_t c = 0; c < C; ++c) {
      acc_t t = 0;
      for (int64_t r = 0; r < R; ++r) t += acc_t(w_dc[r * C + c]) * dp[r];
      dz[c] = t;
      g_b_init[c] += t;
      for (int64_t k = 0; k < 2 * C; ++k) g_w_init[c * 2 * C + k] += t * m[k];
    }
    for (int64_t k = 0; k < 2 * C; ++k) {
      acc_t t = 0;
      for (int64_t c = 0; c < C; ++c) t += acc_t(w_init[c * 2 * C + k]) * dz[c];
      dm[k] = t;
    }
  }
};

// Pass 2 of both directions, per-(batch, channel) coefficients broadcast over H*W, one read of each
// input and one write of each output:
//   forward (g == nullptr):  o1 = a ⊙ x1 + b ⊙ x2
//   backward:                o1 = a ⊙ g + k1,  o2 = b ⊙ g + k2
template <typename scalar_t, typename acc_t>
void pass2(const Shape& sh, const scalar_t* x1, const scalar_t* x2, const scalar_t* g, const acc_t* a,
           const acc_t* b, const acc_t* k1, const acc_t* k2, scalar_t* o1, scalar_t* o2) {
  const int64_t B = sh.B, C = sh.C, HW = sh.HW;
  if (!sh.nhwc) {
    at::parallel_for(0, B * C, grain_for(HW), [&](int64_t begin, int64_t end) {
      for (int64_t bc = begin; bc < end; ++bc) {
        const int64_t o = bc * HW;
        const acc_t ca = a[bc], cb = b[bc];
        if (g == nullptr) {
          const scalar_t* p1 = x1 + o;
          const scalar_t* p2 = x2 + o;
          scalar_t* q = o1 + o;
          for (int64_t i = 0; i < HW; ++i) q[i] = scalar_t(ca * acc_t(p1[i]) + cb * acc_t(p2[i]));
        } else {
          const acc_t c1 = k1[bc], c2 = k2[bc];
          const scalar_t* pg = g + o;
          scalar_t* q1 = o1 + o;
          scalar_t* q2 = o2 + o;
          for (int64_t i = 0; i < HW; ++i) {
            const acc_t v = pg[i];
            q1[i] = scalar_t(ca * v + c1);
            q2[i] = scalar_t(cb * v + c2);
          }
        }
      }
    });
    return;
  }
  at::parallel_for(0, B * HW, grain_for(C), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t o = row * C, n = (row / HW) * C;
      const acc_t* ca = a + n;
      const acc_t* cb = b + n;
      if (g == nullptr) {
        const scalar_t* p1 = x1 + o;
        const scalar_t* p2 = x2 + o;
        scalar_t* q = o1 + o;
        for (int64_t c = 0; c < C; ++c) q[c] = scalar_t(ca[c] * acc_t(p1[c]) + cb[c] * acc_t(p2[c]));
      } else {
        const acc_t* c1 = k1 + n;
        const acc_t* c2 = k2 + n;
        const scalar_t* pg = g + o;
        scalar_t* q1 = o1 + o;
        scalar_t* q2 = o2 + o;
        for (int64_t c = 0; c < C; ++c) {
          const acc_t v = pg[c];
          q1[c] = scalar_t(ca[c] * v + c1[c]);
          q2[c] = scalar_t(cb[c] * v + c2[c]);
        }
      }
    }
  });
}

struct Prepared {
  Shape sh;
  at::MemoryFormat fmt;
  at::Tensor x1, x2, w_init, b_init, w_dc, b_dc, w_ic, b_ic;
};

Prepared prepare(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& w_init, const at::Tensor& b_init,
                 const at::Tensor& w_dc, const at::Tensor& b_dc, const at::Tensor& w_ic, const at::Tensor& b_ic) {
  check_asyca_args(x1, x2, w_init, b_init, w_dc, b_dc, w_ic, b_ic, check_cpu_float);
  const at::MemoryFormat fmt = memory_format_of(x1);
  const bool nhwc = fmt == at::MemoryFormat::ChannelsLast;
  return {{x1.size(0), x1.size(1), x1.size(2) * x1.size(3), w_dc.size(0), nhwc}, fmt,
          x1.contiguous(fmt), x2.contiguous(fmt), w_init.contiguous(), b_init.contiguous(), w_dc.contiguous(),
          b_dc.contiguous(), w_ic.contiguous(), b_ic.contiguous()};
}

at::Tensor asyca_cpp(const at::Tensor& x1_, const at::Tensor& x2_, const at::Tensor& w_init,
                     const at::Tensor& b_init, const at::Tensor& w_dc, const at::Tensor& b_dc, const at::Tensor& w_ic,
                     const at::Tensor& b_ic) {
  const Prepared in = prepare(x1_, x2_, w_init, b_init, w_dc, b_dc, w_ic, b_ic);
  const Shape& sh = in.sh;
  at::Tensor out = empty_in(in.x1, in.fmt);
  AT_DISPATCH_FLOATING_TYPES(in.x1.scalar_type(), "asyca_cpp", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x1 = in.x1.data_ptr<scalar_t>();
    const scalar_t* x2 = in.x2.data_ptr<scalar_t>();
    std::vector<acc_t> m = channel_sums<2, scalar_t, acc_t>(sh, x1, x2, nullptr);
    for (acc_t& v : m) v /= acc_t(sh.HW);
    std::vector<acc_t> a(sh.B * sh.C), b(sh.B * sh.C);
    Attention<scalar_t, acc_t> att(sh.C, sh.R, in.w_init, in.b_init, in.w_dc, in.b_dc, in.w_ic, in.b_ic);
    for (int64_t n = 0; n < sh.B; ++n) att.forward(m.data() + n * 2 * sh.C, a.data() + n * sh.C, b.data() + n * sh.C);
    pass2<scalar_t, acc_t>(sh, x1, x2, nullptr, a.data(), b.data(), nullptr, nullptr, out.data_ptr<scalar_t>(),
                           nullptr);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
asyca_backward_cpp(const at::Tensor& grad, const at::Tensor& x1_, const at::Tensor& x2_, const at::Tensor& w_init,
                   const at::Tensor& b_init, const at::Tensor& w_dc, const at::Tensor& b_dc, const at::Tensor& w_ic,
                   const at::Tensor& b_ic) {
  const Prepared in = prepare(x1_, x2_, w_init, b_init, w_dc, b_dc, w_ic, b_ic);
  check_same(grad, "grad", x1_, "x1", x1_.sizes());
  const Shape& sh = in.sh;
  const int64_t B = sh.B, C = sh.C, R = sh.R;
  const at::Tensor g = grad.contiguous(in.fmt);
  at::Tensor dx1 = empty_in(in.x1, in.fmt), dx2 = empty_in(in.x1, in.fmt);
  const auto acc_opts = in.x1.options().dtype(at::toOpMathType(in.x1.scalar_type()));
  at::Tensor gw_init = at::zeros({C, 2 * C, 1, 1}, acc_opts), gb_init = at::zeros({C}, acc_opts);
  at::Tensor gw_dc = at::zeros({R, C, 1, 1}, acc_opts), gb_dc = at::zeros({R}, acc_opts);
  at::Tensor gw_ic = at::zeros({2 * C, R, 1, 1}, acc_opts), gb_ic = at::zeros({2 * C}, acc_opts);
  AT_DISPATCH_FLOATING_TYPES(in.x1.scalar_type(), "asyca_backward_cpp", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x1 = in.x1.data_ptr<scalar_t>();
    const scalar_t* x2 = in.x2.data_ptr<scalar_t>();
    const scalar_t* pg = g.data_ptr<scalar_t>();
    // sums[b] = (Σx1, Σx2, Σg·x1, Σg·x2), each C long.
    std::vector<acc_t> sums = channel_sums<4, scalar_t, acc_t>(sh, x1, x2, pg);
    std::vector<acc_t> a(B * C), b(B * C), k1(B * C), k2(B * C), m(2 * C), dm(2 * C);
    Attention<scalar_t, acc_t> att(C, R, in.w_init, in.b_init, in.w_dc, in.b_dc, in.w_ic, in.b_ic);
    for (int64_t n = 0; n < B; ++n) {
      const acc_t* s = sums.data() + n * 4 * C;
      for (int64_t i = 0; i < 2 * C; ++i) m[i] = s[i] / acc_t(sh.HW);
      att.forward(m.data(), a.data() + n * C, b.data() + n * C);
      att.backward(m.data(), a.data() + n * C, b.data() + n * C, s + 2 * C, s + 3 * C, gw_init.data_ptr<acc_t>(),
                   gb_init.data_ptr<acc_t>(), gw_dc.data_ptr<acc_t>(), gb_dc.data_ptr<acc_t>(),
                   gw_ic.data_ptr<acc_t>(), gb_ic.data_ptr<acc_t>(), dm.data());
      for (int64_t c = 0; c < C; ++c) {
        k1[n * C + c] = dm[c] / acc_t(sh.HW);
        k2[n * C + c] = dm[C + c] / acc_t(sh.HW);
      }
    }
    pass2<scalar_t, acc_t>(sh, nullptr, nullptr, pg, a.data(), b.data(), k1.data(), k2.data(),
                           dx1.data_ptr<scalar_t>(), dx2.data_ptr<scalar_t>());
  });
  const auto dt = in.x1.scalar_type();
  return {dx1, dx2, gw_init.to(dt), gb_init.to(dt), gw_dc.to(dt), gb_dc.to(dt), gw_ic.to(dt), gb_ic.to(dt)};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_asyca_cpp", &asyca_cpp);
  m.impl("_asyca_backward_cpp", &asyca_backward_cpp);
}

}  // namespace din_fast
