// conv3x3 on CPU by Winograd F(4x4, 3x3): y = conv2d(x, weight, bias, padding=1) with 4x fewer
// multiplications than direct convolution (see din_fast/ops/conv3x3.py for the maths).
//
// Per 4x4 output tile, with the 6x6 input window d (zero padded), the 3x3 kernel g and the
// interpolation points 0, ±1, ±2, ∞:
//     U = G g Gᵀ (36 values per (cout, cin)),  V = Bᵀ d B (36 per (cin, tile)),
//     M[e] = U[e] @ V[e]   (36 GEMMs, (Cout x Cin) @ (Cin x tiles)),   Y = Aᵀ M A + bias.
// The transforms are written here (vectorised over all tiles of a plane, see Geometry); the GEMMs
// are at::bmm (the BLAS is faster than any loop we could write). Layouts: V, M are (36, C, T) with
// T = B * plane_tiles() (padding tiles included), element e = 6 * k + i (k: row, i: column
// frequency), so each GEMM operand is a contiguous matrix.
//
// Backward is the adjoint of every linear step: dM = A dY Aᵀ per tile (zero outside the image),
// dV = Uᵀ dM, dU = dM Vᵀ (V recomputed from x: one cheap pass instead of storing 2.25x the input),
// dx = Σ_tiles B dV Bᵀ (overlapping windows accumulate), dweight = Gᵀ dU G, dbias = Σ dy.
//
// The op itself runs strip by strip (a few tile rows of one image per work item, see Strips): each
// thread transforms, multiplies and transforms back one strip at a time in a small buffer of its own, so
// the Winograd-domain data never exists for the whole map. Whole-map V and M buffers (several MB at
// 96x96) cost more than the arithmetic: fresh allocations of that size are mmapped, page-faulted and
// zeroed on every call. DIN's dense block (dense_block.cpp) uses the whole-map building blocks (winograd.h,
// also registered below as private ops) instead, because there every transformed feature is read by several convs.
//
// With Cout <= kDirectMaxCout the forward convolves directly instead (see "direct convolution" below).
//
// Non-finite values: a transform mixes its whole tile, so an inf/NaN in x makes the whole 4x4 output tiles
// whose windows contain it non-finite (F.conv2d: only its 3x3 neighbourhood), and one in dy makes dx
// non-finite over its tile's 6x6 window (both paths: the direct forward's backward is this one). Never
// hidden, only spread within those tiles (tests/test_nonfinite.py); detecting non-finite input to fall back
// to a direct convolution would cost an extra pass over x or dy on every call.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <tuple>
#include <vector>

#include "kernel_utils.h"
#include "winograd.h"
#include "winograd_tiles.h"

namespace din_fast {
namespace {

constexpr int64_t kWin = 6;   // input window per tile
constexpr int64_t kOut = 4;   // output tile
constexpr int64_t kElems = kWin * kWin;

// Tiles are numbered with one extra "junk" tile per tile row (tw = nw), so that a plane's tiles are
// n = th * (nw + 1) + tw and tile n's window starts at 4n in a work buffer whose rows are 4 (nw + 1)
// long: every transform loop then runs over all tiles of a plane with unit/stride-4 addressing (long
// SIMD loops even at 48x48, where a tile row has only 12 tiles). A plane's tile count is then rounded up
// to a multiple of kVec, so those loops have no scalar remainder. Junk tiles cost ~1/(nw+1) of the
// GEMMs; their outputs are dropped and their gradients are exactly zero.
constexpr int64_t kVec = 16;
constexpr int64_t vec_tiles(int64_t tiles) { return (tiles + kVec - 1) / kVec * kVec; }

// C planes per image are transformed, into/from channels c0 .. c0 + C of a (36, ld, T) Winograd-domain
// buffer (a dense block keeps all its features in one such buffer).
struct Geometry {
  int64_t B, C, H, W, nh, nw, ld, c0;
  Geometry(int64_t b, int64_t c, int64_t h, int64_t w, int64_t ld_ = -1, int64_t c0_ = 0)
      : B(b), C(c), H(h), W(w), nh((h + kOut - 1) / kOut), nw((w + kOut - 1) / kOut), ld(ld_ < 0 ? c : ld_),
        c0(c0_) {}
  int64_t row() const { return kOut * (nw + 1); }  // work-buffer row length (>= 4nw + 2)
  int64_t plane_tiles() const { return vec_tiles(nh * (nw + 1)); }  // junk included
  int64_t tiles() const { return B * plane_tiles(); }  // T, the GEMMs' N
};

// Tile rows [th0, th1) of a plane, numbered from 0 within the strip like a plane of their own: its n
// tiles (junk included, a multiple of kVec) are columns t0 .. t0 + n of a (36, ld, nt) buffer. A whole
// plane is the strip {0, nh, plane_tiles(), tiles()}.
struct Strip {
  int64_t th0, th1, n, nt;
  int64_t rows() const { return th1 - th0; }
  int64_t flat() const { return kOut * n + 2 * kOut; }  // one transform row buffer (windows overrun by 2)
};

Strip whole_plane(const Geometry& g) { return {0, g.nh, g.plane_tiles(), g.tiles()}; }

// ---- forward transforms --------------------------------------------------------------------------

// Image rows y_first .. y_first + rows - 1 of an H x W plane into P, R values per row: a zero column, the
// image row, zeros up to R (rows outside the image all zeros). The input transform's and the direct
// convolution's zero padding.
template <typename T>
DIN_FAST_INLINE void padded_rows(const T* plane, int64_t row_stride, int64_t H, int64_t W, int64_t y_first,
                                 int64_t rows, int64_t R, T* P) {
  std::fill(P, P + rows * R, T(0));
  for (int64_t p = 0; p < rows; ++p) {
    const int64_t y = y_first + p;
    if (y >= 0 && y < H) std::copy(plane + y * row_stride, plane + y * row_stride + W, P + p * R + 1);
  }
}

// V[e][c][t0 + n] for every tile of strip s of plane (b, c). x rows are contiguous (stride 1 along W).
// P: (4 s.rows() + 2) padded rows; Y: 6 buffers of s.flat().
template <typename T>
DIN_FAST_INLINE void input_transform_plane_t(const Geometry& g, const Strip& s, const T* plane, int64_t row_stride,
                                             T* P, T* Y, T* V, int64_t c, int64_t t0) {
  const int64_t R = g.row(), rows = kOut * s.rows() + 2, NT = s.nt, n_end = s.n, F = s.flat();
  padded_rows(plane, row_stride, g.H, g.W, kOut * s.th0 - 1, rows, R, P);
  for (int64_t th = 0; th < s.rows(); ++th) {  // along y: Y[k][th][x] = (Bᵀ P[4th .. 4th+5][x])[k]
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
  // The junk tiles after the last tile row read zeros (not a previous strip's data, which may be inf).
  for (int64_t k = 0; k < kWin; ++k) std::fill(Y + k * F + s.rows() * R, Y + (k + 1) * F, T(0));
  for (int64_t k = 0; k < kWin; ++k) {  // along x: V[6k + i][n] = (Bᵀ Y[k][4n .. 4n+5])[i]
    const T* yk = Y + k * F;
    T* v = V + (kWin * k * g.ld + c) * NT + t0;
    const int64_t step = g.ld * NT;  // element 6k + i -> 6k + i + 1
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

// Strip s of plane (b, co) of y from M[e][co][t0 + n]: leaky_relu(· + bias, slope) (slope 1: no
// activation). Z: 6 buffers of s.flat().
template <typename T>
DIN_FAST_INLINE void output_transform_plane_t(const Geometry& g, const Strip& s, const T* M, int64_t co, int64_t t0,
                                              T bias, T slope, T* Z, T* out, int64_t row_stride) {
  const int64_t R = g.row(), NT = s.nt, n_end = s.n, F = s.flat(), step = g.ld * NT;
  for (int64_t k = 0; k < kWin; ++k) {  // along x: Z[k][4n + j] = (Aᵀ M[6k + ·][n])[j]
    const T* m = M + (kWin * k * g.ld + co) * NT + t0;
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
  for (int64_t th = 0; th < s.rows(); ++th) {  // along y, into output rows 4(th0 + th) .. +3
    const T *z0 = Z + th * R, *z1 = z0 + F, *z2 = z1 + F, *z3 = z2 + F, *z4 = z3 + F, *z5 = z4 + F;
    const int64_t y0 = kOut * (s.th0 + th);
    for (int64_t r = 0; r < kOut && y0 + r < g.H; ++r) {
      T* o = out + (y0 + r) * row_stride;
      if (r == 0) {
#pragma omp simd
        for (int64_t x = 0; x < g.W; ++x) {
          const T v = z0[x] + z1[x] + z2[x] + z3[x] + z4[x] + bias;
          o[x] = v > T(0) ? v : slope * v;
        }
      } else if (r == 1) {
#pragma omp simd
        for (int64_t x = 0; x < g.W; ++x) {
          const T v = (z1[x] - z2[x]) + T(2) * (z3[x] - z4[x]) + bias;
          o[x] = v > T(0) ? v : slope * v;
        }
      } else if (r == 2) {
#pragma omp simd
        for (int64_t x = 0; x < g.W; ++x) {
          const T v = (z1[x] + z2[x]) + T(4) * (z3[x] + z4[x]) + bias;
          o[x] = v > T(0) ? v : slope * v;
        }
      } else {
#pragma omp simd
        for (int64_t x = 0; x < g.W; ++x) {
          const T v = (z1[x] - z2[x]) + T(8) * (z3[x] - z4[x]) + z5[x] + bias;
          o[x] = v > T(0) ? v : slope * v;
        }
      }
    }
  }
}

// ---- backward transforms (adjoints) ----------------------------------------------------------------

// dM[e][co][t0 + n] = (A dY Aᵀ)[k][i] for every tile of strip s of grad plane (b, co); dY is zero outside
// the image, so junk tiles get exactly 0. Q: 6 buffers of s.flat(); zeros: W zeros (rows below the image).
template <typename T>
DIN_FAST_INLINE void output_adjoint_plane_t(const Geometry& g, const Strip& s, const T* gplane, int64_t row_stride,
                                            const T* zeros, T* Q, T* dM, int64_t co, int64_t t0) {
  const int64_t R = g.row(), NT = s.nt, n_end = s.n, F = s.flat(), step = g.ld * NT;
  for (int64_t th = 0; th < s.rows(); ++th) {  // along y: Q[k][th][x] = (A dy[4th .. 4th+3][x])[k]
    const T* rows[kOut];
    const int64_t y0 = kOut * (s.th0 + th);
    for (int64_t r = 0; r < kOut; ++r) rows[r] = y0 + r < g.H ? gplane + (y0 + r) * row_stride : zeros;
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
  for (int64_t k = 0; k < kWin; ++k) std::fill(Q + k * F + s.rows() * R, Q + (k + 1) * F, T(0));  // junk tiles: 0
  for (int64_t k = 0; k < kWin; ++k) {  // along x: dM[6k + i][n] = (A Q[k][4n .. 4n+3])[i]
    const T* qk = Q + k * F;
    T* d = dM + (kWin * k * g.ld + co) * NT + t0;
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

// Strip s of plane (b, c) of dx = Σ_tiles B dV Bᵀ (overlapping windows add up), cropped from the padding.
// The strip's windows cover image rows 4 th0 - 1 .. 4 th1; the two rows at each end it shares with a
// neighbouring strip (th0 > 0, th1 < nh) go to edges (4 rows of W: top two, bottom two) for the caller to
// add up, the rest to dx. Rb: 6 buffers of s.flat(); P: (4 s.rows() + 2) padded rows.
template <typename T>
DIN_FAST_INLINE void input_adjoint_plane_t(const Geometry& g, const Strip& s, const T* dV, int64_t c, int64_t t0,
                                           T* Rb, T* P, T* dx, int64_t row_stride, T* edges) {
  const int64_t R = g.row(), rows = kOut * s.rows() + 2, NT = s.nt, n_end = s.n, F = s.flat(), step = g.ld * NT;
  for (int64_t k = 0; k < kWin; ++k) {  // along x: Rb[k][4n + j] = Σ_n (B dV[6k + ·][n])[j]
    const T* u = dV + (kWin * k * g.ld + c) * NT + t0;
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
  for (int64_t th = 0; th < s.rows(); ++th) {  // along y: P[4th + r][x] += (B Rb[·][th][x])[r]
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
  for (int64_t p = 0; p < rows; ++p) {  // padded row p is image row 4 th0 + p - 1
    const int64_t y = kOut * s.th0 + p - 1;
    if (y < 0 || y >= g.H) continue;
    T* to = s.th0 > 0 && p < 2               ? edges + p * g.W
            : s.th1 < g.nh && p >= rows - 2 ? edges + (p - rows + 4) * g.W
                                            : dx + y * row_stride;
    std::copy(P + p * R + 1, P + p * R + 1 + g.W, to);
  }
}

// ---- kernel transform U = G g Gᵀ and its adjoint dg = Gᵀ dU G, per (cout, cin) pair ----------------


// G (6 x 3) of F(4x4, 3x3), with the interpolation points 0, ±1, ±2, ∞.
constexpr double kG[kWin][3] = {{0.25, 0, 0},          {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};

// K = kron(G, G) (36 x 9): U[6k + i] = Σ_ab G[k][a] G[i][b] g[a][b]. Built once in double.
struct KronG {
  double v[kElems][9];
  KronG() {
    for (int64_t k = 0; k < kWin; ++k)
      for (int64_t i = 0; i < kWin; ++i)
        for (int64_t a = 0; a < 3; ++a)
          for (int64_t b = 0; b < 3; ++b) v[kWin * k + i][3 * a + b] = kG[k][a] * kG[i][b];
  }
};
const KronG kKron;

// Pairs per block of the kernel transforms: each block's taps are transposed through a local (9, kPairBlock)
// array, so the weight keeps its (pairs, 9) layout and the transform still runs unit-stride over pairs. Also
// their parallel grain, so that a 32 x 32 conv's 1024 pairs are split across threads.
constexpr int64_t kPairBlock = 256;

// w: the kernels, (pairs, 9); U: (36, pairs). Pairs [begin, end). Separably, U = (G g) Gᵀ: 162 products per
// pair where kron(G, G) takes 324.
template <typename T>
DIN_FAST_INLINE void kernel_transform_t(const T* w, int64_t pairs, int64_t begin, int64_t end, T* U) {
  alignas(64) T wt[9][kPairBlock];
  alignas(64) T Gg[kWin][3][kPairBlock];
  for (int64_t p0 = begin; p0 < end; p0 += kPairBlock) {
    const int64_t n = std::min(kPairBlock, end - p0);
    for (int64_t j = 0; j < 9; ++j) {
      const T* wj = w + p0 * 9 + j;
#pragma omp simd
      for (int64_t p = 0; p < n; ++p) wt[j][p] = wj[p * 9];
    }
    for (int64_t k = 0; k < kWin; ++k) {
      const T g0 = static_cast<T>(kG[k][0]), g1 = static_cast<T>(kG[k][1]), g2 = static_cast<T>(kG[k][2]);
      for (int64_t b = 0; b < 3; ++b) {
        T* o = Gg[k][b];
#pragma omp simd
        for (int64_t p = 0; p < n; ++p) o[p] = g0 * wt[b][p] + g1 * wt[3 + b][p] + g2 * wt[6 + b][p];
      }
    }
    for (int64_t k = 0; k < kWin; ++k)
      for (int64_t i = 0; i < kWin; ++i) {
        const T g0 = static_cast<T>(kG[i][0]), g1 = static_cast<T>(kG[i][1]), g2 = static_cast<T>(kG[i][2]);
        T* u = U + (kWin * k + i) * pairs + p0;
#pragma omp simd
        for (int64_t p = 0; p < n; ++p) u[p] = g0 * Gg[k][0][p] + g1 * Gg[k][1][p] + g2 * Gg[k][2][p];
      }
  }
}

// dU: (36, pairs); dw: (pairs, 9), the kernel gradients dw = Kᵀ dU.
template <typename T>
DIN_FAST_INLINE void kernel_adjoint_t(const T* dU, int64_t pairs, int64_t begin, int64_t end, T* dw) {
  alignas(64) T dwt[9][kPairBlock];
  for (int64_t p0 = begin; p0 < end; p0 += kPairBlock) {
    const int64_t n = std::min(kPairBlock, end - p0);
    for (int64_t j = 0; j < 9; ++j) {
      T* d = dwt[j];
#pragma omp simd
      for (int64_t p = 0; p < n; ++p) d[p] = T(0);
      for (int64_t e = 0; e < kElems; ++e) {
        const T k = static_cast<T>(kKron.v[e][j]);
        if (k == T(0)) continue;
        const T* u = dU + e * pairs + p0;
#pragma omp simd
        for (int64_t p = 0; p < n; ++p) d[p] += k * u[p];
      }
    }
    for (int64_t p = 0; p < n; ++p)
      for (int64_t j = 0; j < 9; ++j) dw[(p0 + p) * 9 + j] = dwt[j][p];
  }
}

// ---- multiversioned per-plane entries ---------------------------------------------------------------
// The parallel_for lambdas below are compiled for the baseline ISA, so the vectorised work must sit in
// functions marked DIN_FAST_MULTIVERSION that the lambdas call (target_clones cannot mark templates).

DIN_FAST_MULTIVERSION void input_plane(const Geometry& g, const Strip& s, const float* x, int64_t rs, float* P,
                                       float* Y, float* V, int64_t c, int64_t t0) {
  input_transform_plane_t(g, s, x, rs, P, Y, V, c, t0);
}
DIN_FAST_MULTIVERSION void input_plane(const Geometry& g, const Strip& s, const double* x, int64_t rs, double* P,
                                       double* Y, double* V, int64_t c, int64_t t0) {
  input_transform_plane_t(g, s, x, rs, P, Y, V, c, t0);
}
DIN_FAST_MULTIVERSION void output_plane(const Geometry& g, const Strip& s, const float* M, int64_t co, int64_t t0,
                                        float bias, float slope, float* Z, float* out, int64_t rs) {
  output_transform_plane_t(g, s, M, co, t0, bias, slope, Z, out, rs);
}
DIN_FAST_MULTIVERSION void output_plane(const Geometry& g, const Strip& s, const double* M, int64_t co, int64_t t0,
                                        double bias, double slope, double* Z, double* out, int64_t rs) {
  output_transform_plane_t(g, s, M, co, t0, bias, slope, Z, out, rs);
}
DIN_FAST_MULTIVERSION void output_adjoint_plane(const Geometry& g, const Strip& s, const float* dy, int64_t rs,
                                                const float* zeros, float* Q, float* dM, int64_t co, int64_t t0) {
  output_adjoint_plane_t(g, s, dy, rs, zeros, Q, dM, co, t0);
}
DIN_FAST_MULTIVERSION void output_adjoint_plane(const Geometry& g, const Strip& s, const double* dy, int64_t rs,
                                                const double* zeros, double* Q, double* dM, int64_t co, int64_t t0) {
  output_adjoint_plane_t(g, s, dy, rs, zeros, Q, dM, co, t0);
}
DIN_FAST_MULTIVERSION void input_adjoint_plane(const Geometry& g, const Strip& s, const float* dV, int64_t c,
                                               int64_t t0, float* Rb, float* P, float* dx, int64_t rs, float* edges) {
  input_adjoint_plane_t(g, s, dV, c, t0, Rb, P, dx, rs, edges);
}
DIN_FAST_MULTIVERSION void input_adjoint_plane(const Geometry& g, const Strip& s, const double* dV, int64_t c,
                                               int64_t t0, double* Rb, double* P, double* dx, int64_t rs,
                                               double* edges) {
  input_adjoint_plane_t(g, s, dV, c, t0, Rb, P, dx, rs, edges);
}
DIN_FAST_MULTIVERSION void kernel_block(const float* w, int64_t pairs, int64_t begin, int64_t end, float* U) {
  kernel_transform_t(w, pairs, begin, end, U);
}
DIN_FAST_MULTIVERSION void kernel_block(const double* w, int64_t pairs, int64_t begin, int64_t end, double* U) {
  kernel_transform_t(w, pairs, begin, end, U);
}
DIN_FAST_MULTIVERSION void kernel_adjoint_block(const float* dU, int64_t pairs, int64_t begin, int64_t end,
                                                float* dw) {
  kernel_adjoint_t(dU, pairs, begin, end, dw);
}
DIN_FAST_MULTIVERSION void kernel_adjoint_block(const double* dU, int64_t pairs, int64_t begin, int64_t end,
                                                double* dw) {
  kernel_adjoint_t(dU, pairs, begin, end, dw);
}

// ---- direct convolution for few output channels --------------------------------------------------
// The models' last conv maps C features to 3 colours at the HR size. There Winograd loses: its GEMMs have
// Cout rows (a quarter of the GEMM rate at Cout = 3) and the input transform of all C channels costs more
// than the direct form's 9·C multiply-adds per output value (benchmarks/NOTES.md). At
// Cout <= kDirectMaxCout the op convolves directly.
constexpr int64_t kDirectMaxCout = 4;
constexpr int64_t kDirectRows = 8;    // output rows per work item
constexpr int64_t kDirectBlock = 64;  // output pixels per accumulator row

// Zero-padded input rows of a work item: (C, rows + 2, W + 2 + kDirectBlock) — one zero column left, the
// row, then zeros, so every accumulator block reads in bounds.
int64_t direct_row_length(int64_t W) { return W + 2 + kDirectBlock; }

// Output rows [0, rows) of one image from padded rows P: out[co][r][x] = bias[co] +
// Σ_c Σ_ky (w[co][c][ky][0] P[c][r + ky][x] + w[co][c][ky][1] P[c][r + ky][x + 1] + w[co][c][ky][2] P[c][r + ky][x + 2]).
template <typename T>
DIN_FAST_INLINE void direct_rows_t(const T* P, int64_t C, int64_t rows, int64_t W, int64_t cout, const T* w,
                                   const T* bias, T* out, int64_t out_sc, int64_t out_sh) {
  const int64_t R = direct_row_length(W), plane = (rows + 2) * R;
  alignas(64) T acc[kDirectMaxCout][kDirectBlock];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t x0 = 0; x0 < W; x0 += kDirectBlock) {
      for (int64_t co = 0; co < cout; ++co) std::fill(acc[co], acc[co] + kDirectBlock, bias[co]);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ky = 0; ky < 3; ++ky) {
          const T* in = P + c * plane + (r + ky) * R + x0;
          for (int64_t co = 0; co < cout; ++co) {
            const T* k = w + ((co * C + c) * 3 + ky) * 3;
            const T k0 = k[0], k1 = k[1], k2 = k[2];
            T* a = acc[co];
#pragma omp simd
            for (int64_t x = 0; x < kDirectBlock; ++x) a[x] += k0 * in[x] + k1 * in[x + 1] + k2 * in[x + 2];
          }
        }
      const int64_t n = std::min(kDirectBlock, W - x0);
      for (int64_t co = 0; co < cout; ++co) std::copy(acc[co], acc[co] + n, out + co * out_sc + r * out_sh + x0);
    }
}

DIN_FAST_MULTIVERSION void direct_rows(const float* P, int64_t C, int64_t rows, int64_t W, int64_t cout,
                                       const float* w, const float* bias, float* out, int64_t sc, int64_t sh) {
  direct_rows_t(P, C, rows, W, cout, w, bias, out, sc, sh);
}
DIN_FAST_MULTIVERSION void direct_rows(const double* P, int64_t C, int64_t rows, int64_t W, int64_t cout,
                                       const double* w, const double* bias, double* out, int64_t sc, int64_t sh) {
  direct_rows_t(P, C, rows, W, cout, w, bias, out, sc, sh);
}

// ---- whole-tensor passes, parallel over (b, c) planes ---------------------------------------------

// A (B, C, H, W) feature map whose rows are contiguous (W stride 1): NCHW tensors and channel slices.
template <typename T>
struct Planes {
  T* data;
  int64_t sb, sc, sh;
  T* plane(int64_t b, int64_t c) const { return data + b * sb + c * sc; }
};

// One thread's transform buffers, for strips of up to `rows` tile rows and n tiles.
template <typename T>
struct Scratch {
  std::vector<T> P, rows6, zeros;  // padded rows; 6 row buffers (Y, Z, Q or Rb); W zeros
  Scratch(const Geometry& g, int64_t rows, int64_t n)
      : P((kOut * rows + 2) * g.row()), rows6(kWin * (kOut * n + 2 * kOut)), zeros(g.W, T(0)) {}
};

template <typename T>
void input_transform(const Geometry& g, Planes<const T> x, T* V) {
  const Strip s = whole_plane(g);
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> w(g, g.nh, s.n);
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / g.C, c = bc % g.C;
      input_plane(g, s, x.plane(b, c), x.sh, w.P.data(), w.rows6.data(), V, g.c0 + c, b * s.n);
    }
  });
}

template <typename T>
void output_transform(const Geometry& g, const T* M, const T* bias, T slope, Planes<T> y) {
  const Strip s = whole_plane(g);
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> w(g, 0, s.n);
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / g.C, co = bc % g.C;
      output_plane(g, s, M, g.c0 + co, b * s.n, bias[co], slope, w.rows6.data(), y.plane(b, co), y.sh);
    }
  });
}

template <typename T>
void output_adjoint(const Geometry& g, Planes<const T> dy, T* dM) {
  const Strip s = whole_plane(g);
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> w(g, 0, s.n);
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / g.C, co = bc % g.C;
      output_adjoint_plane(g, s, dy.plane(b, co), dy.sh, w.zeros.data(), w.rows6.data(), dM, g.c0 + co, b * s.n);
    }
  });
}

template <typename T>
void input_adjoint(const Geometry& g, const T* dV, Planes<T> dx) {
  const Strip s = whole_plane(g);
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> w(g, g.nh, s.n);
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / g.C, c = bc % g.C;
      input_adjoint_plane(g, s, dV, g.c0 + c, b * s.n, w.rows6.data(), w.P.data(), dx.plane(b, c), dx.sh, nullptr);
    }
  });
}

template <typename T>
void kernel_transform(const T* w, int64_t pairs, T* U) {
  at::parallel_for(0, pairs, kPairBlock, [&](int64_t begin, int64_t end) { kernel_block(w, pairs, begin, end, U); });
}

template <typename T>
void kernel_adjoint(const T* dU, int64_t pairs, T* dw) {
  at::parallel_for(0, pairs, kPairBlock, [&](int64_t begin, int64_t end) { kernel_adjoint_block(dU, pairs, begin, end, dw); });
}

// ---- building blocks (winograd.h; also registered as private ops, for the tests) ---------------

template <typename T>
Planes<T> planes_of(const at::Tensor& t) {
  return {t.data_ptr<std::remove_const_t<T>>(), t.stride(0), t.stride(1), t.stride(2)};
}

bool rows_contiguous(const at::Tensor& t) { return t.stride(3) == 1 && t.stride(2) == t.size(3); }

// t itself when its rows are contiguous (NCHW, channel slices), else a contiguous copy.
at::Tensor with_contiguous_rows(const at::Tensor& t) { return rows_contiguous(t) ? t : t.contiguous(); }

void check_rows_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(rows_contiguous(t), name, " must have contiguous rows (W stride 1, H stride W)");
}

// A non-empty float32/float64 CPU (B, C, H, W) tensor.
void check_cpu_feature(const at::Tensor& t, const char* name) {
  check_feature(t, name);
  check_cpu_float(t, name);
}

void check_winograd_buffer(const at::Tensor& buf, const char* name, const at::Tensor& like, int64_t offset,
                           int64_t channels, int64_t tiles) {
  TORCH_CHECK_VALUE(buf.dim() == 3 && buf.size(0) == kElems && buf.size(2) == tiles && buf.is_contiguous(), name,
                    " must be a contiguous (36, C, ", tiles, ") tensor, got ", buf.sizes());
  TORCH_CHECK_VALUE(buf.scalar_type() == like.scalar_type() && buf.device() == like.device(), name,
                    " must have the feature map's dtype and device");
  TORCH_CHECK_VALUE(offset >= 0 && offset + channels <= buf.size(1), name, " has ", buf.size(1),
                    " channels; channels ", offset, "..", offset + channels, " do not fit");
}

}  // namespace

// The whole-map building blocks (winograd.h), also composed by csrc/cpu/dense_block.cpp.

at::Tensor winograd_buffer(const at::Tensor& like, int64_t channels) {
  const Geometry g(like.size(0), channels, like.size(2), like.size(3));
  return at::empty({kElems, channels, g.tiles()}, like.options());
}

// U (36, Cout, Cin) of weight (Cout, Cin, 3, 3).
at::Tensor winograd_kernel(const at::Tensor& weight) {
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3, "weight must have shape ",
                    "(Cout, Cin, 3, 3), got ", weight.sizes());
  check_cpu_float(weight, "weight");
  const int64_t cout = weight.size(0), cin = weight.size(1);
  const at::Tensor w = weight.contiguous();
  at::Tensor U = at::empty({kElems, cout, cin}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "winograd_kernel", [&] {
    kernel_transform(w.data_ptr<scalar_t>(), cout * cin, U.data_ptr<scalar_t>());
  });
  return U;
}

// dweight (Cout, Cin, 3, 3) from dU (36, Cout, Cin).
at::Tensor winograd_kernel_adjoint(const at::Tensor& dU) {
  TORCH_CHECK_VALUE(dU.dim() == 3 && dU.size(0) == kElems, "dU must have shape (36, Cout, Cin), got ", dU.sizes());
  check_cpu_float(dU, "dU");
  const at::Tensor d = dU.contiguous();
  const int64_t pairs = dU.size(1) * dU.size(2);
  at::Tensor dw = at::empty({dU.size(1), dU.size(2), 3, 3}, dU.options());
  AT_DISPATCH_FLOATING_TYPES(dU.scalar_type(), "winograd_kernel_adjoint", [&] {
    kernel_adjoint(d.data_ptr<scalar_t>(), pairs, dw.data_ptr<scalar_t>());
  });
  return dw;
}

// Writes the transform of x (B, C, H, W) into channels offset .. offset + C of V (36, Cv, B * tiles).
void winograd_input(const at::Tensor& x, at::Tensor& V, int64_t offset) {
  check_cpu_feature(x, "x");
  const at::Tensor xr = with_contiguous_rows(x);
  const Geometry g(x.size(0), x.size(1), x.size(2), x.size(3), V.dim() == 3 ? V.size(1) : 0, offset);
  check_winograd_buffer(V, "V", x, offset, g.C, g.tiles());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "winograd_input", [&] {
    input_transform(g, planes_of<const scalar_t>(xr), V.data_ptr<scalar_t>());
  });
}

// out (B, Cout, H, W) = leaky_relu(output transform of M (36, Cout, B * tiles) + bias, slope); out's rows
// must be contiguous (a channel slice of a dense buffer is fine).
void winograd_output(const at::Tensor& M, const at::Tensor& bias, double slope, at::Tensor& out) {
  check_cpu_feature(out, "out");
  check_rows_contiguous(out, "out");
  const Geometry g(out.size(0), out.size(1), out.size(2), out.size(3));
  check_winograd_buffer(M, "M", out, 0, g.C, g.tiles());
  TORCH_CHECK_VALUE(M.size(1) == g.C, "M must have ", g.C, " channels, got ", M.size(1));
  check_same(bias, "bias", out, "out", {g.C});
  const at::Tensor b = bias.contiguous();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "winograd_output", [&] {
    output_transform(g, M.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), static_cast<scalar_t>(slope),
                     planes_of<scalar_t>(out));
  });
}

// dM (36, Cout, B * tiles): the adjoint of the output transform applied to grad (B, Cout, H, W).
at::Tensor winograd_output_adjoint(const at::Tensor& grad) {
  check_cpu_feature(grad, "grad");
  const at::Tensor gr = with_contiguous_rows(grad);
  const Geometry g(grad.size(0), grad.size(1), grad.size(2), grad.size(3));
  at::Tensor dM = at::empty({kElems, g.C, g.tiles()}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "winograd_output_adjoint", [&] {
    output_adjoint(g, planes_of<const scalar_t>(gr), dM.data_ptr<scalar_t>());
  });
  return dM;
}

// dx (B, C, H, W) = the adjoint of the input transform applied to channels offset .. offset + C of dV.
void winograd_input_adjoint(const at::Tensor& dV, int64_t offset, at::Tensor& dx) {
  check_cpu_feature(dx, "dx");
  check_rows_contiguous(dx, "dx");
  const Geometry g(dx.size(0), dx.size(1), dx.size(2), dx.size(3), dV.dim() == 3 ? dV.size(1) : 0, offset);
  check_winograd_buffer(dV, "dV", dx, offset, g.C, g.tiles());
  AT_DISPATCH_FLOATING_TYPES(dx.scalar_type(), "winograd_input_adjoint", [&] {
    input_adjoint(g, dV.data_ptr<scalar_t>(), planes_of<scalar_t>(dx));
  });
}

namespace {

// ---- the op ------------------------------------------------------------------------------------

void check_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  check_cpu_feature(x, "x");
  const int64_t cin = x.size(1);
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(0) > 0, "weight must have shape (Cout, ", cin,
                    ", 3, 3), got ", weight.sizes());
  const int64_t cout = weight.size(0);
  check_same(weight, "weight", x, "x", {cout, cin, 3, 3});
  check_same(bias, "bias", x, "x", {cout});
}

// How the op cuts B images into strips of `rows` tile rows (an image's last strip may be shorter).
struct Strips {
  int64_t nh, per_row, rows, per_image, count, max_n;  // per_row: tiles per tile row (junk included)
  Strips(const Geometry& g, int64_t cin, int64_t cout, int64_t elem_size) : nh(g.nh), per_row(g.nw + 1) {
    const int64_t threads = at::get_num_threads();
    // At most the tile rows whose V and M fit ~2 MiB (at least 64 tiles: the GEMMs lose efficiency below
    // N ≈ 100, N = 16 runs at ~30 % of the large-N rate).
    const int64_t budget = std::max<int64_t>((int64_t(2) << 20) / (kElems * elem_size * (cin + cout)), 64);
    const int64_t most = std::clamp<int64_t>(budget / per_row, 1, g.nh);
    // Among those, the height that gives the busiest thread the fewest GEMM columns: a strip's N is rounded
    // up to 16 (the GEMM kernels' block, so the junk is computed for free), plus ~32 columns' worth of
    // fixed cost per strip; threads take contiguous runs of ceil(count / threads) strips.
    rows = 1;
    int64_t best = -1;
    for (int64_t r = 1; r <= most; ++r) {
      const int64_t strips = g.B * ((g.nh + r - 1) / r);
      const int64_t cost = (strips + threads - 1) / threads * (vec_tiles(r * per_row) + 32);
      if (best < 0 || cost <= best) best = cost, rows = r;
    }
    if (const char* forced = std::getenv("DIN_FAST_CONV3X3_STRIP_ROWS")) {  // tests: any strip height
      rows = std::clamp<int64_t>(std::atoll(forced), 1, g.nh);
    }
    per_image = (g.nh + rows - 1) / rows;
    count = g.B * per_image;
    max_n = vec_tiles(rows * per_row);
  }
  int64_t image(int64_t j) const { return j / per_image; }
  Strip at(int64_t j) const {
    const int64_t th0 = (j % per_image) * rows, th1 = std::min(th0 + rows, nh);
    const int64_t n = vec_tiles((th1 - th0) * per_row);
    return {th0, th1, n, n};
  }
};

// V (36, C, s.n) for strip s of image b of x: every channel's input transform.
template <typename T>
void input_strip(const Geometry& g, const Strip& s, Planes<const T> x, int64_t b, Scratch<T>& w, T* V) {
  for (int64_t c = 0; c < g.C; ++c) input_plane(g, s, x.plane(b, c), x.sh, w.P.data(), w.rows6.data(), V, c, 0);
}

// A buffer of this thread's that outlives the call (grow-only): a fresh multi-megabyte allocation per
// call is mmapped and page-faulted again each time, which can cost more than the arithmetic.
// `Slot` tells a thread's buffers apart.
template <typename T, int Slot>
T* thread_buffer(int64_t count) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < count) buf.resize(count);
  return buf.data();
}

// (36, C, n) matrices over a strip's buffer, for the batched GEMMs.
at::Tensor strip_matrix(void* data, int64_t channels, int64_t n, const at::TensorOptions& opts) {
  return at::from_blob(data, {kElems, channels, n}, opts);
}

template <typename T>
void conv3x3_strips(const Geometry& gx, const Geometry& gy, Planes<const T> x, const at::Tensor& U, const T* bias,
                    Planes<T> y) {
  const Strips strips(gx, gx.C, gy.C, sizeof(T));
  const auto opts = U.options();
  at::parallel_for(0, strips.count, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> w(gx, strips.rows, strips.max_n);
    T* V = thread_buffer<T, 0>(kElems * gx.C * strips.max_n);
    T* M = thread_buffer<T, 1>(kElems * gy.C * strips.max_n);
    for (int64_t j = begin; j < end; ++j) {
      const Strip s = strips.at(j);
      const int64_t b = strips.image(j);
      input_strip(gx, s, x, b, w, V);
      at::Tensor Mt = strip_matrix(M, gy.C, s.n, opts);
      at::bmm_out(Mt, U, strip_matrix(V, gx.C, s.n, opts));
      for (int64_t co = 0; co < gy.C; ++co)
        output_plane(gy, s, M, co, 0, bias[co], T(1), w.rows6.data(), y.plane(b, co), y.sh);
    }
  });
}

// Backward per strip: dM from dy, V from x (recomputed), dU += dM Vᵀ (one accumulator per thread, added
// up at the end), dV = Uᵀ dM, dx from dV; the two image rows each pair of neighbouring strips shares are
// added up after the parallel loop.
template <typename T>
void conv3x3_backward_strips(const Geometry& gx, const Geometry& gy, Planes<const T> dy, Planes<const T> x,
                             const at::Tensor& U, Planes<T> dx, at::Tensor& dU) {
  const Strips strips(gx, gx.C, gy.C, sizeof(T));
  const auto opts = U.options();
  const at::Tensor Ut = U.transpose(1, 2);
  std::vector<T> edges(strips.count * gx.C * 4 * gx.W);
  std::vector<at::Tensor> dU_parts(at::get_num_threads());
  at::parallel_for(0, strips.count, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> w(gx, strips.rows, strips.max_n);
    T* V = thread_buffer<T, 0>(kElems * gx.C * strips.max_n);
    T* dM = thread_buffer<T, 1>(kElems * gy.C * strips.max_n);
    T* dV = thread_buffer<T, 2>(kElems * gx.C * strips.max_n);
    at::Tensor& acc = dU_parts[at::get_thread_num()];
    for (int64_t j = begin; j < end; ++j) {
      const Strip s = strips.at(j);
      const int64_t b = strips.image(j);
      for (int64_t co = 0; co < gy.C; ++co)
        output_adjoint_plane(gy, s, dy.plane(b, co), dy.sh, w.zeros.data(), w.rows6.data(), dM, co, 0);
      input_strip(gx, s, x, b, w, V);
      const at::Tensor dMt = strip_matrix(dM, gy.C, s.n, opts), Vt = strip_matrix(V, gx.C, s.n, opts);
      if (acc.defined()) {
        acc.baddbmm_(dMt, Vt.transpose(1, 2));
      } else {
        acc = at::bmm(dMt, Vt.transpose(1, 2));
      }
      at::Tensor dVt = strip_matrix(dV, gx.C, s.n, opts);
      at::bmm_out(dVt, Ut, dMt);
      for (int64_t c = 0; c < gx.C; ++c)
        input_adjoint_plane(gx, s, dV, c, 0, w.rows6.data(), w.P.data(), dx.plane(b, c), dx.sh,
                            edges.data() + (j * gx.C + c) * 4 * gx.W);
    }
  });
  // Strip j's bottom rows (4 th1 - 1, 4 th1) are strip j + 1's top rows, when both are in one image.
  at::parallel_for(0, strips.count * gx.C, 16, [&](int64_t begin, int64_t end) {
    for (int64_t jc = begin; jc < end; ++jc) {
      const int64_t j = jc / gx.C, c = jc % gx.C;
      const Strip s = strips.at(j);
      if (s.th1 == gx.nh) continue;
      const T* lo = edges.data() + jc * 4 * gx.W + 2 * gx.W;
      const T* hi = edges.data() + (jc + gx.C) * 4 * gx.W;
      T* d = dx.plane(strips.image(j), c) + (kOut * s.th1 - 1) * dx.sh;
      for (int64_t x = 0; x < gx.W; ++x) d[x] = lo[x] + hi[x];
      for (int64_t x = 0; x < gx.W; ++x) d[dx.sh + x] = lo[gx.W + x] + hi[gx.W + x];
    }
  });
  for (const at::Tensor& part : dU_parts) {
    if (!part.defined()) continue;
    if (dU.defined()) {
      dU.add_(part);
    } else {
      dU = part;
    }
  }
}

// The direct convolution (Cout <= kDirectMaxCout), parallel over blocks of kDirectRows output rows.
template <typename T>
void conv3x3_direct(const Geometry& gx, Planes<const T> x, const T* w, const T* bias, int64_t cout, Planes<T> y) {
  const int64_t per_image = (gx.H + kDirectRows - 1) / kDirectRows, R = direct_row_length(gx.W);
  at::parallel_for(0, gx.B * per_image, 1, [&](int64_t begin, int64_t end) {
    T* P = thread_buffer<T, 3>(gx.C * (kDirectRows + 2) * R);
    for (int64_t j = begin; j < end; ++j) {
      const int64_t b = j / per_image, y0 = (j % per_image) * kDirectRows;
      const int64_t rows = std::min(kDirectRows, gx.H - y0), plane = (rows + 2) * R;
      for (int64_t c = 0; c < gx.C; ++c)  // padded row p is image row y0 + p - 1
        padded_rows(x.plane(b, c), x.sh, gx.H, gx.W, y0 - 1, rows + 2, R, P + c * plane);
      direct_rows(P, gx.C, rows, gx.W, cout, w, bias, y.plane(b, 0) + y0 * y.sh, y.sc, y.sh);
    }
  });
}

at::Tensor conv3x3_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  check_args(x, weight, bias);
  const at::Tensor xr = with_contiguous_rows(x), b = bias.contiguous();
  at::Tensor y = at::empty({x.size(0), weight.size(0), x.size(2), x.size(3)}, x.options());
  const Geometry gx(x.size(0), x.size(1), x.size(2), x.size(3)), gy(y.size(0), y.size(1), y.size(2), y.size(3));
  if (gy.C <= kDirectMaxCout) {
    const at::Tensor w = weight.contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_cpu", [&] {
      conv3x3_direct(gx, planes_of<const scalar_t>(xr), w.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), gy.C,
                     planes_of<scalar_t>(y));
    });
    return y;
  }
  const at::Tensor U = winograd_kernel(weight);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_cpu", [&] {
    conv3x3_strips(gx, gy, planes_of<const scalar_t>(xr), U, b.data_ptr<scalar_t>(), planes_of<scalar_t>(y));
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv3x3_backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                                    const at::Tensor& weight, const at::Tensor& bias) {
  check_args(x, weight, bias);
  check_same(grad, "grad", x, "x", {x.size(0), weight.size(0), x.size(2), x.size(3)});
  const at::Tensor xr = with_contiguous_rows(x), gr = with_contiguous_rows(grad), U = winograd_kernel(weight);
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous), dU;
  const Geometry gx(x.size(0), x.size(1), x.size(2), x.size(3)), gy(gr.size(0), gr.size(1), gr.size(2), gr.size(3));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_backward_cpu", [&] {
    conv3x3_backward_strips(gx, gy, planes_of<const scalar_t>(gr), planes_of<const scalar_t>(xr), U,
                            planes_of<scalar_t>(dx), dU);
  });
  return {dx, winograd_kernel_adjoint(dU), grad.sum({0, 2, 3})};
}

}  // namespace

int64_t winograd_tiles(int64_t h, int64_t w) { return Geometry(1, 1, h, w).plane_tiles(); }

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_conv3x3_cpp", &conv3x3_cpu);
  m.impl("_conv3x3_backward_cpp", &conv3x3_backward_cpu);
  m.impl("_winograd_kernel_cpp", &winograd_kernel);
  m.impl("_winograd_kernel_adjoint_cpp", &winograd_kernel_adjoint);
  m.impl("_winograd_input_cpp", &winograd_input);
  m.impl("_winograd_output_cpp", &winograd_output);
  m.impl("_winograd_output_adjoint_cpp", &winograd_output_adjoint);
  m.impl("_winograd_input_adjoint_cpp", &winograd_input_adjoint);
}

}  // namespace din_fast
