// The thread count is ours, not OpenMP's global ICV: kernels pass it to each
// parallel region, so set_num_threads() never disturbs other OpenMP users in
// the process (NumPy's BLAS, torch).
#include "slimgrad/threading.hpp"

#include <atomic>
#include <stdexcept>
#include <string>

namespace slimgrad {
namespace {
std::atomic<int>& thread_slot() {
#if SLIMGRAD_OPENMP
  static std::atomic<int> slot{omp_get_max_threads()};
#else
  static std::atomic<int> slot{1};
#endif
  return slot;
}
}  // namespace

int get_num_threads() { return thread_slot().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("n: expected a thread count >= 1, got " + std::to_string(n));
  thread_slot().store(n, std::memory_order_relaxed);
}

bool openmp_enabled() {
#if SLIMGRAD_OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace slimgrad
