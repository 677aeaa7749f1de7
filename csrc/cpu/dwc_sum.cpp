// C++ CPU kernels of din_fast::dwc_sum (DIN's densely weighted connection sum) and its backward.
//
// Forward, one pass:   out = Σ_j weight[j] ⊙ inputs[j] + bias            (k inputs (B, C, H, W))
// Backward, one pass over g and the inputs:
//   d inputs[j] = weight[j] ⊙ g,   d weight[j, c] = Σ_{b,HW} g·inputs[j],   d bias[c] = Σ_{b,HW} g
// NCHW or NHWC (from inputs[0]); the terms are added in the reference's order (j = 0, 1, ..., then the
// bias). Only float32 and float64, so the accumulation type is the element type.
//
// Speed: the element loops are compiled per ISA level (DIN_FAST_MULTIVERSION, common.h) and, for the
// k ≤ kMaxFused inputs DIN uses, specialised on k so that every output element is computed in
// registers from all k inputs at once (one read of each input, one write); larger k runs one term at a
// time. The backward reads g and each input once, writing every d inputs[j] in the same pass.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "common.h"
#include "dwc_sum.h"
#include "cpu/kernel_utils.h"

namespace din_fast {
namespace {

// Largest k with a fused (all inputs per element) loop: DIN's WRDB sums at most 6 terms.
constexpr int kMaxFused = 6;

// One call's data for the element loops: k input pointers, the (k, C) weight and (C) bias, the output.
template <typename T>
struct Sum {
  const T* const* xs;
  const T* w;
  const T* bias;
  T* out;
  int64_t K, C, HW;
};

// ---- forward ---------------------------------------------------------------------------------------

// NCHW plane of n elements at offset o, channel weights wc[j] and bias bc.
template <typename T, int K>
DIN_FAST_INLINE void plane_sum_k(const T* const* xs, int64_t o, const T* wc, T bc, T* __restrict out, int64_t n) {
  const T* x[K];
  T w[K];
  for (int j = 0; j < K; ++j) x[j] = xs[j] + o, w[j] = wc[j];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    T acc = w[0] * x[0][i];
    for (int j = 1; j < K; ++j) acc += w[j] * x[j][i];
    out[i] = acc + bc;
  }
}

// NHWC: rows [r0, r1) of C channels; the weights of input j are w[j*C : (j+1)*C].
template <typename T, int K>
DIN_FAST_INLINE void rows_sum_k(const Sum<T>& s, int64_t r0, int64_t r1) {
  const int64_t C = s.C;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t o = r * C;
    const T* x[K];
    for (int j = 0; j < K; ++j) x[j] = s.xs[j] + o;
    T* __restrict q = s.out + o;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      T acc = s.w[c] * x[0][c];
      for (int j = 1; j < K; ++j) acc += s.w[j * C + c] * x[j][c];
      q[c] = acc + s.bias[c];
    }
  }
}

// Any k, one term at a time over a span of n elements; w/bias advance with the element (NHWC rows) when
// wstep is 1, else (NCHW planes, wstep 0) stay at one channel's values.
template <typename T>
DIN_FAST_INLINE void span_sum_any(const Sum<T>& s, int64_t o, int64_t c0, int64_t n, int64_t wstep) {
  T* __restrict q = s.out + o;
  for (int64_t j = 0; j < s.K; ++j) {
    const T* x = s.xs[j] + o;
    const T* w = s.w + j * s.C + c0;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) q[i] = j == 0 ? w[i * wstep] * x[i] : q[i] + w[i * wstep] * x[i];
  }
  const T* b = s.bias + c0;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) q[i] += b[i * wstep];
}

template <typename T>
DIN_FAST_INLINE void forward_planes_impl(const Sum<T>& s, int64_t bc0, int64_t bc1) {
  for (int64_t bc = bc0; bc < bc1; ++bc) {
    const int64_t c = bc % s.C, o = bc * s.HW;
    T wc[kMaxFused];
    for (int64_t j = 0; j < std::min<int64_t>(s.K, kMaxFused); ++j) wc[j] = s.w[j * s.C + c];
    switch (s.K) {
      case 1: plane_sum_k<T, 1>(s.xs, o, wc, s.bias[c], s.out + o, s.HW); break;
      case 2: plane_sum_k<T, 2>(s.xs, o, wc, s.bias[c], s.out + o, s.HW); break;
      case 3: plane_sum_k<T, 3>(s.xs, o, wc, s.bias[c], s.out + o, s.HW); break;
      case 4: plane_sum_k<T, 4>(s.xs, o, wc, s.bias[c], s.out + o, s.HW); break;
      case 5: plane_sum_k<T, 5>(s.xs, o, wc, s.bias[c], s.out + o, s.HW); break;
      case 6: plane_sum_k<T, 6>(s.xs, o, wc, s.bias[c], s.out + o, s.HW); break;
      default: span_sum_any(s, o, c, s.HW, 0);
    }
  }
}

template <typename T>
DIN_FAST_INLINE void forward_rows_impl(const Sum<T>& s, int64_t r0, int64_t r1) {
  switch (s.K) {
    case 1: rows_sum_k<T, 1>(s, r0, r1); break;
    case 2: rows_sum_k<T, 2>(s, r0, r1); break;
    case 3: rows_sum_k<T, 3>(s, r0, r1); break;
    case 4: rows_sum_k<T, 4>(s, r0, r1); break;
    case 5: rows_sum_k<T, 5>(s, r0, r1); break;
    case 6: rows_sum_k<T, 6>(s, r0, r1); break;
    default:
      for (int64_t r = r0; r < r1; ++r) span_sum_any(s, r * s.C, 0, s.C, 1);
  }
}

DIN_FAST_MULTIVERSION_256 void forward_planes(const Sum<float>& s, int64_t bc0, int64_t bc1) {
  forward_planes_impl(s, bc0, bc1);
}
DIN_FAST_MULTIVERSION_256 void forward_planes(const Sum<double>& s, int64_t bc0, int64_t bc1) {
  forward_planes_impl(s, bc0, bc1);
}
DIN_FAST_MULTIVERSION_256 void forward_rows(const Sum<float>& s, int64_t r0, int64_t r1) { forward_rows_impl(s, r0, r1); }
DIN_FAST_MULTIVERSION_256 void forward_rows(const Sum<double>& s, int64_t r0, int64_t r1) { forward_rows_impl(s, r0, r1); }

// ---- backward --------------------------------------------------------------------------------------

// One call's data for the backward loops: the forward's plus g and the k input-gradient pointers.
template <typename T>
struct SumGrad {
  Sum<T> s;  // (s.out unused)
  const T* g;
  T* const* dxs;
};

// NCHW plane (b, c) at offset o, n elements: dx_j = w_j·g, and sums[j] += Σ g·x_j (j < K), sums[K] += Σ g.
// The sums run in kLanes independent lanes (element i goes to lane i mod kLanes) added in lane order,
// so the result does not depend on the vector width the CPU has.
template <typename T, int K>
DIN_FAST_INLINE void plane_grad_k(const SumGrad<T>& a, int64_t o, const T* wc, int64_t n, T* sums) {
  const T* x[K];
  T* dx[K];
  T w[K];
  for (int j = 0; j < K; ++j) x[j] = a.s.xs[j] + o, dx[j] = a.dxs[j] + o, w[j] = wc[j];
  const T* g = a.g + o;
  T lane[K + 1][kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const T gv = g[i + l];
      for (int j = 0; j < K; ++j) {
        lane[j][l] += gv * x[j][i + l];
        dx[j][i + l] = w[j] * gv;
      }
      lane[K][l] += gv;
    }
  }
  for (int l = 0; i + l < n; ++l) {
    const T gv = g[i + l];
    for (int j = 0; j < K; ++j) {
      lane[j][l] += gv * x[j][i + l];
      dx[j][i + l] = w[j] * gv;
    }
    lane[K][l] += gv;
  }
  for (int j = 0; j <= K; ++j) {
    T t = 0;
    for (int l = 0; l < kLanes; ++l) t += lane[j][l];
    sums[j] += t;
  }
}

// Any k, NCHW plane, one input at a time (same lanes and order as plane_grad_k).
template <typename T>
DIN_FAST_INLINE void plane_grad_any(const SumGrad<T>& a, int64_t o, int64_t c, int64_t n, T* sums) {
  const T* g = a.g + o;
  for (int64_t j = 0; j <= a.s.K; ++j) {
    T lane[kLanes] = {};
    const bool input = j < a.s.K;
    const T* x = input ? a.s.xs[j] + o : nullptr;
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) lane[l] += input ? g[i + l] * x[i + l] : g[i + l];
    }
    for (int l = 0; i + l < n; ++l) lane[l] += input ? g[i + l] * x[i + l] : g[i + l];
    if (input) {
      const T wj = a.s.w[j * a.s.C + c];
      T* __restrict dx = a.dxs[j] + o;
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) dx[e] = wj * g[e];
    }
    T t = 0;
    for (int l = 0; l < kLanes; ++l) t += lane[l];
    sums[j] += t;
  }
}

// NCHW planes [bc0, bc1): the sums of plane (b, c) go to part[b][j][c] ((K + 1) × C per batch).
template <typename T>
DIN_FAST_INLINE void backward_planes_impl(const SumGrad<T>& a, int64_t bc0, int64_t bc1, T* part) {
  const int64_t K = a.s.K, C = a.s.C, HW = a.s.HW;
  for (int64_t bc = bc0; bc < bc1; ++bc) {
    const int64_t b = bc / C, c = bc % C, o = bc * HW;
    T wc[kMaxFused];
    T sums[kMaxFused + 1] = {};
    for (int64_t j = 0; j < std::min<int64_t>(K, kMaxFused); ++j) wc[j] = a.s.w[j * C + c];
    T* dst = part + b * (K + 1) * C + c;
    if (K > kMaxFused) {
      std::vector<T> any(K + 1, T(0));
      plane_grad_any(a, o, c, HW, any.data());
      for (int64_t j = 0; j <= K; ++j) dst[j * C] += any[j];
      continue;
    }
    switch (K) {
      case 1: plane_grad_k<T, 1>(a, o, wc, HW, sums); break;
      case 2: plane_grad_k<T, 2>(a, o, wc, HW, sums); break;
      case 3: plane_grad_k<T, 3>(a, o, wc, HW, sums); break;
      case 4: plane_grad_k<T, 4>(a, o, wc, HW, sums); break;
      case 5: plane_grad_k<T, 5>(a, o, wc, HW, sums); break;
      case 6: plane_grad_k<T, 6>(a, o, wc, HW, sums); break;
    }
    for (int64_t j = 0; j <= K; ++j) dst[j * C] += sums[j];
  }
}

// NHWC rows [r0, r1) of C channels; acc ((K + 1) × C) gets Σ g·x_j per channel and Σ g.
template <typename T, int K>
DIN_FAST_INLINE void rows_grad_k(const SumGrad<T>& a, int64_t r0, int64_t r1, T* acc) {
  const int64_t C = a.s.C;
  const T* w = a.s.w;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t o = r * C;
    const T* x[K];
    T* dx[K];
    for (int j = 0; j < K; ++j) x[j] = a.s.xs[j] + o, dx[j] = a.dxs[j] + o;
    const T* g = a.g + o;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const T gv = g[c];
      for (int j = 0; j < K; ++j) {
        acc[j * C + c] += gv * x[j][c];
        dx[j][c] = w[j * C + c] * gv;
      }
      acc[K * C + c] += gv;
    }
  }
}

template <typename T>
DIN_FAST_INLINE void rows_grad_any(const SumGrad<T>& a, int64_t r0, int64_t r1, T* acc) {
  const int64_t K = a.s.K, C = a.s.C;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t o = r * C;
    const T* g = a.g + o;
    for (int64_t j = 0; j < K; ++j) {
      const T* x = a.s.xs[j] + o;
      const T* w = a.s.w + j * C;
      T* __restrict dx = a.dxs[j] + o;
      T* __restrict aj = acc + j * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        aj[c] += g[c] * x[c];
        dx[c] = w[c] * g[c];
      }
    }
    T* __restrict ab = acc + K * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) ab[c] += g[c];
  }
}

template <typename T>
DIN_FAST_INLINE void backward_rows_impl(const SumGrad<T>& a, int64_t r0, int64_t r1, T* acc) {
  switch (a.s.K) {
    case 1: rows_grad_k<T, 1>(a, r0, r1, acc); break;
    case 2: rows_grad_k<T, 2>(a, r0, r1, acc); break;
    case 3: rows_grad_k<T, 3>(a, r0, r1, acc); break;
    case 4: rows_grad_k<T, 4>(a, r0, r1, acc); break;
    case 5: rows_grad_k<T, 5>(a, r0, r1, acc); break;
    case 6: rows_grad_k<T, 6>(a, r0, r1, acc); break;
    default: rows_grad_any(a, r0, r1, acc);
  }
}

DIN_FAST_MULTIVERSION void backward_planes(const SumGrad<float>& a, int64_t bc0, int64_t bc1, float* part) {
  backward_planes_impl(a, bc0, bc1, part);
}
DIN_FAST_MULTIVERSION void backward_planes(const SumGrad<double>& a, int64_t bc0, int64_t bc1, double* part) {
  backward_planes_impl(a, bc0, bc1, part);
}
DIN_FAST_MULTIVERSION void backward_rows(const SumGrad<float>& a, int64_t r0, int64_t r1, float* acc) {
  backward_rows_impl(a, r0, r1, acc);
}
DIN_FAST_MULTIVERSION void backward_rows(const SumGrad<double>& a, int64_t r0, int64_t r1, double* acc) {
  backward_rows_impl(a, r0, r1, acc);
}

// ---- entry points ----------------------------------------------------------------------------------

struct Prepared {
  int64_t K, B, C, HW;
  bool nhwc;
  at::MemoryFormat fmt;
  std::vector<at::Tensor> inputs;
  at::Tensor weight, bias;
};

Prepared prepare(at::TensorList inputs, const at::Tensor& weight, const at::Tensor& bias) {
  check_dwc_sum_args(inputs, weight, bias, check_cpu_float);
  const at::Tensor& x0 = inputs[0];
  const int64_t K = static_cast<int64_t>(inputs.size()), C = x0.size(1);
  const at::MemoryFormat fmt = memory_format_of(x0);
  Prepared p{K, x0.size(0), C, x0.size(2) * x0.size(3), fmt == at::MemoryFormat::ChannelsLast, fmt,
             {}, weight.contiguous(), bias.contiguous()};
  p.inputs.reserve(inputs.size());
  for (const at::Tensor& t : inputs) p.inputs.push_back(t.contiguous(fmt));
  return p;
}

template <typename scalar_t>
std::vector<const scalar_t*> data_of(const std::vector<at::Tensor>& ts) {
  std::vector<const scalar_t*> out;
  out.reserve(ts.size());
  for (const at::Tensor& t : ts) out.push_back(t.data_ptr<scalar_t>());
  return out;
}

at::Tensor dwc_sum_cpp(at::TensorList inputs_, const at::Tensor& weight_, const at::Tensor& bias_) {
  const Prepared in = prepare(inputs_, weight_, bias_);
  at::Tensor out = empty_in(in.inputs[0], in.fmt);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "dwc_sum_cpp", [&] {
    const std::vector<const scalar_t*> xs = data_of<scalar_t>(in.inputs);
    const Sum<scalar_t> s{xs.data(), in.weight.data_ptr<scalar_t>(), in.bias.data_ptr<scalar_t>(),
                          out.data_ptr<scalar_t>(), in.K, in.C, in.HW};
    if (!in.nhwc) {
      at::parallel_for(0, in.B * in.C, grain_for(in.HW * in.K),
                       [&](int64_t begin, int64_t end) { forward_planes(s, begin, end); });
    } else {
      at::parallel_for(0, in.B * in.HW, grain_for(in.C * in.K),
                       [&](int64_t begin, int64_t end) { forward_rows(s, begin, end); });
    }
  });
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> dwc_sum_backward_cpp(const at::Tensor& grad,
                                                                                 at::TensorList inputs_,
                                                                                 const at::Tensor& weight_,
                                                                                 const at::Tensor& bias_) {
  const Prepared in = prepare(inputs_, weight_, bias_);
  check_same(grad, "grad", inputs_[0], "inputs[0]", inputs_[0].sizes());
  const int64_t K = in.K, B = in.B, C = in.C, HW = in.HW;
  const at::Tensor g = grad.contiguous(in.fmt);
  std::vector<at::Tensor> dinputs;
  dinputs.reserve(K);
  for (int64_t j = 0; j < K; ++j) dinputs.push_back(empty_in(in.inputs[0], in.fmt));
  at::Tensor dweight = at::empty({K, C}, in.weight.options());
  at::Tensor dbias = at::empty({C}, in.bias.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "dwc_sum_backward_cpp", [&] {
    const std::vector<const scalar_t*> xs = data_of<scalar_t>(in.inputs);
    std::vector<scalar_t*> dxs;
    dxs.reserve(K);
    for (at::Tensor& t : dinputs) dxs.push_back(t.data_ptr<scalar_t>());
    const SumGrad<scalar_t> a{{xs.data(), in.weight.data_ptr<scalar_t>(), nullptr, nullptr, K, C, HW},
                              g.data_ptr<scalar_t>(), dxs.data()};
    // Partial sums per work item: (Σ g·x_0, ..., Σ g·x_{K-1}, Σ g), each C long, added in item order,
    // so the result does not depend on the thread count.
    std::vector<scalar_t> part;
    int64_t items;
    if (!in.nhwc) {
      items = B;  // one (K + 1) × C block per batch; plane (b, c) fills its channel c
      part.assign(B * (K + 1) * C, scalar_t(0));
      at::parallel_for(0, B * C, grain_for(HW * K),
                       [&](int64_t begin, int64_t end) { backward_planes(a, begin, end, part.data()); });
    } else {
      const RowBlocks rb(HW, C);
      items = B * rb.blocks;
      part.assign(items * (K + 1) * C, scalar_t(0));
      at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t b = item / rb.blocks, p0 = (item % rb.blocks) * rb.rows;
          const int64_t p1 = std::min(HW, p0 + rb.rows);
          backward_rows(a, b * HW + p0, b * HW + p1, part.data() + item * (K + 1) * C);
        }
      });
    }
    // Reduce the partials over items, in a fixed order.
    scalar_t* dw = dweight.data_ptr<scalar_t>();
    scalar_t* db = dbias.data_ptr<scalar_t>();
    std::vector<scalar_t> total((K + 1) * C, scalar_t(0));
    for (int64_t item = 0; item < items; ++item) {
      const scalar_t* acc = part.data() + item * (K + 1) * C;
      for (int64_t i = 0; i < (K + 1) * C; ++i) total[i] += acc[i];
    }
    std::copy(total.begin(), total.begin() + K * C, dw);
    std::copy(total.begin() + K * C, total.end(), db);
  });
  return {dinputs, dweight, dbias};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_fast, CPU, m) {
  m.impl("_dwc_sum_cpp", &dwc_sum_cpp);
  m.impl("_dwc_sum_backward_cpp", &dwc_sum_backward_cpp);
}

}  // namespace din_fast
