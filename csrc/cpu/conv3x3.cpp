// conv3x3 on CPU by Winograd F(4x4, 3x3): y = conv2d(x, weight, bias, padding=1) with 4x fewer
// multiplications than direct convolution (see din_fast/ops/conv3x3.py for the maths).
//
// Per 4x4 output tile, with the 6x6 input window d (zero padded), the 3x3 kernel g and the
// interpolation points 0, ±1, ±2, ∞:
//     U = G g Gᵀ (36 values per (cout, cin)),  V = Bᵀ d B (36 per (cin, tile)),
//     M[e] = U[e] @ V[e]   (36 GEMMs, (Cout x Cin) @ (Cin x tiles)),   Y = Aᵀ M A + bias.
// The transforms are written here (vectorised over the tiles of one tile row); the GEMMs are
// at::bmm (the BLAS is faster than any loop we could write). Layouts: V, M are (36, C, T) with
// T = B * nh * nw tiles, tile t = (b * nh + th) * nw + tw, element e = 6 * k + i (k: row, i: column
// frequency), so each GEMM operand is a contiguous matrix.
//
// Backward is the adjoint of every linear step: dM = A dY Aᵀ per tile (zero outside the image),
// dV = Uᵀ dM, dU = dM Vᵀ (V recomputed from x: one cheap pass instead of storing 2.25x the input),
// dx = Σ_tiles B dV Bᵀ (overlapping windows accumulate), dweight = Gᵀ dU G, dbias = Σ dy.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "kernel_utils.h"

namespace din_fast {
namespace {

constexpr int64_t kWin = 6;   // input window per tile
constexpr int64_t kOut = 4;   // output tile
constexpr int64_t kElems = kWin * kWin;

// Tiles are numbered with one extra "junk" tile per tile row (tw = nw), so that a plane's tiles are
// n = th * (nw + 1) + tw and tile n's window starts at 4n in a work buffer whose rows are 4 (nw + 1)
// long: every transform loop then runs over all tiles of a plane with unit/stride-4 addressing (long
// SIMD loops even at 48x48, where a tile row has only 12 tiles). Junk tiles cost 1/(nw+1) of the GEMM;
// their outputs are dropped and their gradients are exactly zero.
struct Geometry {
  int64_t B, C, H, W, nh, nw;
  Geometry(int64_t b, int64_t c, int64_t h, int64_t w)
      : B(b), C(c), H(h), W(w), nh((h + kOut - 1) / kOut), nw((w + kOut - 1) / kOut) {}
  int64_t row() const { return kOut * (nw + 1); }           // work-buffer row length (>= 4nw + 2)
  int64_t plane_tiles() const { return nh * (nw + 1); }     // tiles per (b, c) plane, junk included
  int64_t tiles() const { return B * plane_tiles(); }       // T, the GEMMs' N
  int64_t flat() const { return nh * row() + kOut; }        // a transform buffer (+ overrun of the last window)
};

// ---- forward transforms --------------------------------------------------------------------------

// V[e][c][t0 + n] for every tile of plane (b, c). x rows are contiguous (stride 1 along W).
// P: (4nh + 2) padded rows; Y: 6 buffers of flat().
template <typename T>
DIN_FAST_INLINE void input_transform_plane(const Geometry& g, const T* plane, int64_t row_stride, T* P, T* Y, T* V,
                                           int64_t c, int64_t t0) {
  const int64_t R = g.row(), rows = kOut * g.nh + 2, NT = g.tiles(), n_end = g.plane_tiles(), F = g.flat();
  std::fill(P, P + rows * R, T(0));
  for (int64_t y = 0; y < g.H; ++y) {
    std::copy(plane + y * row_stride, plane + y * row_stride + g.W, P + (y + 1) * R + 1);
  }
  for (int64_t th = 0; th < g.nh; ++th) {  // along y: Y[k][th][x] = (Bᵀ P[4th .. 4th+5][x])[k]
    const T* d0 = P + kOut * th * R;
    const T *d1 = d0 + R, *d2 = d1 + R, *d3 = d2 + R, *d4 = d3 + R, *d5 = d4 + R;
    T* y0 = Y + th * R;
#pragma omp simd
    for (int64_t x = 0; x < R; ++x) {
      y0[0 * F + x] = T(4) * d0[x] - T(5) * d2[x] + d4[x];
      y0[1 * F + x] = -T(4) * (d1[x] + d2[x]) + d3[x] + d4[x];
      y0[2 * F + x] = T(4) * (d1[x] - d2[x]) - d3[x] + d4[x];
      y0[3 * F + x] = T(2) * (d3[x] - d1[x]) - d2[x] + d4[x];
      y0[4 * F + x] = T(2) * (d1[x] - d3[x]) - d2[x] + d4[x];
      y0[5 * F + x] = T(4) * d1[x] - T(5) * d3[x] + d5[x];
    }
  }
  for (int64_t k = 0; k < kWin; ++k) {  // along x: V[6k + i][n] = (Bᵀ Y[k][4n .. 4n+5])[i]
    const T* yk = Y + k * F;
    T* v = V + (kWin * k * g.C + c) * NT + t0;
    const int64_t step = g.C * NT;  // element 6k + i -> 6k + i + 1
#pragma omp simd
    for (int64_t n = 0; n < n_end; ++n) {
      const T* d = yk + kOut * n;
      v[0 * step + n] = T(4) * d[0] - T(5) * d[2] + d[4];
      v[1 * step + n] = -T(4) * (d[1] + d[2]) + d[3] + d[4];
      v[2 * step + n] = T(4) * (d[1] - d[2]) - d[3] + d[4];
      v[3 * step + n] = T(2) * (d[3] - d[1]) - d[2] + d[4];
      v[4 * step + n] = T(2) * (d[1] - d[3]) - d[2] + d[4];
      v[5 * step + n] = T(4) * d[1] - T(5) * d[3] + d[5];
    }
  }
}

// Plane (b, co) of y from M[e][co][t0 + n] (+ bias). Z: 6 buffers of flat().
template <typename T>
DIN_FAST_INLINE void output_transform_plane(const Geometry& g, const T* M, int64_t co, int64_t t0, T bias, T* Z,
                                            T* out) {
  const int64_t R = g.row(), NT = g.tiles(), n_end = g.plane_tiles(), F = g.flat(), step = g.C * NT;
  for (int64_t k = 0; k < kWin; ++k) {  // along x: Z[k][4n + j] = (Aᵀ M[6k + ·][n])[j]
    const T* m = M + (kWin * k * g.C + co) * NT + t0;
    T* z = Z + k * F;
#pragma omp simd
    for (int64_t n = 0; n < n_end; ++n) {
      const T m0 = m[n], m1 = m[step + n], m2 = m[2 * step + n], m3 = m[3 * step + n], m4 = m[4 * step + n],
              m5 = m[5 * step + n];
      T* o = z + kOut * n;
      o[0] = m0 + m1 + m2 + m3 + m4;
      o[1] = (m1 - m2) + T(2) * (m3 - m4);
      o[2] = (m1 + m2) + T(4) * (m3 + m4);
      o[3] = (m1 - m2) + T(8) * (m3 - m4) + m5;
    }
  }
  for (int64_t th = 0; th < g.nh; ++th) {  // along y, into output rows 4th .. 4th+3
    const T *z0 = Z + th * R, *z1 = z0 + F, *z2 = z1 + F, *z3 = z2 + F, *z4 = z3 + F, *z5 = z4 + F;
    for (int64_t r = 0; r < kOut && kOut * th + r < g.H; ++r) {
      T* o = out + (kOut * th + r) * g.W;
      if (r == 0) {
#pragma omp simd
        for (int64_t x = 0; x < g.W; ++x) o[x] = z0[x] + z1[x] + z2[x] + z3[x] + z4[x] + bias;
      } else if (r == 1) {
#pragma omp simd
        for (int64_t x = 0; x < g.W; ++x) o[x] = (z1[x] - z2[x]) + T(2) * (z3[x] - z4[x]) + bias;
      } else if (r == 2) {
#pragma omp simd
        for (int64_t x = 0; x < g.W; ++x) o[x] = (z1[x] + z2[x]) + T(4) * (z3[x] + z4[x]) + bias;
      } else {
#pragma omp simd
        for (int64_t x = 0; x < g.W; ++x) o[x] = (z1[x] - z2[x]) + T(8) * (z3[x] - z4[x]) + z5[x] + bias;
      }
    }
  }
}

// ---- backward transforms (adjoints) ----------------------------------------------------------------

// dM[e][co][t0 + n] = (A dY Aᵀ)[k][i] for every tile of grad plane (b, co); dY is zero outside the image,
// so junk tiles get exactly 0. Q: 6 buffers of flat(); zeros: W zeros (the rows below the image).
template <typename T>
DIN_FAST_INLINE void output_adjoint_plane(const Geometry& g, const T* gplane, const T* zeros, T* Q, T* dM, int64_t co,
                                        int64_t t0) {
  const int64_t R = g.row(), NT = g.tiles(), n_end = g.plane_tiles(), F = g.flat(), step = g.C * NT;
  for (int64_t th = 0; th < g.nh; ++th) {  // along y: Q[k][th][x] = (A dy[4th .. 4th+3][x])[k]
    const T* rows[kOut];
    for (int64_t r = 0; r < kOut; ++r) rows[r] = kOut * th + r < g.H ? gplane + (kOut * th + r) * g.W : zeros;
    const T *u0 = rows[0], *u1 = rows[1], *u2 = rows[2], *u3 = rows[3];
    T* q0 = Q + th * R;
#pragma omp simd
    for (int64_t x = 0; x < g.W; ++x) {
      q0[0 * F + x] = u0[x];
      q0[1 * F + x] = u0[x] + u1[x] + u2[x] + u3[x];
      q0[2 * F + x] = u0[x] - u1[x] + u2[x] - u3[x];
      q0[3 * F + x] = u0[x] + T(2) * u1[x] + T(4) * u2[x] + T(8) * u3[x];
      q0[4 * F + x] = u0[x] - T(2) * u1[x] + T(4) * u2[x] - T(8) * u3[x];
      q0[5 * F + x] = u3[x];
    }
    for (int64_t k = 0; k < kWin; ++k) std::fill(q0 + k * F + g.W, q0 + k * F + R, T(0));
  }
  for (int64_t k = 0; k < kWin; ++k) {  // along x: dM[6k + i][n] = (A Q[k][4n .. 4n+3])[i]
    const T* qk = Q + k * F;
    T* d = dM + (kWin * k * g.C + co) * NT + t0;
#pragma omp simd
    for (int64_t n = 0; n < n_end; ++n) {
      const T* u = qk + kOut * n;
      d[0 * step + n] = u[0];
      d[1 * step + n] = u[0] + u[1] + u[2] + u[3];
      d[2 * step + n] = u[0] - u[1] + u[2] - u[3];
      d[3 * step + n] = u[0] + T(2) * u[1] + T(4) * u[2] + T(8) * u[3];
      d[4 * step + n] = u[0] - T(2) * u[1] + T(4) * u[2] - T(8) * u[3];
      d[5 * step + n] = u[3];
    }
  }
}

// Plane (b, c) of dx = Σ_tiles B dV Bᵀ (overlapping windows add up), cropped from the padding.
// Rb: 6 buffers of flat(); P: (4nh + 2) padded rows.
template <typename T>
DIN_FAST_INLINE void input_adjoint_plane(const Geometry& g, const T* dV, int64_t c, int64_t t0, T* Rb, T* P, T* dx) {
  const int64_t R = g.row(), rows = kOut * g.nh + 2, NT = g.tiles(), n_end = g.plane_tiles(), F = g.flat(),
                step = g.C * NT;
  for (int64_t k = 0; k < kWin; ++k) {  // along x: Rb[k][4n + j] = Σ_n (B dV[6k + ·][n])[j]
    const T* u = dV + (kWin * k * g.C + c) * NT + t0;
    T* r = Rb + k * F;
    // Columns 4n .. 4n+3 of different tiles are disjoint and are stored; 4n+4, 4n+5 overlap the next
    // tile's first two and are added in a second loop (no write conflicts within a loop).
#pragma omp simd
    for (int64_t n = 0; n < n_end; ++n) {
      const T u0 = u[n], u1 = u[step + n], u2 = u[2 * step + n], u3 = u[3 * step + n], u4 = u[4 * step + n],
              u5 = u[5 * step + n];
      T* o = r + kOut * n;
      o[0] = T(4) * u0;
      o[1] = T(4) * (u2 - u1) + T(2) * (u4 - u3) + T(4) * u5;
      o[2] = -T(5) * u0 - T(4) * (u1 + u2) - u3 - u4;
      o[3] = (u1 - u2) + T(2) * (u3 - u4) - T(5) * u5;
    }
    std::fill(r + kOut * n_end, r + F, T(0));
#pragma omp simd
    for (int64_t n = 0; n < n_end; ++n) {
      T* o = r + kOut * n;
      o[4] += u[n] + u[step + n] + u[2 * step + n] + u[3 * step + n] + u[4 * step + n];
      o[5] += u[5 * step + n];
    }
  }
  std::fill(P, P + rows * R, T(0));
  for (int64_t th = 0; th < g.nh; ++th) {  // along y: P[4th + r][x] += (B Rb[·][th][x])[r]
    const T *r0 = Rb + th * R, *r1 = r0 + F, *r2 = r1 + F, *r3 = r2 + F, *r4 = r3 + F, *r5 = r4 + F;
    T* p0 = P + kOut * th * R;
    T *p1 = p0 + R, *p2 = p1 + R, *p3 = p2 + R, *p4 = p3 + R, *p5 = p4 + R;
#pragma omp simd
    for (int64_t x = 0; x < R; ++x) {
      p0[x] += T(4) * r0[x];
      p1[x] += T(4) * (r2[x] - r1[x]) + T(2) * (r4[x] - r3[x]) + T(4) * r5[x];
      p2[x] += -T(5) * r0[x] - T(4) * (r1[x] + r2[x]) - r3[x] - r4[x];
      p3[x] += (r1[x] - r2[x]) + T(2) * (r3[x] - r4[x]) - T(5) * r5[x];
      p4[x] += r0[x] + r1[x] + r2[x] + r3[x] + r4[x];
      p5[x] += r5[x];
    }
  }
  for (int64_t y = 0; y < g.H; ++y) std::copy(P + (y + 1) * R + 1, P + (y + 1) * R + 1 + g.W, dx + y * g.W);
}

// ---- whole-tensor passes, parallel over (b, c) planes ---------------------------------------------

template <typename T>
DIN_FAST_INLINE void input_transform_impl(const Geometry& g, const T* x, int64_t sb, int64_t sc, int64_t sh, T* V) {
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> P((kOut * g.nh + 2) * g.row()), Y(kWin * g.flat(), T(0));
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / g.C, c = bc % g.C;
      input_transform_plane(g, x + b * sb + c * sc, sh, P.data(), Y.data(), V, c, b * g.plane_tiles());
    }
  });
}

template <typename T>
DIN_FAST_INLINE void output_transform_impl(const Geometry& g, const T* M, const T* bias, T* y) {
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> Z(kWin * g.flat());
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / g.C, co = bc % g.C;
      output_transform_plane(g, M, co, b * g.plane_tiles(), bias[co], Z.data(), y + bc * g.H * g.W);
    }
  });
}

template <typename T>
DIN_FAST_INLINE void output_adjoint_impl(const Geometry& g, const T* dy, T* dM) {
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> Q(kWin * g.flat(), T(0)), zeros(g.W, T(0));
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / g.C, co = bc % g.C;
      output_adjoint_plane(g, dy + bc * g.H * g.W, zeros.data(), Q.data(), dM, co, b * g.plane_tiles());
    }
  });
}

template <typename T>
DIN_FAST_INLINE void input_adjoint_impl(const Geometry& g, const T* dV, T* dx) {
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> Rb(kWin * g.flat()), P((kOut * g.nh + 2) * g.row());
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / g.C, c = bc % g.C;
      input_adjoint_plane(g, dV, c, b * g.plane_tiles(), Rb.data(), P.data(), dx + bc * g.H * g.W);
    }
  });
}

// One multiversioned entry per pass and dtype (target_clones cannot be put on templates).
DIN_FAST_MULTIVERSION void input_transform(const Geometry& g, const float* x, int64_t sb, int64_t sc, int64_t sh,
                                           float* V) {
  input_transform_impl(g, x, sb, sc, sh, V);
}
DIN_FAST_MULTIVERSION void input_transform(const Geometry& g, const double* x, int64_t sb, int64_t sc, int64_t sh,
                                           double* V) {
  input_transform_impl(g, x, sb, sc, sh, V);
}
DIN_FAST_MULTIVERSION void output_transform(const Geometry& g, const float* M, const float* bias, float* y) {
  output_transform_impl(g, M, bias, y);
}
DIN_FAST_MULTIVERSION void output_transform(const Geometry& g, const double* M, const double* bias, double* y) {
  output_transform_impl(g, M, bias, y);
}
DIN_FAST_MULTIVERSION void output_adjoint(const Geometry& g, const float* dy, float* dM) {
  output_adjoint_impl(g, dy, dM);
}
DIN_FAST_MULTIVERSION void output_adjoint(const Geometry& g, const double* dy, double* dM) {
  output_adjoint_impl(g, dy, dM);
}
DIN_FAST_MULTIVERSION void input_adjoint(const Geometry& g, const float* dV, float* dx) {
  input_adjoint_impl(g, dV, dx);
}
DIN_FAST_MULTIVERSION void input_adjoint(const Geometry& g, const double* dV, double* dx) {
  input_adjoint_impl(g, dV, dx);
}

// ---- the ops ------------------------------------------------------------------------------------

// kron(G, G) (36, 9): U[6k + i] = Σ_ab G[k][a] G[i][b] g[a][b]; built in double, then cast.
at::Tensor kernel_transform(const at::Tensor& like) {
  static const double G[kWin][3] = {{0.25, 0, 0},          {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                    {-1.0 / 6, 1.0 / 6, -1.0 / 6}, {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                    {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
  at::Tensor K = at::empty({kElems, 9}, at::TensorOptions().dtype(at::kDouble));
  auto k = K.accessor<double, 2>();
  for (int64_t r = 0; r < kWin; ++r)
    for (int64_t i = 0; i < kWin; ++i)
      for (int64_t a = 0; a < 3; ++a)
        for (int64_t b = 0; b < 3; ++b) k[r * kWin + i][a * 3 + b] = G[r][a] * G[i][b];
  return K.to(like.scalar_type());
}

void check_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  check_feature(x, "x");
  check_cpu_float(x, "x");
  const int64_t cin = x.size(1);
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(0) > 0, "weight must have shape (Cout, ", cin,
                    ", 3, 3), got ", weight.sizes());
  const int64_t cout = weight.size(0);
  check_same(weight, "weight", x, "x", {cout, cin, 3, 3});
  check_same(bias, "bias", x, "x", {cout});
}

// x as a tensor whose rows are contiguous (W stride 1): NCHW views and channel slices stay as they are.
at::Tensor rows_contiguous(const at::Tensor& x) {
  return x.stride(3) == 1 && x.stride(2) == x.size(3) ? x : x.contiguous();
}

// V (36, Cin, T) of x.
at::Tensor input_transform_of(const at::Tensor& x, const Geometry& g) {
  at::Tensor xr = rows_contiguous(x);
  at::Tensor V = at::empty({kElems, g.C, g.tiles()}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_input_transform", [&] {
    input_transform(g, xr.data_ptr<scalar_t>(), xr.stride(0), xr.stride(1), xr.stride(2), V.data_ptr<scalar_t>());
  });
  return V;
}

at::Tensor conv3x3_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  check_args(x, weight, bias);
  const int64_t cout = weight.size(0), cin = x.size(1);
  const Geometry gin(x.size(0), cin, x.size(2), x.size(3));
  at::Tensor U = at::matmul(kernel_transform(x), weight.reshape({cout * cin, 9}).t()).view({kElems, cout, cin});
  at::Tensor M = at::bmm(U, input_transform_of(x, gin));
  const Geometry gout(x.size(0), cout, x.size(2), x.size(3));
  at::Tensor y = at::empty({gout.B, cout, gout.H, gout.W}, x.options());
  at::Tensor b = bias.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_cpu", [&] {
    output_transform(gout, M.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), y.data_ptr<scalar_t>());
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv3x3_backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                                    const at::Tensor& weight, const at::Tensor& bias) {
  check_args(x, weight, bias);
  const int64_t cout = weight.size(0), cin = x.size(1);
  const Geometry gin(x.size(0), cin, x.size(2), x.size(3)), gout(x.size(0), cout, x.size(2), x.size(3));
  check_same(grad, "grad", x, "x", {gout.B, cout, gout.H, gout.W});
  at::Tensor K = kernel_transform(x);
  at::Tensor U = at::matmul(K, weight.reshape({cout * cin, 9}).t()).view({kElems, cout, cin});
  at::Tensor gc = grad.contiguous();
  at::Tensor dM = at::empty({kElems, cout, gout.tiles()}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_output_adjoint", [&] {
    output_adjoint(gout, gc.data_ptr<scalar_t>(), dM.data_ptr<scalar_t>());
  });
  at::Tensor dV = at::bmm(U.transpose(1, 2), dM);
  at::Tensor dU = at::bmm(dM, input_transform_of(x, gin).transpose(1, 2));
  at::Tensor dx = at::empty({gin.B, cin, gin.H, gin.W}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_input_adjoint", [&] {
    input_adjoint(gin, dV.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>());
  });
  at::Tensor dweight = at::matmul(dU.view({kElems, cout * cin}).t(), K).view({cout, cin, 3, 3});
  return {dx, dweight, gc.sum({0, 2, 3})};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_conv3x3_cpp", &conv3x3_cpu);
  m.impl("_conv3x3_backward_cpp", &conv3x3_backward_cpu);
}

}  // namespace din_fast
