// Two-pass CUDA building blocks of the channel-attention ops (asyca, channel_attention_residual): per-(b, c)
// spatial sums of two maps (and of their products with a gradient), and a per-(b, c) affine combination
// of two maps. Dense NCHW or channels_last (cuda_utils.cuh's Layout); float16 / bfloat16 / float32 /
// float64 with accumulation in float32 (float64 for float64).
//   channel_sums  (B, NS, C): Σx1, Σx2 (with g: also Σg·x1, Σg·x2), H·W split over blocks into partials;
//                 16-byte loads, warp-shuffle + shared-memory reductions
//   launch_pass2  out = a ⊙ x1 + b ⊙ x2, or dx1 = a ⊙ g + k1 and dx2 = b ⊙ g + k2 (one read of g)
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <type_traits>

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
  extern __shared__ unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
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


// (B, NS, C) sums in the accumulation dtype.
inline at::Tensor channel_sums(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor* g) {
  const Layout l = layout_of(x1);
  const int ns = g ? 4 : 2;
  const at::ScalarType acc = at::toOpMathType(x1.scalar_type());
  const int64_t items = l.nhwc ? l.B : l.B * l.C;
  const int64_t splits = reduction_splits(items, l.HW, 2048);
  const int64_t per_split = ((l.HW + splits - 1) / splits + 15) / 16 * 16;  // whole vectors per split
  const int64_t used_splits = (l.HW + per_split - 1) / per_split;
  at::Tensor part = at::empty({l.B, used_splits, ns, l.C}, x1.options().dtype(acc));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "asyca_sums_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = g ? g->data_ptr<scalar_t>() : nullptr;
    const bool vec = vectorisable<scalar_t>(l, {x1.data_ptr(), x2.data_ptr(), g ? g->data_ptr() : x1.data_ptr()});
    const size_t shm = l.nhwc ? size_t(ns) * l.C * sizeof(acc_t) : (kThreads / kWarp) * sizeof(acc_t);
    const dim3 grid(static_cast<unsigned>((l.nhwc ? l.B : l.B * l.C) * used_splits));
    auto launch = [&](auto ns_tag, auto vec_tag) {
      constexpr int NS = decltype(ns_tag)::value;
      constexpr bool VEC = decltype(vec_tag)::value;
      sums_kernel<scalar_t, acc_t, NS, VEC><<<grid, kThreads, shm, stream>>>(
          x1.data_ptr<scalar_t>(), x2.data_ptr<scalar_t>(), gp, part.data_ptr<acc_t>(), l, used_splits, per_split);
    };
    using T2 = std::integral_constant<int, 2>;
    using T4 = std::integral_constant<int, 4>;
    if (ns == 2) {
      vec ? launch(T2{}, std::true_type{}) : launch(T2{}, std::false_type{});
    } else {
      vec ? launch(T4{}, std::true_type{}) : launch(T4{}, std::false_type{});
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return part.sum(1);
}

inline void launch_pass2(const at::Tensor& u, const at::Tensor* v, at::Tensor& o1, at::Tensor* o2, const at::Tensor& a,
                  const at::Tensor& b, const at::Tensor* k1, const at::Tensor* k2) {
  const Layout l = layout_of(u);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), "asyca_pass2_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool vec = vectorisable<scalar_t>(
        l, {u.data_ptr(), v ? v->data_ptr() : u.data_ptr(), o1.data_ptr(), o2 ? o2->data_ptr() : o1.data_ptr()});
    const int n = vec ? Vec<scalar_t>::N : 1;
    const int64_t threads_needed = (l.B * l.C * l.HW + n - 1) / n;
    const dim3 grid(static_cast<unsigned>((threads_needed + kThreads - 1) / kThreads));
    const scalar_t* vp = v ? v->data_ptr<scalar_t>() : nullptr;
    scalar_t* o2p = o2 ? o2->data_ptr<scalar_t>() : nullptr;
    const acc_t* k1p = k1 ? k1->data_ptr<acc_t>() : nullptr;
    const acc_t* k2p = k2 ? k2->data_ptr<acc_t>() : nullptr;
    auto launch = [&](auto bwd_tag, auto vec_tag) {
      pass2_kernel<scalar_t, acc_t, decltype(bwd_tag)::value, decltype(vec_tag)::value><<<grid, kThreads, 0, stream>>>(
          u.data_ptr<scalar_t>(), vp, o1.data_ptr<scalar_t>(), o2p, a.data_ptr<acc_t>(), b.data_ptr<acc_t>(), k1p,
          k2p, l);
    };
    if (o2) {
      vec ? launch(std::true_type{}, std::true_type{}) : launch(std::true_type{}, std::false_type{});
    } else {
      vec ? launch(std::false_type{}, std::true_type{}) : launch(std::false_type{}, std::false_type{});
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// The inputs in the first one's dense layout (NCHW or channels_last).
struct Prepared {
  at::MemoryFormat fmt;
  at::Tensor x1, x2;
};

inline Prepared prepare(const at::Tensor& x1, const at::Tensor& x2) {
  const at::MemoryFormat fmt = memory_format_of(x1);
  return {fmt, x1.contiguous(fmt), x2.contiguous(fmt)};
}

}  // namespace cuda
}  // namespace din_fast
