// Launchers of the two-pass CUDA building blocks of the channel-attention ops (asyca,
// channel_attention_residual): per-(b, c) spatial sums of two maps (and of their products with a
// gradient), and a per-(b, c) affine combination of two maps. Dense NCHW or channels_last (cuda_utils.cuh's Layout); float16 / bfloat16 / float32 /
// float64 with accumulation in float32 (float64 for float64).
//   channel_sums  (B, NS, C): Σx1, Σx2 (with g: also Σg·x1, Σg·x2), H·W split over blocks into partials;
//                 16-byte loads, warp-shuffle + shared-memory reductions
//   launch_pass2  out = a ⊙ x1 + b ⊙ x2, or dx1 = a ⊙ g + k1 and dx2 = b ⊙ g + k2 (one read of g)
// The kernels are in channel_sums_kernels.cuh.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <type_traits>

#include "cuda/channel_sums_kernels.cuh"
#include "cuda/launch.cuh"

namespace din_fast {
namespace cuda {

// (B, NS, C) sums in the accumulation dtype.
inline at::Tensor channel_sums(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor* g) {
  const Layout l = layout_of(x1);
  const int ns = g ? 4 : 2;
  const at::ScalarType acc = at::toOpMathType(x1.scalar_type());
  if (l.nhwc && size_t(ns) * l.C * c10::elementSize(acc) > kMaxDynamicShared) {
    // A channels_last block keeps ns·C partial sums in shared memory; past the launch limit, sum NCHW
    // copies (whose blocks each own one channel).
    const at::Tensor gc = g ? g->contiguous() : at::Tensor();
    return channel_sums(x1.contiguous(), x2.contiguous(), g ? &gc : nullptr);
  }
  const int64_t items = l.nhwc ? l.B : l.B * l.C;
  const int64_t splits = reduction_splits(items, l.HW, 2048);
  const int64_t per_split = ((l.HW + splits - 1) / splits + 15) / 16 * 16;  // whole vectors per split
  const int64_t used_splits = (l.HW + per_split - 1) / per_split;
  at::Tensor part = at::empty({l.B, used_splits, ns, l.C}, x1.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x1.scalar_type(), "asyca_sums_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = g ? g->data_ptr<scalar_t>() : nullptr;
    const bool vec = vectorisable<scalar_t>(l, {x1.data_ptr(), x2.data_ptr(), g ? g->data_ptr() : x1.data_ptr()});
    const size_t shm = l.nhwc ? size_t(ns) * l.C * sizeof(acc_t) : (kThreads / kWarp) * sizeof(acc_t);
    const dim3 grid(static_cast<unsigned>((l.nhwc ? l.B : l.B * l.C) * used_splits));
    auto run = [&](auto ns_tag, auto vec_tag) {
      constexpr int NS = decltype(ns_tag)::value;
      constexpr bool VEC = decltype(vec_tag)::value;
      launch(sums_kernel<scalar_t, acc_t, NS, VEC>, grid, kThreads, shm, x1.data_ptr<scalar_t>(),
             x2.data_ptr<scalar_t>(), gp, part.data_ptr<acc_t>(), l, used_splits, per_split);
    };
    using T2 = std::integral_constant<int, 2>;
    using T4 = std::integral_constant<int, 4>;
    if (ns == 2) {
      vec ? run(T2{}, std::true_type{}) : run(T2{}, std::false_type{});
    } else {
      vec ? run(T4{}, std::true_type{}) : run(T4{}, std::false_type{});
    }
  });
  return part.sum(1);
}

inline void launch_pass2(const at::Tensor& u, const at::Tensor* v, at::Tensor& o1, at::Tensor* o2, const at::Tensor& a,
                  const at::Tensor& b, const at::Tensor* k1, const at::Tensor* k2) {
  const Layout l = layout_of(u);
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
    auto run = [&](auto bwd_tag, auto vec_tag) {
      launch(pass2_kernel<scalar_t, acc_t, decltype(bwd_tag)::value, decltype(vec_tag)::value>, grid, kThreads, 0,
             u.data_ptr<scalar_t>(), vp, o1.data_ptr<scalar_t>(), o2p, a.data_ptr<acc_t>(), b.data_ptr<acc_t>(), k1p,
             k2p, l);
    };
    if (o2) {
      vec ? run(std::true_type{}, std::true_type{}) : run(std::true_type{}, std::false_type{});
    } else {
      vec ? run(std::false_type{}, std::true_type{}) : run(std::false_type{}, std::false_type{});
    }
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
