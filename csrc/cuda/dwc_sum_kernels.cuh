// Kernels of din_fast::dwc_sum and its backward (launched by dwc_sum.cu; maths in csrc/cpu/dwc_sum.cpp
// and din_fast/ops/dwc_sum.py). Device code only (cuda_utils.cuh says why).
//   forward_kernel    out = Σ_j w[j] ⊙ x_j + bias, one pass, 16-byte loads/stores
//   backward_kernel   d x_j = w[j] ⊙ g and partial sums of g·x_j and g per (b, c) over an H·W split,
//                     one read of g and of each input; warp-shuffle + shared-memory reductions
#pragma once

#include <cstdint>

#include "cuda/cuda_utils.cuh"

namespace din_fast {
namespace cuda {
namespace {

constexpr int kMaxK = 6;

template <typename T>
struct Ptrs {
  T* p[kMaxK];
};

// Channel of flat element idx.
__device__ __forceinline__ int64_t channel_of(int64_t idx, const Layout& l) {
  return l.nhwc ? idx % l.C : (idx / l.HW) % l.C;
}

template <typename scalar_t, typename acc_t, bool VEC>
__global__ void forward_kernel(Ptrs<const scalar_t> xs, int k, const scalar_t* __restrict__ w,
                               const scalar_t* __restrict__ bias, scalar_t* __restrict__ out, Layout l, bool first,
                               bool last) {
  constexpr int N = VEC ? Vec<scalar_t>::N : 1;
  const int64_t numel = l.B * l.C * l.HW;
  const int64_t start = (int64_t(blockIdx.x) * kThreads + threadIdx.x) * N;
  if (start >= numel) return;
  acc_t acc[N];
  int64_t c[N];
#pragma unroll
  for (int i = 0; i < N; ++i) c[i] = channel_of(start + i, l);
  if (first) {
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] = acc_t(0);
  } else if constexpr (VEC) {
    const Vec<scalar_t> t = load_vec(out + start);
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] = acc_t(t.v[i]);
  } else {
    acc[0] = acc_t(out[start]);
  }
  for (int j = 0; j < k; ++j) {
    scalar_t x[N];
    if constexpr (VEC) {
      const Vec<scalar_t> t = load_vec(xs.p[j] + start);
#pragma unroll
      for (int i = 0; i < N; ++i) x[i] = t.v[i];
    } else {
      x[0] = xs.p[j][start];
    }
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] += acc_t(w[j * l.C + c[i]]) * acc_t(x[i]);
  }
  if (last) {
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] += acc_t(bias[c[i]]);
  }
  if constexpr (VEC) {
    Vec<scalar_t> t;
#pragma unroll
    for (int i = 0; i < N; ++i) t.v[i] = scalar_t(acc[i]);
    store_vec(out + start, t);
  } else {
    out[start] = scalar_t(acc[0]);
  }
}

// part[((b·splits + s)·(k+1) + j)·C + c] = Σ g·x_j (j < k), Σ g (j = k) over the split's positions.
// NCHW: one block per (b, c, split). NHWC: one block per (b, split), one channel per thread slot,
// rows strided over the block, partials met in shared memory.
template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ g, Ptrs<const scalar_t> xs, Ptrs<scalar_t> ds, int k,
                                const scalar_t* __restrict__ w, acc_t* __restrict__ part, Layout l, int64_t splits,
                                int64_t per_split) {
  acc_t* smem = dynamic_shared_memory<acc_t>();
  if (!l.nhwc) {
    constexpr int N = Vec<scalar_t>::N;
    const int64_t item = blockIdx.x, s = item % splits, bc = item / splits;
    const int64_t b = bc / l.C, c = bc % l.C;
    const int64_t p0 = s * per_split, p1 = min(l.HW, p0 + per_split);
    const int64_t base = bc * l.HW;
    acc_t acc[kMaxK + 1] = {};
    acc_t wj[kMaxK];
    for (int j = 0; j < k; ++j) wj[j] = acc_t(w[j * l.C + c]);
    // Vector accesses need aligned pointers and whole vectors; the caller guarantees HW % N == 0 then.
    bool vec = (l.HW % N == 0) && reinterpret_cast<uintptr_t>(g) % 16 == 0;
    for (int j = 0; j < k; ++j) {
      vec = vec && reinterpret_cast<uintptr_t>(xs.p[j]) % 16 == 0 && reinterpret_cast<uintptr_t>(ds.p[j]) % 16 == 0;
    }
    const int step = vec ? N : 1;
    for (int64_t p = p0 + threadIdx.x * step; p < p1; p += int64_t(kThreads) * step) {
      if (vec) {
        const Vec<scalar_t> gv = load_vec(g + base + p);
        for (int i = 0; i < N; ++i) acc[k] += acc_t(gv.v[i]);
        for (int j = 0; j < k; ++j) {
          const Vec<scalar_t> xv = load_vec(xs.p[j] + base + p);
          Vec<scalar_t> dv;
#pragma unroll
          for (int i = 0; i < N; ++i) {
            acc[j] += acc_t(gv.v[i]) * acc_t(xv.v[i]);
            dv.v[i] = scalar_t(wj[j] * acc_t(gv.v[i]));
          }
          store_vec(ds.p[j] + base + p, dv);
        }
      } else {
        const acc_t gv = g[base + p];
        acc[k] += gv;
        for (int j = 0; j < k; ++j) {
          acc[j] += gv * acc_t(xs.p[j][base + p]);
          ds.p[j][base + p] = scalar_t(wj[j] * gv);
        }
      }
    }
    for (int j = 0; j <= k; ++j) {
      const acc_t t = block_sum(acc[j], smem);
      if (threadIdx.x == 0) part[((b * splits + s) * (k + 1) + j) * l.C + c] = t;
    }
    return;
  }
  // NHWC: thread t covers channels t, t + kThreads, ... of the rows it visits; when C divides
  // kThreads each thread keeps one channel and accumulates in registers.
  const int64_t item = blockIdx.x, s = item % splits, b = item / splits;
  const int64_t p0 = s * per_split, p1 = min(l.HW, p0 + per_split);
  for (int64_t i = threadIdx.x; i < (k + 1) * l.C; i += kThreads) smem[i] = acc_t(0);
  __syncthreads();
  const bool fixed = l.C <= kThreads && kThreads % l.C == 0;
  acc_t acc[kMaxK + 1] = {};
  for (int64_t e = threadIdx.x; e < (p1 - p0) * l.C; e += kThreads) {
    const int64_t c = e % l.C;
    const int64_t o = (b * l.HW + p0 + e / l.C) * l.C + c;
    const acc_t gv = g[o];
    acc_t t[kMaxK + 1];
    t[k] = gv;
    for (int j = 0; j < k; ++j) {
      t[j] = gv * acc_t(xs.p[j][o]);
      ds.p[j][o] = scalar_t(acc_t(w[j * l.C + c]) * gv);
    }
    for (int j = 0; j <= k; ++j) {
      if (fixed) {
        acc[j] += t[j];
      } else {
        atomicAdd(&smem[j * l.C + c], t[j]);
      }
    }
  }
  if (fixed && threadIdx.x < (kThreads / l.C) * l.C) {
    for (int j = 0; j <= k; ++j) atomicAdd(&smem[j * l.C + threadIdx.x % l.C], acc[j]);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < (k + 1) * l.C; i += kThreads) part[(b * splits + s) * (k + 1) * l.C + i] = smem[i];
}

}  // namespace
}  // namespace cuda
}  // namespace din_fast
