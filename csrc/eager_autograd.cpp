// The eager fast path of din_fast.ops.<name> for the C++ implementations (cpp, cuda), in C++: one call
// from Python runs the private kernel op `_<name>_<impl>` and, when a gradient is needed, records one
// C++ autograd node whose backward runs `_<name>_backward_<impl>`. It is what the dispatcher route does
// (_library.py: torch.library's autograd node, the router, _formatted) without the Python: at DIN's
// small shapes that Python costs as much as the kernels (benchmarks/NOTES.md), and a C++ node's
// backward runs without the GIL.
//
// This is din_fast's only use of torch/csrc internals (the autograd node, its Python type, the tensor
// wrapping). Checked on torch 2.11.0, 2.13.0 and 2.14.1 (each built, loaded and tested by
// .ci/build-matrix.sh and .ci/run). A build does not load under another torch (undefined
// torch::autograd::_wrap_outputs, issue 21): din_fast._extension rebuilds per torch version.
//
// Same contract as the Python path: the output in the memory format of the first tensor argument,
// each gradient in its input's format (common.h's memory_format_of); gradients of inputs that do not
// require grad are computed and dropped by the engine; differentiating the gradients again raises (as
// torch.autograd.function.once_differentiable does). Arguments are not checked here: the kernels
// check their own, and FusedOp re-runs the Python check on failure to word the error.
//
// Generic over the ops: the kernel ops are found by name through the dispatcher and called boxed, with
// the arguments laid out from the op schema (each argument a Tensor or a Tensor[]). A forward kernel
// returns either y, and its backward takes (grad, *inputs), or (y, saved), and its backward takes
// (grad, saved, *inputs but the first): the node then keeps `saved` instead of the first input
// (dense_block: the features buffer, which determines x) and gives the first gradient the first
// input's memory format.
#include "eager_autograd.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/python_cpp_function.h>
#include <torch/csrc/autograd/python_variable.h>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace din_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr const char* kCapsuleName = "din_fast._C.EagerKernels";

// The forward and backward kernel ops of one (op, implementation), per forward argument whether it
// is a Tensor[] (else a Tensor), and whether the forward returns (y, saved) (else y).
struct EagerKernels {
  c10::OperatorHandle forward;
  c10::OperatorHandle backward;
  std::vector<bool> is_list;
  bool saves_output;
};

// Kernels are looked up once per op and never freed: autograd nodes keep raw pointers to them.
std::mutex registry_mutex;
std::unordered_map<std::string, std::unique_ptr<EagerKernels>>& registry() {
  static auto* map = new std::unordered_map<std::string, std::unique_ptr<EagerKernels>>();
  return *map;
}

// The argument list of a kernel op on the boxed stack: each argument a Tensor (spec -1) or a Tensor[]
// of spec[i] tensors, taken in order from `tensors`.
void push_arguments(torch::jit::Stack& stack, c10::IntArrayRef spec, at::TensorList tensors) {
  size_t t = 0;
  for (int64_t n : spec) {
    if (n < 0) {
      stack.emplace_back(tensors[t++]);
    } else {
      c10::List<at::Tensor> list;
      list.reserve(n);
      for (int64_t j = 0; j < n; ++j) list.push_back(tensors[t++]);
      stack.emplace_back(std::move(list));
    }
  }
}

// `out` in memory format `fmt` (4-D outputs; others contiguous).
at::Tensor formatted_as(at::Tensor out, at::MemoryFormat fmt) {
  if (out.dim() != 4) fmt = at::MemoryFormat::Contiguous;
  return out.is_contiguous(fmt) ? out : out.contiguous(fmt);
}

// `out` in the memory format of `like` (_library.py's _formatted).
at::Tensor formatted(at::Tensor out, const at::Tensor& like) {
  if (like.is_contiguous()) return out.is_contiguous() ? out : out.contiguous();
  return formatted_as(std::move(out), memory_format_of(like));
}

// The forward kernel's outputs: {y} or {y, saved}, y in the first tensor argument's format.
std::vector<at::Tensor> run_forward(const EagerKernels& k, c10::IntArrayRef spec, at::TensorList tensors) {
  // The kernel ops have no autograd kernels: skip the dispatcher's autograd fallback (this is the
  // backend call below the autograd layer, as in every C++ autograd kernel).
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  torch::jit::Stack stack;
  stack.reserve(spec.size());
  push_arguments(stack, spec, tensors);
  k.forward.callBoxed(stack);
  std::vector<at::Tensor> out{formatted(std::move(stack[0]).toTensor(), tensors[0])};
  if (k.saves_output) out.push_back(std::move(stack[1]).toTensor());
  return out;
}

// The gradient of every tensor in `tensors` (the backward's arguments, flattened like them), each in
// its tensor's format, but the first in `first_format`.
variable_list run_backward(const EagerKernels& k, c10::IntArrayRef spec, const at::Tensor& grad,
                           const variable_list& tensors, at::MemoryFormat first_format) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  torch::jit::Stack stack;
  stack.reserve(spec.size() + 1);
  stack.emplace_back(grad);
  push_arguments(stack, spec, tensors);
  k.backward.callBoxed(stack);
  TORCH_CHECK(stack.size() == spec.size(), k.backward.schema().name(), " returned ", stack.size(),
              " values for ", spec.size(), " arguments");
  variable_list grads;
  grads.reserve(tensors.size());
  for (size_t i = 0; i < spec.size(); ++i) {
    if (i == 0 && spec[0] < 0) {
      grads.push_back(formatted_as(std::move(stack[0]).toTensor(), first_format));
    } else if (spec[i] < 0) {
      grads.push_back(formatted(std::move(stack[i]).toTensor(), tensors[grads.size()]));
    } else {
      auto list = std::move(stack[i]).toTensorList();
      TORCH_CHECK(static_cast<int64_t>(list.size()) == spec[i], k.backward.schema().name(), " returned ",
                  list.size(), " gradients for a list of ", spec[i], " tensors");
      for (const at::Tensor& g : list) grads.push_back(formatted(g, tensors[grads.size()]));
    }
  }
  return grads;
}

// The autograd node of one call: saves the inputs (or `saved` in place of the first), runs the forward
// kernel; its backward runs the backward kernel. The arguments before `tensors` are not differentiable
// (their gradient slots stay undefined).
struct EagerAutograd : public torch::autograd::Function<EagerAutograd> {
  static at::Tensor forward(AutogradContext* ctx, const EagerKernels* k, c10::IntArrayRef spec,
                            at::TensorList tensors) {
    ctx->saved_data["k"] = reinterpret_cast<int64_t>(k);
    ctx->saved_data["spec"] = spec;
    ctx->saved_data["format"] = static_cast<int64_t>(memory_format_of(tensors[0]));
    std::vector<at::Tensor> out = run_forward(*k, spec, tensors);
    std::vector<at::Tensor> saved = tensors.vec();
    if (k->saves_output) saved[0] = out[1];
    ctx->save_for_backward(saved);
    return out[0];
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto* k = reinterpret_cast<const EagerKernels*>(ctx->saved_data["k"].toInt());
    auto spec = ctx->saved_data["spec"].toIntVector();
    const auto format = static_cast<at::MemoryFormat>(ctx->saved_data["format"].toInt());
    variable_list grads = run_backward(*k, spec, grad_outputs[0], ctx->get_saved_variables(), format);
    // Grad mode is on here only under create_graph=True. Then, as once_differentiable does, a gradient
    // that depends on a grad requiring grad gets a node that raises if it is differentiated again.
    if (at::GradMode::is_enabled() && grad_outputs[0].requires_grad()) {
      auto err = std::make_shared<torch::autograd::DelayedError>(
          "trying to differentiate twice a function that was marked with @once_differentiable",
          static_cast<int64_t>(grads.size()));
      for (auto& g : grads) g = g.detach().requires_grad_(true);
      grads = (*err)(std::move(grads));
    }
    variable_list out(2);  // the slots of k and spec
    out.insert(out.end(), grads.begin(), grads.end());
    return out;
  }
};

// Python type of the node (grad_fn), so that it reads as EagerAutogradBackward rather than a generic
// C++ function.
PyTypeObject eager_backward_type = {PyVarObject_HEAD_INIT(nullptr, 0)};

// Restores the GIL on scope exit, also when a kernel throws (the error is converted with the GIL held).
struct ReleaseGil {
  PyThreadState* state = PyEval_SaveThread();
  ~ReleaseGil() { PyEval_RestoreThread(state); }
};

}  // namespace

PyObject* eager_kernels(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 2 && PyUnicode_Check(args[0]) && PyUnicode_Check(args[1]),
                   "eager_kernels(forward: str, backward: str) takes two op names");
  std::string forward = PyUnicode_AsUTF8(args[0]);
  std::string backward = PyUnicode_AsUTF8(args[1]);
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto& entry = registry()[forward + "|" + backward];
  if (!entry) {
    auto& dispatcher = c10::Dispatcher::singleton();
    auto fwd = dispatcher.findSchemaOrThrow(forward.c_str(), "");
    auto bwd = dispatcher.findSchemaOrThrow(backward.c_str(), "");
    std::vector<bool> is_list;
    for (const auto& arg : fwd.schema().arguments()) {
      bool list = arg.type()->kind() == c10::TypeKind::ListType;
      TORCH_CHECK_TYPE(list || arg.type()->kind() == c10::TypeKind::TensorType, forward, ": argument ",
                       arg.name(), " is neither a Tensor nor a Tensor[]");
      is_list.push_back(list);
    }
    const auto& returns = fwd.schema().returns();
    TORCH_CHECK_TYPE(returns.size() == 1 || (returns.size() == 2 && !is_list.empty() && !is_list[0]), forward,
                     ": returns y, or (y, saved) where `saved` replaces a first argument that is a Tensor");
    entry = std::make_unique<EagerKernels>(EagerKernels{fwd, bwd, std::move(is_list), returns.size() == 2});
  }
  return PyCapsule_New(entry.get(), kCapsuleName, nullptr);
  END_HANDLE_TH_ERRORS
}

PyObject* eager_call(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs >= 1, "eager_call(kernels, *args) needs the kernels from eager_kernels()");
  const auto* k = static_cast<const EagerKernels*>(PyCapsule_GetPointer(args[0], kCapsuleName));
  if (k == nullptr) return nullptr;
  const size_t n_args = static_cast<size_t>(nargs - 1);
  TORCH_CHECK_TYPE(n_args == k->is_list.size(), k->forward.schema().name(), " takes ", k->is_list.size(),
                   " arguments, got ", n_args);
  std::vector<at::Tensor> tensors;
  std::vector<int64_t> spec(n_args);
  bool requires_grad = false;
  auto add = [&](PyObject* obj, size_t i) {
    TORCH_CHECK_TYPE(THPVariable_Check(obj), k->forward.schema().name(), ": argument ", i,
                     " must be a Tensor or a list of Tensors");
    tensors.push_back(THPVariable_Unpack(obj));
    requires_grad = requires_grad || tensors.back().requires_grad();
  };
  for (size_t i = 0; i < n_args; ++i) {
    PyObject* arg = args[i + 1];
    if (k->is_list[i]) {
      TORCH_CHECK_TYPE(PyList_Check(arg) || PyTuple_Check(arg), k->forward.schema().name(), ": argument ",
                       i, " must be a list of Tensors");
      Py_ssize_t n = PySequence_Fast_GET_SIZE(arg);
      PyObject** items = PySequence_Fast_ITEMS(arg);
      for (Py_ssize_t j = 0; j < n; ++j) add(items[j], i);
      spec[i] = n;
    } else {
      add(arg, i);
      spec[i] = -1;
    }
  }
  TORCH_CHECK_VALUE(!tensors.empty(), k->forward.schema().name(), ": no tensors given");
  at::Tensor out;
  {
    ReleaseGil no_gil;
    if (requires_grad && at::GradMode::is_enabled()) {
      out = EagerAutograd::apply(k, c10::IntArrayRef(spec), at::TensorList(tensors));
    } else {
      out = run_forward(*k, spec, tensors)[0];
    }
  }
  return THPVariable_Wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

bool register_eager_node_type() {
  try {
    using torch::autograd::CppNode;
    torch::autograd::_initFunctionPyTypeObject(eager_backward_type, "EagerAutogradBackward", nullptr,
                                               nullptr);
    torch::autograd::registerCppFunction(typeid(CppNode<EagerAutograd>), &eager_backward_type);
    return true;
  } catch (const std::exception& e) {  // PyType_Ready failed: its Python error is set
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ImportError, e.what());
    return false;
  }
}

}  // namespace din_fast
