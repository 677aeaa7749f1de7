// C++ CPU kernels of `dilated_encdec` (DeFiAN's DiEnDec + 1x1 gate; din_fast/ops/dilated_encdec.py has
// the maths and shapes).
//
// Every layer is evaluated as a 3x3 conv with dilation d on zero-padded planes: a plane holds channels of
// rows of width Wp = M + Wv + M, where Wv is W rounded up to whole SIMD vectors and the M ≥ 4 margin
// columns (and any row outside the image) are zero, so the convs' zero padding needs no bounds checks.
// The three transposed convs (stride 1) are convs with the transposed, spatially flipped weight ("Weff").
// Weights are repacked as [ci][ky][kx][co] so that one input vector is multiplied by COUT consecutive
// scalars into COUT vector accumulators held in registers.
//
// Forward: tasks are (image, band of output rows). A task keeps its band plus a halo in its own scratch
// planes: the input h with 14 rows, and layer k's output with the rows the layers after it need
// (13, 11, 7, 3, 1 for a0..a4; rows outside the image stay zero, as the convs' padding). The sixth layer
// and the gate are one epilogue that writes the output row. h is read once, the output written once.
//
// Backward: the activations are recomputed layer by layer into whole-image planes (no halo
// recomputation), then each layer's pass, from the last to the first, reads dz_k (the gradient of its
// pre-activation) to accumulate the weight and bias gradients in per-thread vector accumulators and to
// write dz_{k-1} = conv(dz_k, flipped Weffᵀ) ⊙ [a_{k-1} > 0] (for k = 0: dh). The gate's backward is an
// epilogue of the recompute of the last layer. Threads take whole images when the batch divides evenly
// (no barrier between passes), else the rows of each pass.
//
// SIMD: the kernels are written with GCC vector extensions, instantiated for AVX-512, AVX2+FMA and the
// baseline, and chosen at run time from the CPU's features (the library is built for generic x86-64).
#pragma GCC optimize("fp-contract=fast")  // fuse a * b + c into FMAs (the ISO mode of -std=c++20 turns it off)
#pragma GCC diagnostic ignored "-Wpsabi"   // vector types only cross always-inlined calls

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <tuple>
#include <vector>

#include "common.h"
#include "dilated_encdec.h"
#include "simd.h"

#define ENCDEC_INLINE inline __attribute__((always_inline))

namespace din_fast {
namespace {

using namespace encdec;  // the layer table kCin, kCout, kDilation and the argument checks

// Rows (and columns) beyond an output tile that plane p needs: p = 0 is h, p = k + 1 is a_k. Each is the
// next plane's halo plus the dilation of the layer that reads it; their sum is the receptive radius 14.
constexpr int kHalo[7] = {14, 13, 11, 7, 3, 1, 0};
constexpr int kMaxChannels = 24;
constexpr int kPadRows = 4;         // zero rows above and below a whole-image plane: the largest dilation
constexpr int64_t kMaxBandRows = 128;  // forward band height cap (bounds a task's scratch for tall images)

// Per-thread gradient accumulators (in vectors): for each layer dWeff as [ci][ky][kx][co], then db [co];
// then the gate's dW (3) and db (1).
constexpr int layer_acc_size(int k) { return kCin[k] * 9 * kCout[k] + kCout[k]; }
constexpr int acc_offset(int k) { return k == 0 ? 0 : acc_offset(k - 1) + layer_acc_size(k - 1); }
constexpr int kGateAcc = acc_offset(6);
constexpr int kAccVectors = kGateAcc + 4;

// ----------------------------------------------------------------------------------------------------
// Parameters, repacked once per call.

template <typename T>
struct Params {
  std::vector<T> fwd[6];   // Weff_k as [ci][ky][kx][co]: the forward conv
  std::vector<T> grad[6];  // Weff_k flipped and transposed, as [co][ky][kx][ci]: the input-gradient conv
  std::vector<T> bias[6];
  T zeros[kMaxChannels] = {};  // the input-gradient convs have no bias
  T gate_w[3], gate_b;

  Params(at::TensorList weights, at::TensorList biases) {
    for (int k = 0; k < 6; ++k) {
      const at::Tensor w = weights[k].contiguous(), b = biases[k].contiguous();
      const T* src = w.data_ptr<T>();
      const int cin = kCin[k], cout = kCout[k];
      fwd[k].resize(cin * 9 * cout);
      grad[k].resize(cin * 9 * cout);
      for (int co = 0; co < cout; ++co)
        for (int ci = 0; ci < cin; ++ci)
          for (int t = 0; t < 9; ++t) {
            // Conv2d stores (out, in, ky, kx); ConvTranspose2d (in, out, ky, kx) with Weff the flipped tap.
            const T v = k < 3 ? src[(co * cin + ci) * 9 + t] : src[(ci * cout + co) * 9 + (8 - t)];
            fwd[k][(ci * 9 + t) * cout + co] = v;
            grad[k][(co * 9 + (8 - t)) * cin + ci] = v;
          }
      bias[k].assign(b.data_ptr<T>(), b.data_ptr<T>() + cout);
    }
    const at::Tensor gw = weights[6].contiguous();
    std::copy_n(gw.data_ptr<T>(), 3, gate_w);
    gate_b = biases[6].contiguous().data_ptr<T>()[0];
  }
};

// Row geometry for L lanes per vector: x ∈ [0, W) is the image, [W, Wv) the zeroed vector tail, and M
// zero columns on each side cover the largest dilation.
struct Geometry {
  int64_t W, L, M, Wv, Wp;
  Geometry(int64_t width, int64_t lanes)
      : W(width), L(lanes), M((4 + lanes - 1) / lanes * lanes), Wv((width + lanes - 1) / lanes * lanes),
        Wp(Wv + 2 * M) {}
};

// A stack of zero-padded rows: at(c, y) points at x = 0 of row y of channel c.
template <typename T>
struct Plane {
  T* base;     // x = 0 of row y0, channel 0
  int64_t cs;  // channel stride
  int64_t y0;
  int64_t rs;  // row stride (Wp)
  T* at(int64_t c, int64_t y) const { return base + c * cs + (y - y0) * rs; }
};

template <typename T>
ENCDEC_INLINE void zero_margins(T* row, const Geometry& g) {
  std::fill(row - g.M, row, T(0));
  std::fill(row + g.W, row + g.Wv + g.M, T(0));
}

template <typename T>
ENCDEC_INLINE void zero_row(T* row, const Geometry& g) { std::fill(row - g.M, row + g.Wv + g.M, T(0)); }

// ----------------------------------------------------------------------------------------------------
// SIMD building blocks (the vector type is simd.h's Simd).

// Vectors per block along x, so that NX·COUT accumulators (plus a few operands) fit the register file.
template <int VB>
constexpr int block_vectors(int cout) {
  const int regs = VB == 64 ? 24 : 12;
  return std::max(1, std::min(4, regs / cout));
}

// acc[n][co] = bias[co] + Σ_{ci,ky,kx} w[ci][ky][kx][co] · in[ci][y + (ky−1)·D][x + n·L + (kx−1)·D] for the
// NX vectors starting at x; `in` points at (ci = 0, row y, x = 0). Then epi(x + n·L, acc[n]).
template <typename T, int VB, int CIN, int COUT, int D, int NX, class Epi>
ENCDEC_INLINE void conv_block(const T* in, int64_t cs, int64_t rs, const T* w, const T* bias, int64_t x, Epi& epi) {
  using S = Simd<T, VB>;
  using V = typename S::V;
  V acc[NX][COUT];
#pragma GCC unroll 4
  for (int n = 0; n < NX; ++n)
#pragma GCC unroll 24
    for (int co = 0; co < COUT; ++co) acc[n][co] = S::splat(bias[co]);
  for (int ci = 0; ci < CIN; ++ci) {
#pragma GCC unroll 3
    for (int ky = 0; ky < 3; ++ky) {
      const T* row = in + ci * cs + (ky - 1) * D * rs + x - D;
#pragma GCC unroll 3
      for (int kx = 0; kx < 3; ++kx) {
        const T* wk = w + ((ci * 3 + ky) * 3 + kx) * COUT;
        V v[NX];
#pragma GCC unroll 4
        for (int n = 0; n < NX; ++n) v[n] = S::load(row + kx * D + n * S::L);
#pragma GCC unroll 24
        for (int co = 0; co < COUT; ++co)
#pragma GCC unroll 4
          for (int n = 0; n < NX; ++n) acc[n][co] += v[n] * wk[co];
      }
    }
  }
#pragma GCC unroll 4
  for (int n = 0; n < NX; ++n) epi(x + n * S::L, acc[n]);
}

// One output row over x ∈ [0, Wv).
template <typename T, int VB, int CIN, int COUT, int D, class Epi>
ENCDEC_INLINE void conv_row(const T* in, int64_t cs, int64_t rs, const T* w, const T* bias, int64_t Wv, Epi& epi) {
  constexpr int NX = block_vectors<VB>(COUT);
  constexpr int L = Simd<T, VB>::L;
  int64_t x = 0;
  for (; x + NX * L <= Wv; x += NX * L) conv_block<T, VB, CIN, COUT, D, NX>(in, cs, rs, w, bias, x, epi);
  for (; x < Wv; x += L) conv_block<T, VB, CIN, COUT, D, 1>(in, cs, rs, w, bias, x, epi);
}

// Weight and bias gradients of one row of dz (COUT channels, row y) against the input plane (CIN channels,
// `in` at row y): dW[ci][ky][kx][co] += Σ_x dz[co][x] · in[ci][y + (ky−1)·D][x + (kx−1)·D], db[co] += Σ_x dz[co][x],
// as vectors (lanes are summed once at the end). dz is zero for x ≥ W, so the vector tail adds nothing.
template <typename T, int VB, int CIN, int COUT, int D>
ENCDEC_INLINE void weight_grad_row(const T* in, int64_t ics, int64_t rs, const T* dz, int64_t dcs, int64_t Wv,
                                   typename Simd<T, VB>::V* dW, typename Simd<T, VB>::V* db, T* staged) {
  using S = Simd<T, VB>;
  using V = typename S::V;
  constexpr int NX = block_vectors<VB>(COUT);
  constexpr int L = S::L;
  // The row of dz interleaved by vector, [x / L][co]: the COUT operands of one input vector are
  // contiguous, so the loop below needs one pointer (COUT channel pointers would not fit the registers).
  // `staged` holds Wv · COUT elements.
  const int64_t nv = Wv / L;
  for (int co = 0; co < COUT; ++co) {
    V s = db[co];
    for (int64_t i = 0; i < nv; ++i) {
      const V z = S::load(dz + co * dcs + i * L);
      S::store(staged + (i * COUT + co) * L, z);
      s += z;
    }
    db[co] = s;
  }
  for (int ci = 0; ci < CIN; ++ci) {
#pragma GCC unroll 3
    for (int ky = 0; ky < 3; ++ky) {
#pragma GCC unroll 3
      for (int kx = 0; kx < 3; ++kx) {
        const T* p = in + ci * ics + (ky - 1) * D * rs + (kx - 1) * D;
        V acc[NX][COUT];
#pragma GCC unroll 4
        for (int n = 0; n < NX; ++n)
#pragma GCC unroll 24
          for (int co = 0; co < COUT; ++co) acc[n][co] = V{};
        int64_t i = 0;
        for (; i + NX <= nv; i += NX) {
          V v[NX];
#pragma GCC unroll 4
          for (int n = 0; n < NX; ++n) v[n] = S::load(p + (i + n) * L);
          const T* z = staged + i * COUT * L;
#pragma GCC unroll 24
          for (int co = 0; co < COUT; ++co)
#pragma GCC unroll 4
            for (int n = 0; n < NX; ++n) acc[n][co] += v[n] * S::load(z + (n * COUT + co) * L);
        }
        for (; i < nv; ++i) {
          const V v = S::load(p + i * L);
          const T* z = staged + i * COUT * L;
#pragma GCC unroll 24
          for (int co = 0; co < COUT; ++co) acc[0][co] += v * S::load(z + co * L);
        }
        V* d = dW + ((ci * 3 + ky) * 3 + kx) * COUT;
#pragma GCC unroll 24
        for (int co = 0; co < COUT; ++co) {
          V s = acc[0][co];
#pragma GCC unroll 4
          for (int n = 1; n < NX; ++n) s += acc[n][co];
          d[co] += s;
        }
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------------
// Epilogues: what happens to a block's accumulators.

template <typename T, int VB>
struct StoreRelu {  // a_k = relu(z_k) into a plane row
  T* out;
  int64_t cs;
  template <int C>
  ENCDEC_INLINE void operator()(int64_t x, typename Simd<T, VB>::V (&a)[C]) const {
    for (int c = 0; c < C; ++c) Simd<T, VB>::store(out + c * cs + x, Simd<T, VB>::relu(a[c]));
  }
};

template <typename T, int VB>
struct StoreMasked {  // dz_{k-1} = g ⊙ [not a_{k-1} <= 0] (threshold_backward: 0 at 0, g at NaN, as PyTorch)
  T* out;
  int64_t cs;
  const T* act;
  int64_t acs;
  template <int C>
  ENCDEC_INLINE void operator()(int64_t x, typename Simd<T, VB>::V (&a)[C]) const {
    using S = Simd<T, VB>;
    for (int c = 0; c < C; ++c) S::store(out + c * cs + x, S::load(act + c * acs + x) <= T(0) ? typename S::V{} : a[c]);
  }
};

template <typename T, int VB>
struct StoreImage {  // dh: an unpadded (H, W) row per channel
  T* out;
  int64_t cs;
  int64_t W;
  template <int C>
  ENCDEC_INLINE void operator()(int64_t x, typename Simd<T, VB>::V (&a)[C]) const {
    for (int c = 0; c < C; ++c) Simd<T, VB>::store_partial(out + c * cs + x, a[c], W - x);
  }
};

template <typename T, int VB>
struct GateForward {  // out = gate_b + Σ_c gate_w[c] · relu(z_5[c]), an unpadded output row
  T* out;
  int64_t W;
  const Params<T>* p;
  ENCDEC_INLINE void operator()(int64_t x, typename Simd<T, VB>::V (&a)[3]) const {
    using S = Simd<T, VB>;
    typename S::V v = S::splat(p->gate_b);
    for (int c = 0; c < 3; ++c) v += S::relu(a[c]) * p->gate_w[c];
    S::store_partial(out + x, v, W - x);
  }
};

template <typename T, int VB>
struct GateBackward {  // stores a_5, dz_5 = gate_w ⊙ grad ⊙ [a_5 > 0]; accumulates the gate's dW, db
  T* act;
  T* dz;
  int64_t cs;
  const T* grad;  // padded grad row (zero for x ≥ W)
  const Params<T>* p;
  typename Simd<T, VB>::V* acc;  // dW (3), db (1)
  ENCDEC_INLINE void operator()(int64_t x, typename Simd<T, VB>::V (&a)[3]) const {
    using S = Simd<T, VB>;
    const typename S::V g = S::load(grad + x);
    for (int c = 0; c < 3; ++c) {
      const typename S::V r = S::relu(a[c]);
      S::store(act + c * cs + x, r);
      S::store(dz + c * cs + x, r <= T(0) ? typename S::V{} : g * p->gate_w[c]);
      acc[c] += g * r;
    }
    acc[3] += g;
  }
};

// ----------------------------------------------------------------------------------------------------
// Forward: one (image, band) task.

template <typename T>
struct ForwardArgs {
  const T* h;  // (B, 3, H, W) contiguous
  T* out;      // (B, 1, H, W)
  int64_t H, W;
  const Params<T>* p;
};

template <typename T, int VB, int K>
ENCDEC_INLINE void forward_band_layer(const ForwardArgs<T>& a, const Geometry& g, const Plane<T>* planes, int64_t r0,
                                      int64_t r1) {
  const Plane<T>& in = planes[K];
  const Plane<T>& out = planes[K + 1];
  StoreRelu<T, VB> epi{nullptr, out.cs};
  for (int64_t y = r0 - kHalo[K + 1]; y < r1 + kHalo[K + 1]; ++y) {
    if (y < 0 || y >= a.H) {
      for (int c = 0; c < kCout[K]; ++c) zero_row(out.at(c, y), g);
      continue;
    }
    epi.out = out.at(0, y);
    conv_row<T, VB, kCin[K], kCout[K], kDilation[K]>(in.at(0, y), in.cs, in.rs, a.p->fwd[K].data(),
                                                     a.p->bias[K].data(), g.Wv, epi);
    for (int c = 0; c < kCout[K]; ++c) zero_margins(out.at(c, y), g);
  }
}

template <typename T, int VB>
ENCDEC_INLINE void forward_band(const ForwardArgs<T>& a, int64_t b, int64_t r0, int64_t r1) {
  const Geometry g(a.W, Simd<T, VB>::L);
  const int64_t rows = r1 - r0;
  // Scratch planes 0..5: h, a0..a4 (a5 lives only in registers).
  int64_t sizes[6], total = 0;
  for (int p = 0; p < 6; ++p) {
    sizes[p] = (p == 0 ? 3 : kCout[p - 1]) * (rows + 2 * kHalo[p]) * g.Wp;
    total += sizes[p];
  }
  std::unique_ptr<T[]> scratch(new T[total]);  // uninitialised: every element is written before it is read
  Plane<T> planes[6];
  T* base = scratch.get();
  for (int p = 0; p < 6; ++p) {
    planes[p] = Plane<T>{base + g.M, (rows + 2 * kHalo[p]) * g.Wp, r0 - kHalo[p], g.Wp};
    base += sizes[p];
  }
  const T* h = a.h + b * 3 * a.H * a.W;
  for (int64_t y = r0 - kHalo[0]; y < r1 + kHalo[0]; ++y) {
    for (int c = 0; c < 3; ++c) {
      T* row = planes[0].at(c, y);
      if (y < 0 || y >= a.H) {
        zero_row(row, g);
      } else {
        std::copy_n(h + (c * a.H + y) * a.W, a.W, row);
        zero_margins(row, g);
      }
    }
  }
  forward_band_layer<T, VB, 0>(a, g, planes, r0, r1);
  forward_band_layer<T, VB, 1>(a, g, planes, r0, r1);
  forward_band_layer<T, VB, 2>(a, g, planes, r0, r1);
  forward_band_layer<T, VB, 3>(a, g, planes, r0, r1);
  forward_band_layer<T, VB, 4>(a, g, planes, r0, r1);
  const Plane<T>& in = planes[5];
  for (int64_t y = r0; y < r1; ++y) {
    GateForward<T, VB> epi{a.out + (b * a.H + y) * a.W, a.W, a.p};
    conv_row<T, VB, 6, 3, 1>(in.at(0, y), in.cs, in.rs, a.p->fwd[5].data(), a.p->bias[5].data(), g.Wv, epi);
  }
}

// ----------------------------------------------------------------------------------------------------
// Backward: row-parallel passes over whole-image planes.

template <typename T>
struct BackwardArgs {
  const T* h;     // (B, 3, H, W) contiguous
  const T* grad;  // (B, 1, H, W) contiguous
  T* dh;          // (B, 3, H, W)
  int64_t B, H, W;
  const Params<T>* p;
  T* act[7];      // planes h, a0..a5, each (B, C, H + 2·kPadRows, Wp), zero pad rows
  T* dz[2];       // ping-pong dz planes (B, 24, H + 2·kPadRows, Wp)
  T* gradp;       // grad as a padded plane (B, 1, ...)
  T* acc;         // per-thread accumulators, kAccVectors vectors each
  int64_t plane_rows, Wp, M;
  int64_t b0;     // the image whose planes come first (the planes may hold a slice of the batch)

  // Channel c, row y of image b in a whole-image plane with C channels.
  T* at(T* plane, int64_t C, int64_t b, int64_t c, int64_t y) const {
    return plane + (((b - b0) * C + c) * plane_rows + y + kPadRows) * Wp + M;
  }
  int64_t cs() const { return plane_rows * Wp; }
};

constexpr int channels_of_plane(int p) { return p == 0 ? 3 : kCout[p - 1]; }

// Recompute a_K (K < 5) for one row.
template <typename T, int VB, int K>
ENCDEC_INLINE void backward_forward_row(const BackwardArgs<T>& a, const Geometry& g, int64_t b, int64_t y) {
  StoreRelu<T, VB> epi{a.at(a.act[K + 1], kCout[K], b, 0, y), a.cs()};
  conv_row<T, VB, kCin[K], kCout[K], kDilation[K]>(a.at(a.act[K], kCin[K], b, 0, y), a.cs(), a.Wp,
                                                   a.p->fwd[K].data(), a.p->bias[K].data(), g.Wv, epi);
  for (int c = 0; c < kCout[K]; ++c) zero_margins(a.at(a.act[K + 1], kCout[K], b, c, y), g);
}

// Layer K's gradients for one row of dz_K; writes dz_{K-1} (or dh for K = 0).
template <typename T, int VB, int K>
ENCDEC_INLINE void backward_layer_row(const BackwardArgs<T>& a, const Geometry& g, int64_t b, int64_t y,
                                      typename Simd<T, VB>::V* acc, T* staged) {
  constexpr int cin = kCin[K], cout = kCout[K];
  T* dz_in = a.dz[(5 - K) % 2];
  T* dz_out = a.dz[(6 - K) % 2];
  const T* dzr = a.at(dz_in, kMaxChannels, b, 0, y);
  weight_grad_row<T, VB, cin, cout, kDilation[K]>(a.at(a.act[K], cin, b, 0, y), a.cs(), a.Wp, dzr, a.cs(), g.Wv,
                                                  acc + acc_offset(K), acc + acc_offset(K) + cin * 9 * cout, staged);
  if constexpr (K == 0) {
    StoreImage<T, VB> epi{a.dh + (b * 3 * a.H + y) * a.W, a.H * a.W, a.W};
    conv_row<T, VB, cout, cin, kDilation[K]>(dzr, a.cs(), a.Wp, a.p->grad[K].data(), a.p->zeros, g.Wv, epi);
  } else {
    StoreMasked<T, VB> epi{a.at(dz_out, kMaxChannels, b, 0, y), a.cs(), a.at(a.act[K], cin, b, 0, y), a.cs()};
    conv_row<T, VB, cout, cin, kDilation[K]>(dzr, a.cs(), a.Wp, a.p->grad[K].data(), a.p->zeros, g.Wv, epi);
    for (int c = 0; c < cin; ++c) zero_margins(a.at(dz_out, kMaxChannels, b, c, y), g);
  }
}

// Pass 0 copies h and grad into planes; passes 1..5 recompute a0..a4; pass 6 recomputes a5 with the gate's
// backward; passes 7..12 are the layers' backward, from layer 5 down to layer 0.
constexpr int kBackwardPasses = 13;

template <typename T, int VB>
ENCDEC_INLINE void backward_rows(const BackwardArgs<T>& a, int pass, int64_t begin, int64_t end, int tid) {
  using V = typename Simd<T, VB>::V;
  const Geometry g(a.W, Simd<T, VB>::L);
  V* acc = reinterpret_cast<V*>(a.acc) + static_cast<int64_t>(tid) * kAccVectors;
  std::unique_ptr<T[]> staged(pass >= 7 ? new T[g.Wv * kMaxChannels] : nullptr);  // weight_grad_row's dz row
  for (int64_t n = begin; n < end; ++n) {
    const int64_t b = n / a.H, y = n % a.H;
    switch (pass) {
      case 0: {
        for (int c = 0; c < 3; ++c) {
          T* row = a.at(a.act[0], 3, b, c, y);
          std::copy_n(a.h + ((b * 3 + c) * a.H + y) * a.W, a.W, row);
          zero_margins(row, g);
        }
        T* row = a.at(a.gradp, 1, b, 0, y);
        std::copy_n(a.grad + (b * a.H + y) * a.W, a.W, row);
        zero_margins(row, g);
        break;
      }
      case 1: backward_forward_row<T, VB, 0>(a, g, b, y); break;
      case 2: backward_forward_row<T, VB, 1>(a, g, b, y); break;
      case 3: backward_forward_row<T, VB, 2>(a, g, b, y); break;
      case 4: backward_forward_row<T, VB, 3>(a, g, b, y); break;
      case 5: backward_forward_row<T, VB, 4>(a, g, b, y); break;
      case 6: {
        GateBackward<T, VB> epi{a.at(a.act[6], 3, b, 0, y), a.at(a.dz[0], kMaxChannels, b, 0, y), a.cs(),
                                a.at(a.gradp, 1, b, 0, y), a.p, acc + kGateAcc};
        conv_row<T, VB, 6, 3, 1>(a.at(a.act[5], 6, b, 0, y), a.cs(), a.Wp, a.p->fwd[5].data(), a.p->bias[5].data(),
                                 g.Wv, epi);
        for (int c = 0; c < 3; ++c) {
          zero_margins(a.at(a.act[6], 3, b, c, y), g);
          zero_margins(a.at(a.dz[0], kMaxChannels, b, c, y), g);
        }
        break;
      }
      case 7: backward_layer_row<T, VB, 5>(a, g, b, y, acc, staged.get()); break;
      case 8: backward_layer_row<T, VB, 4>(a, g, b, y, acc, staged.get()); break;
      case 9: backward_layer_row<T, VB, 3>(a, g, b, y, acc, staged.get()); break;
      case 10: backward_layer_row<T, VB, 2>(a, g, b, y, acc, staged.get()); break;
      case 11: backward_layer_row<T, VB, 1>(a, g, b, y, acc, staged.get()); break;
      case 12: backward_layer_row<T, VB, 0>(a, g, b, y, acc, staged.get()); break;
    }
  }
}

// ----------------------------------------------------------------------------------------------------
// Instruction-set variants, chosen at run time.

template <typename T>
struct Kernels {
  int vector_bytes;
  void (*forward_band)(const ForwardArgs<T>&, int64_t, int64_t, int64_t);
  void (*backward_rows)(const BackwardArgs<T>&, int, int64_t, int64_t, int);
};

#define ENCDEC_VARIANT(NAME, ATTR, VB)                                                                      \
  template <typename T>                                                                                     \
  ATTR void forward_band_##NAME(const ForwardArgs<T>& a, int64_t b, int64_t r0, int64_t r1) {              \
    forward_band<T, VB>(a, b, r0, r1);                                                                      \
  }                                                                                                         \
  template <typename T>                                                                                     \
  ATTR void backward_rows_##NAME(const BackwardArgs<T>& a, int pass, int64_t begin, int64_t end, int tid) { \
    backward_rows<T, VB>(a, pass, begin, end, tid);                                                         \
  }

// The x86 target attributes and CPU queries exist only there; elsewhere (aarch64) the 16-byte variant
// is the only one (NEON registers are 16 bytes).
#if defined(__x86_64__) && defined(__GNUC__)
ENCDEC_VARIANT(avx512, __attribute__((target("avx512f,avx2,fma"))), 64)
ENCDEC_VARIANT(avx2, __attribute__((target("avx2,fma"))), 32)
#endif
ENCDEC_VARIANT(baseline, , 16)
#undef ENCDEC_VARIANT

template <typename T>
Kernels<T> kernels() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {64, &forward_band_avx512<T>, &backward_rows_avx512<T>};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {32, &forward_band_avx2<T>, &backward_rows_avx2<T>};
#endif
  return {16, &forward_band_baseline<T>, &backward_rows_baseline<T>};
}

// ----------------------------------------------------------------------------------------------------
// Entry points.

void check_cpu(const at::Tensor& h, at::TensorList weights, at::TensorList biases) {
  check_args(h, weights, biases);
  TORCH_CHECK_VALUE(h.device().is_cpu(), "h must be a CPU tensor, got ", h.device());
  TORCH_CHECK_VALUE(h.scalar_type() == at::kFloat || h.scalar_type() == at::kDouble,
                    "h must be float32 or float64, got ", h.scalar_type());
}

at::Tensor dilated_encdec_cpu(const at::Tensor& h_in, at::TensorList weights, at::TensorList biases) {
  check_cpu(h_in, weights, biases);
  const at::Tensor h = h_in.contiguous();
  const int64_t B = h.size(0), H = h.size(2), W = h.size(3);
  at::Tensor out = at::empty({B, 1, H, W}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "dilated_encdec_cpu", [&] {
    const Params<scalar_t> p(weights, biases);
    const Kernels<scalar_t> k = kernels<scalar_t>();
    const ForwardArgs<scalar_t> a{h.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), H, W, &p};
    // Enough bands per image to give every thread a task; more only to bound a task's scratch.
    const int64_t threads = at::get_num_threads();
    const int64_t want = std::max((threads + B - 1) / B, (H + kMaxBandRows - 1) / kMaxBandRows);
    const int64_t band = (H + std::min(want, H) - 1) / std::min(want, H);
    const int64_t bands = (H + band - 1) / band;
    at::parallel_for(0, B * bands, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t r0 = (t % bands) * band;
        k.forward_band(a, t / bands, r0, std::min(H, r0 + band));
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> dilated_encdec_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& h_in, at::TensorList weights, at::TensorList biases) {
  check_cpu(h_in, weights, biases);
  check_grad(grad_in, h_in);
  const at::Tensor h = h_in.contiguous(), grad = grad_in.contiguous();
  const int64_t B = h.size(0), H = h.size(2), W = h.size(3);
  at::Tensor dh = at::empty_like(h);
  std::vector<at::Tensor> dweights, dbiases;
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "dilated_encdec_backward_cpu", [&] {
    using T = scalar_t;
    const Params<T> p(weights, biases);
    const Kernels<T> k = kernels<T>();
    const Geometry g(W, k.vector_bytes / sizeof(T));
    const int64_t plane_rows = H + 2 * kPadRows, plane = plane_rows * g.Wp;
    const int threads = at::get_num_threads();
    // Whole images per thread when the batch divides evenly: all passes of an image in one task (no
    // barrier between passes), with planes for one image per thread. Else the rows of every image are
    // split between threads pass by pass (a pass reads its input's neighbouring rows), planes for all.
    const bool per_image = B % threads == 0;
    const int64_t images = per_image ? threads : B;
    // Planes: h, a0..a5 (63 + 3 channels), two dz planes of 24 channels, grad (1 channel).
    const int64_t channels[10] = {3, 6, 12, 24, 12, 6, 3, kMaxChannels, kMaxChannels, 1};
    int64_t total = 0;
    for (int64_t c : channels) total += images * c * plane;
    at::Tensor work = at::empty({total}, h.options());
    at::Tensor acc = at::zeros({threads, kAccVectors * g.L}, h.options());
    BackwardArgs<T> a{h.data_ptr<T>(), grad.data_ptr<T>(), dh.data_ptr<T>(), B, H, W, &p, {}, {}, nullptr,
                      acc.data_ptr<T>(), plane_rows, g.Wp, g.M, 0};
    // Plane i of image slot j starts at bases[i] + j · channels[i] · plane.
    T* bases[10];
    T* base = work.data_ptr<T>();
    for (int i = 0; i < 10; ++i) {
      bases[i] = base;
      // The zero pad rows above and below each image; every other row is written by a pass.
      for (int64_t bc = 0; bc < images * channels[i]; ++bc) {
        std::fill_n(base + bc * plane, kPadRows * g.Wp, T(0));
        std::fill_n(base + bc * plane + (kPadRows + H) * g.Wp, kPadRows * g.Wp, T(0));
      }
      base += images * channels[i] * plane;
    }
    auto place = [&](BackwardArgs<T>& x, int64_t slot) {
      T** planes[10] = {&x.act[0], &x.act[1], &x.act[2], &x.act[3], &x.act[4], &x.act[5], &x.act[6],
                        &x.dz[0],  &x.dz[1],  &x.gradp};
      for (int i = 0; i < 10; ++i) *planes[i] = bases[i] + slot * channels[i] * plane;
    };
    place(a, 0);
    if (per_image) {
      at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
        const int tid = at::get_thread_num();
        BackwardArgs<T> mine = a;
        place(mine, tid);
        for (int64_t b = begin; b < end; ++b) {
          mine.b0 = b;
          for (int pass = 0; pass < kBackwardPasses; ++pass) k.backward_rows(mine, pass, b * H, (b + 1) * H, tid);
        }
      });
    } else {
      for (int pass = 0; pass < kBackwardPasses; ++pass) {
        at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
          k.backward_rows(a, pass, begin, end, at::get_thread_num());
        });
      }
    }
    // Sum the accumulators over threads and lanes, then unpack Weff's gradient into each layout.
    const at::Tensor sums = acc.view({threads, kAccVectors, g.L}).sum(at::IntArrayRef{0, 2});
    const T* s = sums.data_ptr<T>();
    for (int l = 0; l < 6; ++l) {
      const int cin = kCin[l], cout = kCout[l];
      at::Tensor dw = at::empty_like(weights[l], at::MemoryFormat::Contiguous);
      T* d = dw.data_ptr<T>();
      const T* sw = s + acc_offset(l);
      for (int co = 0; co < cout; ++co)
        for (int ci = 0; ci < cin; ++ci)
          for (int t = 0; t < 9; ++t) {
            const T v = sw[(ci * 9 + t) * cout + co];
            if (l < 3) d[(co * cin + ci) * 9 + t] = v;
            else d[(ci * cout + co) * 9 + (8 - t)] = v;
          }
      dweights.push_back(dw);
      dbiases.push_back(at::from_blob(const_cast<T*>(sw + cin * 9 * cout), {cout}, h.options()).clone());
    }
    dweights.push_back(at::from_blob(const_cast<T*>(s + kGateAcc), {1, 3, 1, 1}, h.options()).clone());
    dbiases.push_back(at::from_blob(const_cast<T*>(s + kGateAcc + 3), {1}, h.options()).clone());
  });
  return {dh, dweights, dbiases};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_dilated_encdec_cpp", &dilated_encdec_cpu);
  m.impl("_dilated_encdec_backward_cpp", &dilated_encdec_backward_cpu);
}

}  // namespace din_fast
