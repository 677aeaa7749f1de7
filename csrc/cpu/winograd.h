// The whole-map building blocks of conv3x3's Winograd F(4x4, 3x3) (csrc/cpu/conv3x3.cpp has the maths):
// kernel, input and output transforms and their adjoints over Winograd-domain buffers V, M, dM, dV of
// shape (36, C, B * winograd_tiles(H, W)). A convolution is winograd_output(bmm(winograd_kernel(w), V)).
// DIN's dense block (dense_block.cpp) composes them so that each feature is transformed once for every
// conv that reads it. Float32/float64 CPU tensors; each function checks its arguments (ValueError).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace din_fast {

// An uninitialised Winograd-domain buffer (36, channels, B * winograd_tiles(H, W)) for feature maps like
// `like` (B, C, H, W), with its dtype and device.
at::Tensor winograd_buffer(const at::Tensor& like, int64_t channels);

// U (36, Cout, Cin) = G g Gᵀ of weight (Cout, Cin, 3, 3).
at::Tensor winograd_kernel(const at::Tensor& weight);

// dweight (Cout, Cin, 3, 3) = Gᵀ dU G of dU (36, Cout, Cin).
at::Tensor winograd_kernel_adjoint(const at::Tensor& dU);

// Writes the transform Bᵀ d B of x (B, C, H, W) into channels offset .. offset + C of V (36, Cv, B * tiles).
void winograd_input(const at::Tensor& x, at::Tensor& V, int64_t offset);

// out (B, Cout, H, W) = leaky_relu(Aᵀ M A + bias, slope) of M (36, Cout, B * tiles); out's rows must be
// contiguous (a channel slice of a dense buffer is fine).
void winograd_output(const at::Tensor& M, const at::Tensor& bias, double slope, at::Tensor& out);

// dM (36, Cout, B * tiles) = A dY Aᵀ of grad (B, Cout, H, W).
at::Tensor winograd_output_adjoint(const at::Tensor& grad);

// dx (B, C, H, W) = Σ_tiles B dV Bᵀ of channels offset .. offset + C of dV; dx's rows must be contiguous.
void winograd_input_adjoint(const at::Tensor& dV, int64_t offset, at::Tensor& dx);

}  // namespace din_fast
