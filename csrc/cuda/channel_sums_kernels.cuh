// Kernels of the channel-attention ops' two passes (asyca, channel_attention_residual; launched by
// channel_sums.cuh): per-(b, c) spatial sums of two maps (and of their products with a gradient), and a
// per-(b, c) affine combination of two maps. Device code only (cuda_utils.cuh says why).
#pragma once

#include "cuda/cuda_utils.cuh"

namespace din_fast {
namespace cuda {

// part[((b·splits + s)·NS + k)·C + c]: partial sums over positions [s·per_split, (s+1)·per_split).
// NCHW: one block per (b, c, split), threads along p. NHWC: one block per (b, split), each thread
// owns one channel group (VEC channels) and a subset of the rows; groups meet in shared memory.
template <typename scalar_t, typename acc_t, int NS, bool VEC>
__global__ void sums_kernel(const scalar_t* __restrict__ x1, const scalar_t* __restrict__ x2,
                            const scalar_t* __restrict__ g, acc_t* __restrict__ part, Layout l, int64_t splits,
                            int64_t per_split) {
  constexpr int N = VEC ? Vec<scalar_t>::N : 1;
  acc_t* smem = dynamic_shared_memory<acc_t>();
  if (!l.nhwc) {
    const int64_t item = blockIdx.x, s = item % splits, bc = item / splits;
    const int64_t p0 = s * per_split, p1 = min(l.HW, p0 + per_split);
    const int64_t base = bc * l.HW;
    acc_t acc[NS] = {};
    for (int64_t p = p0 + threadIdx.x * N; p < p1; p += int64_t(kThreads) * N) {
      scalar_t u[N], v[N], w[N];
      if constexpr (VEC) {
        const Vec<scalar_t> a = load_vec(x1 + base + p), b = load_vec(x2 + base + p);
#pragma unroll
        for (int i = 0; i < N; ++i) u[i] = a.v[i], v[i] = b.v[i];
        if constexpr (NS == 4) {
          const Vec<scalar_t> c = load_vec(g + base + p);
#pragma unroll
          for (int i = 0; i < N; ++i) w[i] = c.v[i];
        }
      } else {
        u[0] = x1[base + p];
        v[0] = x2[base + p];
        if constexpr (NS == 4) w[0] = g[base + p];
      }
#pragma unroll
      for (int i = 0; i < N; ++i) {
        acc[0] += acc_t(u[i]);
        acc[1] += acc_t(v[i]);
        if constexpr (NS == 4) {
          acc[2] += acc_t(w[i]) * acc_t(u[i]);
          acc[3] += acc_t(w[i]) * acc_t(v[i]);
        }
      }
    }
    const int64_t b = bc / l.C, c = bc % l.C;
#pragma unroll
    for (int k = 0; k < NS; ++k) {
      const acc_t t = block_sum(acc[k], smem);
      if (threadIdx.x == 0) part[((b * splits + s) * NS + k) * l.C + c] = t;
    }
    return;
  }
  // NHWC
  const int64_t item = blockIdx.x, s = item % splits, b = item / splits;
  const int64_t p0 = s * per_split, p1 = min(l.HW, p0 + per_split);
  const int64_t groups = l.C / N;
  for (int64_t i = threadIdx.x; i < NS * l.C; i += kThreads) smem[i] = acc_t(0);
  __syncthreads();
  // Each thread walks (row, group) pairs with stride kThreads; when kThreads is a multiple of
  // `groups` its group never changes, so it accumulates in registers and flushes once.
  const bool fixed_group = groups <= kThreads && kThreads % groups == 0;
  acc_t acc[NS][N] = {};
  int64_t my_group = threadIdx.x % groups;
  for (int64_t e = threadIdx.x; e < (p1 - p0) * groups; e += kThreads) {
    const int64_t row = p0 + e / groups, grp = e % groups;
    const int64_t o = (b * l.HW + row) * l.C + grp * N;
    scalar_t u[N], v[N], w[N];
    if constexpr (VEC) {
      const Vec<scalar_t> a = load_vec(x1 + o), bb = load_vec(x2 + o);
#pragma unroll
      for (int i = 0; i < N; ++i) u[i] = a.v[i], v[i] = bb.v[i];
      if constexpr (NS == 4) {
        const Vec<scalar_t> c = load_vec(g + o);
#pragma unroll
        for (int i = 0; i < N; ++i) w[i] = c.v[i];
      }
    } else {
      u[0] = x1[o];
      v[0] = x2[o];
      if constexpr (NS == 4) w[0] = g[o];
    }
#pragma unroll
    for (int i = 0; i < N; ++i) {
      acc_t t[NS];
      t[0] = acc_t(u[i]);
      t[1] = acc_t(v[i]);
      if constexpr (NS == 4) {
        t[2] = acc_t(w[i]) * acc_t(u[i]);
        t[3] = acc_t(w[i]) * acc_t(v[i]);
      }
#pragma unroll
      for (int k = 0; k < NS; ++k) {
        if (fixed_group) {
          acc[k][i] += t[k];
        } else {
          atomicAdd(&smem[k * l.C + grp * N + i], t[k]);
        }
      }
    }
  }
  if (fixed_group && threadIdx.x < (kThreads / groups) * groups) {
#pragma unroll
    for (int k = 0; k < NS; ++k) {
#pragma unroll
      for (int i = 0; i < N; ++i) atomicAdd(&smem[k * l.C + my_group * N + i], acc[k][i]);
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < NS * l.C; i += kThreads) part[(b * splits + s) * NS * l.C + i] = smem[i];
}

// Forward (g == nullptr): o1 = a ⊙ x1 + b ⊙ x2. Backward: o1 = a ⊙ g + k1, o2 = b ⊙ g + k2.
// Coefficients are (B, C) in acc_t; each thread handles N consecutive elements.
template <typename scalar_t, typename acc_t, bool BACKWARD, bool VEC>
__global__ void pass2_kernel(const scalar_t* __restrict__ u, const scalar_t* __restrict__ v,
                             scalar_t* __restrict__ o1, scalar_t* __restrict__ o2, const acc_t* __restrict__ a,
                             const acc_t* __restrict__ bcoef, const acc_t* __restrict__ k1,
                             const acc_t* __restrict__ k2, Layout l) {
  constexpr int N = VEC ? Vec<scalar_t>::N : 1;
  const int64_t numel = l.B * l.C * l.HW;
  const int64_t start = (int64_t(blockIdx.x) * kThreads + threadIdx.x) * N;
  if (start >= numel) return;
  scalar_t x[N], y[N], r1[N], r2[N];
  if constexpr (VEC) {
    const Vec<scalar_t> t = load_vec(u + start);
#pragma unroll
    for (int i = 0; i < N; ++i) x[i] = t.v[i];
    if constexpr (!BACKWARD) {
      const Vec<scalar_t> t2 = load_vec(v + start);
#pragma unroll
      for (int i = 0; i < N; ++i) y[i] = t2.v[i];
    }
  } else {
    x[0] = u[start];
    if constexpr (!BACKWARD) y[0] = v[start];
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int64_t idx = start + i;
    const int64_t b = idx / (l.C * l.HW);
    const int64_t c = l.nhwc ? idx % l.C : (idx / l.HW) % l.C;
    const int64_t bc = b * l.C + c;
    if constexpr (BACKWARD) {
      r1[i] = scalar_t(a[bc] * acc_t(x[i]) + k1[bc]);
      r2[i] = scalar_t(bcoef[bc] * acc_t(x[i]) + k2[bc]);
    } else {
      r1[i] = scalar_t(a[bc] * acc_t(x[i]) + bcoef[bc] * acc_t(y[i]));
    }
  }
  if constexpr (VEC) {
    Vec<scalar_t> t;
#pragma unroll
    for (int i = 0; i < N; ++i) t.v[i] = r1[i];
    store_vec(o1 + start, t);
    if constexpr (BACKWARD) {
#pragma unroll
      for (int i = 0; i < N; ++i) t.v[i] = r2[i];
      store_vec(o2 + start, t);
    }
  } else {
    o1[start] = r1[0];
    if constexpr (BACKWARD) o2[start] = r2[0];
  }
}

}  // namespace cuda
}  // namespace din_fast
