// Scalar ReLU and its derivative with PyTorch's NaN semantics, for the CPU kernels' small channel MLPs.
//
// torch.relu keeps NaN (relu(NaN) = NaN), so a NaN input poisons everything downstream as in the
// reference; `x > 0 ? x : 0` would map it to 0 and hide it. The backward is autograd's
// threshold_backward(grad, relu(x), 0) = (relu(x) <= 0 ? 0 : grad): the gradient passes where x is NaN.
// Both are one compare and one select, as the forms they replace.
#pragma once

namespace din_fast {

template <typename T>
inline T relu(T x) {
  return x < T(0) ? T(0) : x;
}

// The gradient through relu at pre-activation x, given the gradient g of its output.
template <typename T>
inline T relu_backward(T x, T g) {
  return x <= T(0) ? T(0) : g;
}

}  // namespace din_fast
