// C++ CPU kernels of din_fast::dwc_sum (DIN's densely weighted connection sum) and its backward.
//
// Forward, one pass:   out = Σ_j weight[j] ⊙ inputs[j] + bias            (k inputs (B, C, H, W))
// Backward, one pass over g and the inputs:
//   d inputs[j] = weight[j] ⊙ g,   d weight[j, c] = Σ_{b,HW} g·inputs[j],   d bias[c] = Σ_{b,HW} g
// NCHW or NHWC (from inputs[0]); the terms are added in the reference's order (j = 0, 1, ..., then the
// bias). Only float32 and float64, so the accumulation type is the element type.
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

// Elements per tile of an NCHW plane: the running sum stays in L1 while each input streams through.
constexpr int64_t kTile = 1024;

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
  for (const at::Tensor& t : inputs) p.inputs.push_back(t.contiguous(fmt));
  return p;
}

template <typename scalar_t>
std::vector<const scalar_t*> data_of(const std::vector<at::Tensor>& ts) {
  std::vector<const scalar_t*> out;
  for (const at::Tensor& t : ts) out.push_back(t.data_ptr<scalar_t>());
  return out;
}

at::Tensor dwc_sum_cpp(at::TensorList inputs_, const at::Tensor& weight_, const at::Tensor& bias_) {
  const Prepared in = prepare(inputs_, weight_, bias_);
  at::Tensor out = empty_in(in.inputs[0], in.fmt);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "dwc_sum_cpp", [&] {
    const std::vector<const scalar_t*> xs = data_of<scalar_t>(in.inputs);
    const scalar_t* w = in.weight.data_ptr<scalar_t>();
    const scalar_t* bias = in.bias.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    const int64_t K = in.K, C = in.C, HW = in.HW;
    if (!in.nhwc) {
      at::parallel_for(0, in.B * C, grain_for(HW * K), [&](int64_t begin, int64_t end) {
        for (int64_t bc = begin; bc < end; ++bc) {
          const int64_t c = bc % C;
          for (int64_t t0 = bc * HW, t1 = (bc + 1) * HW; t0 < t1; t0 += kTile) {
            const int64_t n = std::min(kTile, t1 - t0);
            scalar_t* q = po + t0;
            const scalar_t w0 = w[c];
            const scalar_t* x = xs[0] + t0;
            for (int64_t i = 0; i < n; ++i) q[i] = w0 * x[i];
            for (int64_t j = 1; j < K; ++j) {
              const scalar_t wj = w[j * C + c];
              const scalar_t* xj = xs[j] + t0;
              for (int64_t i = 0; i < n; ++i) q[i] += wj * xj[i];
            }
            const scalar_t bc_ = bias[c];
            for (int64_t i = 0; i < n; ++i) q[i] += bc_;
          }
        }
      });
    } else {
      at::parallel_for(0, in.B * HW, grain_for(C * K), [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          scalar_t* q = po + row * C;
          const scalar_t* x = xs[0] + row * C;
          for (int64_t c = 0; c < C; ++c) q[c] = w[c] * x[c];
          for (int64_t j = 1; j < K; ++j) {
            const scalar_t* wj = w + j * C;
            const scalar_t* xj = xs[j] + row * C;
            for (int64_t c = 0; c < C; ++c) q[c] += wj[c] * xj[c];
          }
          for (int64_t c = 0; c < C; ++c) q[c] += bias[c];
        }
      });
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
  for (int64_t j = 0; j < K; ++j) dinputs.push_back(empty_in(in.inputs[0], in.fmt));
  at::Tensor dweight = at::empty({K, C}, in.weight.options());
  at::Tensor dbias = at::empty({C}, in.bias.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "dwc_sum_backward_cpp", [&] {
    const std::vector<const scalar_t*> xs = data_of<scalar_t>(in.inputs);
    std::vector<scalar_t*> dxs;
    for (at::Tensor& t : dinputs) dxs.push_back(t.data_ptr<scalar_t>());
    const scalar_t* w = in.weight.data_ptr<scalar_t>();
    const scalar_t* pg = g.data_ptr<scalar_t>();
    // Partial sums per work item: (Σ g·x_0, ..., Σ g·x_{K-1}, Σ g), each C long, added in item order.
    std::vector<scalar_t> part;
    int64_t items_per_batch;
    if (!in.nhwc) {
      items_per_batch = 1;  // one item per (b, c) plane; its partials are filled at channel c
      part.assign(B * (K + 1) * C, scalar_t(0));
      at::parallel_for(0, B * C, grain_for(HW * K), [&](int64_t begin, int64_t end) {
        for (int64_t bc = begin; bc < end; ++bc) {
          const int64_t b = bc / C, c = bc % C;
          scalar_t* sums = part.data() + b * (K + 1) * C;
          for (int64_t t0 = bc * HW, t1 = (bc + 1) * HW; t0 < t1; t0 += kTile) {
            const int64_t n = std::min(kTile, t1 - t0);
            const scalar_t* gt = pg + t0;
            for (int64_t j = 0; j <= K; ++j) {
              // j == K: Σ g. Local lanes: the compiler keeps them in registers (no aliasing with outputs).
              scalar_t lane[kLanes] = {};
              const scalar_t* xj = j < K ? xs[j] + t0 : nullptr;
              int64_t i = 0;
              if (j < K) {
                const scalar_t wj = w[j * C + c];
                scalar_t* dj = dxs[j] + t0;
                for (; i + kLanes <= n; i += kLanes) {
                  for (int l = 0; l < kLanes; ++l) lane[l] += gt[i + l] * xj[i + l];
                }
                for (; i < n; ++i) lane[0] += gt[i] * xj[i];
                for (int64_t e = 0; e < n; ++e) dj[e] = wj * gt[e];
              } else {
                for (; i + kLanes <= n; i += kLanes) {
                  for (int l = 0; l < kLanes; ++l) lane[l] += gt[i + l];
                }
                for (; i < n; ++i) lane[0] += gt[i];
              }
              scalar_t t = 0;
              for (int l = 0; l < kLanes; ++l) t += lane[l];
              sums[j * C + c] += t;
            }
          }
        }
      });
    } else {
      const RowBlocks rb(HW, C);
      items_per_batch = rb.blocks;
      part.assign(B * rb.blocks * (K + 1) * C, scalar_t(0));
      at::parallel_for(0, B * rb.blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t b = item / rb.blocks, p0 = (item % rb.blocks) * rb.rows;
          const int64_t p1 = std::min(HW, p0 + rb.rows);
          scalar_t* acc = part.data() + item * (K + 1) * C;
          for (int64_t p = p0; p < p1; ++p) {
            const int64_t o = (b * HW + p) * C;
            const scalar_t* gr = pg + o;
            for (int64_t j = 0; j < K; ++j) {
              const scalar_t* xj = xs[j] + o;
              const scalar_t* wj = w + j * C;
              scalar_t* dj = dxs[j] + o;
              scalar_t* aj = acc + j * C;
              for (int64_t c = 0; c < C; ++c) {
                aj[c] += gr[c] * xj[c];
                dj[c] = wj[c] * gr[c];
              }
            }
            scalar_t* ab = acc + K * C;
            for (int64_t c = 0; c < C; ++c) ab[c] += gr[c];
          }
        }
      });
    }
    // Reduce the partials over batches and blocks, in a fixed order.
    scalar_t* dw = dweight.data_ptr<scalar_t>();
    scalar_t* db = dbias.data_ptr<scalar_t>();
    std::vector<scalar_t> total((K + 1) * C, scalar_t(0));
    for (int64_t item = 0; item < B * items_per_batch; ++item) {
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
