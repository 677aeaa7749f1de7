// The scheduler of the CUDA emulation (runtime.h says what it models and what it cannot see).
//
// A block's threads are ucontext fibers on the launching thread. The scheduler resumes every runnable
// fiber in turn (forward or reverse linear-id order) until each has returned or waits at a barrier, then
// releases a barrier whose participants have all arrived: first any warp whose live lanes all wait in a
// shuffle, else the block barrier once every live thread waits there. Nothing else can release a fiber,
// so a barrier missed by some thread is reported instead of hanging.
#include "cuda_emulation/runtime.h"

#include <ucontext.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace din_fast {
namespace cuda_emulation {
namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per fiber; kernels keep a few small arrays on the stack

enum class State { kRunnable, kBlockBarrier, kWarpBarrier, kDone };

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  uint3 index;
  State state = State::kRunnable;
  unsigned mask = 0;  // of the warp operation it waits in
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<unsigned char> shared;
  std::vector<uint64_t> slots;  // kWarpSize per warp
  ucontext_t scheduler;
  Fiber* running = nullptr;
  const std::function<void()>* body = nullptr;
  std::exception_ptr error;
};

thread_local Block* current = nullptr;

unsigned linear_id(const Fiber& f) { return (f.index.z * blockDim.y + f.index.y) * blockDim.x + f.index.x; }

void fiber_main() {
  Block& blk = *current;
  try {
    (*blk.body)();
  } catch (...) {
    blk.error = std::current_exception();
  }
  blk.running->state = State::kDone;
  swapcontext(&blk.running->context, &blk.scheduler);
}

// Suspends the running fiber in `state` and returns when the scheduler resumes it.
void wait(State state, unsigned mask = 0) {
  Block& blk = *current;
  Fiber& f = *blk.running;
  f.state = state;
  f.mask = mask;
  swapcontext(&f.context, &blk.scheduler);
}

void fail(const std::string& what) {
  throw std::runtime_error("CUDA emulation, block (" + std::to_string(blockIdx.x) + ", " +
                           std::to_string(blockIdx.y) + ", " + std::to_string(blockIdx.z) + "): " + what);
}

// Releases one barrier whose participants have all arrived; false if none can be released.
bool release(Block& blk) {
  const size_t n = blk.fibers.size();
  bool any_block = false, all_block = true;
  for (size_t w0 = 0; w0 < n; w0 += kWarpSize) {
    const size_t w1 = std::min(n, w0 + kWarpSize);
    bool waiting = false, complete = true;
    for (size_t i = w0; i < w1; ++i) {
      const Fiber& f = blk.fibers[i];
      if (f.state == State::kWarpBarrier) waiting = true;
      if (f.state != State::kWarpBarrier && f.state != State::kDone) complete = false;
    }
    if (!waiting || !complete) continue;
    unsigned mask = 0;
    for (size_t i = w0; i < w1; ++i) {
      if (blk.fibers[i].state == State::kWarpBarrier) mask = blk.fibers[i].mask;
    }
    for (size_t i = w0; i < w0 + kWarpSize; ++i) {
      const bool named = (mask >> (i - w0)) & 1u;
      const bool arrived = i < w1 && blk.fibers[i].state == State::kWarpBarrier;
      if (named != arrived || (arrived && blk.fibers[i].mask != mask)) {
        fail("warp " + std::to_string(w0 / kWarpSize) + ": lane " + std::to_string(i - w0) +
             (named ? " is in the shuffle's mask but has returned or does not exist"
                    : " shuffles with a mask that does not name it"));
      }
    }
    for (size_t i = w0; i < w1; ++i) {
      if (blk.fibers[i].state == State::kWarpBarrier) blk.fibers[i].state = State::kRunnable;
    }
    return true;
  }
  for (const Fiber& f : blk.fibers) {
    if (f.state == State::kBlockBarrier) any_block = true;
    if (f.state != State::kBlockBarrier && f.state != State::kDone) all_block = false;
  }
  if (any_block && all_block) {
    for (Fiber& f : blk.fibers) {
      if (f.state == State::kBlockBarrier) f.state = State::kRunnable;
    }
    return true;
  }
  return false;
}

void run_block(Block& blk, bool reverse) {
  const size_t n = blk.fibers.size();
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = blk.fibers[i];
    f.state = State::kRunnable;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_main, 0);
  }
  std::fill(blk.shared.begin(), blk.shared.end(), static_cast<unsigned char>(0xFF));
  for (;;) {
    bool ran = false;
    for (size_t k = 0; k < n; ++k) {
      Fiber& f = blk.fibers[reverse ? n - 1 - k : k];
      if (f.state != State::kRunnable) continue;
      ran = true;
      blk.running = &f;
      threadIdx = f.index;
      swapcontext(&blk.scheduler, &f.context);
      if (blk.error) std::rethrow_exception(blk.error);
    }
    if (ran) continue;
    if (std::all_of(blk.fibers.begin(), blk.fibers.end(), [](const Fiber& f) { return f.state == State::kDone; })) {
      return;
    }
    if (!release(blk)) {
      fail("deadlock: some threads wait at __syncthreads while others wait in a warp shuffle "
           "(or have returned from it)");
    }
  }
}

}  // namespace

void launch(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
  if (current != nullptr) throw std::runtime_error("CUDA emulation: a kernel launched from a kernel");
  const size_t threads = size_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024) throw std::runtime_error("CUDA emulation: a block has 1 to 1024 threads");
  Block blk;
  blk.fibers.resize(threads);
  for (size_t i = 0; i < threads; ++i) {
    blk.fibers[i].stack.reset(new char[kStackBytes]);
    blk.fibers[i].index = {unsigned(i % block.x), unsigned(i / block.x % block.y), unsigned(i / (size_t(block.x) * block.y))};
  }
  blk.shared.resize(shared_bytes);
  blk.slots.resize((threads + kWarpSize - 1) / kWarpSize * kWarpSize);
  blk.body = &body;
  blockDim = block;
  gridDim = grid;
  current = &blk;
  try {
    size_t linear = 0;
    for (unsigned z = 0; z < grid.z; ++z) {
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x, ++linear) {
          blockIdx = {x, y, z};
          run_block(blk, linear % 2 == 1);
        }
      }
    }
  } catch (...) {
    current = nullptr;
    throw;
  }
  current = nullptr;
}

unsigned char* dynamic_shared_memory() { return current->shared.data(); }

void block_barrier() { wait(State::kBlockBarrier); }

unsigned lane() { return linear_id(*current->running) % kWarpSize; }

const uint64_t* warp_exchange(unsigned mask, const void* value, size_t bytes) {
  Block& blk = *current;
  const unsigned id = linear_id(*blk.running);
  std::memcpy(&blk.slots[id], value, bytes);
  wait(State::kWarpBarrier, mask);
  return &blk.slots[id - id % kWarpSize];
}

void warp_release(unsigned mask) { wait(State::kWarpBarrier, mask); }

}  // namespace cuda_emulation
}  // namespace din_fast
