// The squeeze-excitation MLP of the attention ops on CPU: per sample, K channel statistics t_k (C each,
// e.g. the spatial mean and max) go through one shared MLP C→R→C,
//   h_k = W1 t_k + b1,   z = Σ_k (W2 relu(h_k) + b2),
// and its backward. Used by channel_attention_residual (K = 1, with biases), channel_spatial_attention
// (K = 2: mean and max, with biases) and dac_gate (K = 1, bias-free: b1 = b2 = nullptr).
//
// W is the weights' type, A the accumulation type (the statistics, hidden values and gradients). The
// work is B·K·C·R multiply-adds: plain loops, no threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/relu.h"

namespace din_fast {

// One sample: t (K, C) → hidden (K, R) (pre-ReLU, kept for the backward) and z (C).
// w1 (R, C), b1 (R) or nullptr, w2 (C, R), b2 (C) or nullptr.
template <typename W, typename A>
void channel_mlp_forward(const W* w1, const W* b1, const W* w2, const W* b2, const A* t, int64_t K, int64_t C,
                         int64_t R, A* hidden, A* z) {
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t j = 0; j < R; ++j) {
      A acc = b1 != nullptr ? static_cast<A>(b1[j]) : A(0);
      for (int64_t c = 0; c < C; ++c) acc += static_cast<A>(w1[j * C + c]) * t[k * C + c];
      hidden[k * R + j] = acc;
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    A acc = b2 != nullptr ? static_cast<A>(K) * static_cast<A>(b2[c]) : A(0);
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t j = 0; j < R; ++j) acc += static_cast<A>(w2[c * R + j]) * relu(hidden[k * R + j]);
    }
    z[c] = acc;
  }
}

// Backward of channel_mlp_forward for one sample, given dz (C): adds to dw1 (R, C), dw2 (C, R) and, if not
// nullptr, db1 (R), db2 (C) (so a batch accumulates into them), and writes dt (K, C).
template <typename W, typename A>
void channel_mlp_backward(const W* w1, const W* w2, const A* t, const A* hidden, const A* dz, int64_t K, int64_t C,
                          int64_t R, A* dw1, A* db1, A* dw2, A* db2, A* dt) {
  if (db2 != nullptr) {
    for (int64_t c = 0; c < C; ++c) db2[c] += static_cast<A>(K) * dz[c];
  }
  std::vector<A> dh(R);
  for (int64_t k = 0; k < K; ++k) {
    const A* h = hidden + k * R;
    std::fill(dh.begin(), dh.end(), A(0));
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t j = 0; j < R; ++j) {
        dw2[c * R + j] += dz[c] * relu(h[j]);
        dh[j] += static_cast<A>(w2[c * R + j]) * dz[c];
      }
    }
    for (int64_t j = 0; j < R; ++j) {
      dh[j] = relu_backward(h[j], dh[j]);
      if (db1 != nullptr) db1[j] += dh[j];
    }
    for (int64_t c = 0; c < C; ++c) {
      A acc = 0;
      for (int64_t j = 0; j < R; ++j) {
        dw1[j * C + c] += dh[j] * t[k * C + c];
        acc += static_cast<A>(w1[j * C + c]) * dh[j];
      }
      dt[k * C + c] = acc;
    }
  }
}

}  // namespace din_fast
