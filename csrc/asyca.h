// Argument checks of `asyca` shared by its C++ CPU and CUDA kernels (din_fast/ops/asyca.py has the maths
// and the Python twin of this check). `check_device` is the implementation's device/dtype check.
#pragma once

#include <ATen/ATen.h>

#include "common.h"

namespace din_fast {

inline void check_asyca_args(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& w_init,
                             const at::Tensor& b_init, const at::Tensor& w_dc, const at::Tensor& b_dc,
                             const at::Tensor& w_ic, const at::Tensor& b_ic,
                             void (*check_device)(const at::Tensor&, const char*)) {
  check_feature(x1, "x1");
  check_device(x1, "x1");
  check_same(x2, "x2", x1, "x1", x1.sizes());
  const int64_t C = x1.size(1);
  check_same(w_init, "w_init", x1, "x1", {C, 2 * C, 1, 1});
  check_same(b_init, "b_init", x1, "x1", {C});
  TORCH_CHECK_VALUE(w_dc.dim() == 4 && w_dc.size(0) > 0, "w_dc must have shape (R, ", C, ", 1, 1) with R > 0, got ",
                    w_dc.sizes());
  const int64_t R = w_dc.size(0);
  check_same(w_dc, "w_dc", x1, "x1", {R, C, 1, 1});
  check_same(b_dc, "b_dc", x1, "x1", {R});
  check_same(w_ic, "w_ic", x1, "x1", {2 * C, R, 1, 1});
  check_same(b_ic, "b_ic", x1, "x1", {2 * C});
}

}  // namespace din_fast
