// Threads: OpenMP when built with it, a plain loop otherwise.
//
// Determinism rule: work is split into chunks whose boundaries depend only on
// the problem size, never on the thread count, and reductions combine the
// per-chunk partials in chunk order. So every result is identical for any
// number of threads (and the same chunking is used by the serial build).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#if SLIMGRAD_OPENMP
#include <omp.h>
#endif

namespace slimgrad {

int get_num_threads();
// n >= 1; throws std::invalid_argument otherwise.
void set_num_threads(int n);
bool openmp_enabled();

// Below this many elements per chunk, threading costs more than it saves for
// a memory-bound elementwise kernel.
inline constexpr std::size_t kDefaultGrain = 1 << 15;

inline std::size_t num_chunks(std::size_t n, std::size_t grain) {
  return n == 0 ? 0 : (n + grain - 1) / grain;
}

// Calls body(begin, end) over [0, n) in chunks of `grain` (the last shorter),
// in parallel. Chunk boundaries are multiples of `grain`; keep grain a
// multiple of 64 so chunks start on cache lines for aligned arrays.
template <class Body>
void parallel_for(std::size_t n, std::size_t grain, Body&& body) {
  const std::size_t chunks = num_chunks(n, grain);
#if SLIMGRAD_OPENMP
  const int threads = static_cast<int>(
      std::min<std::size_t>(chunks, static_cast<std::size_t>(get_num_threads())));
  if (threads > 1) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (std::ptrdiff_t c = 0; c < static_cast<std::ptrdiff_t>(chunks); ++c) {
      const std::size_t b = static_cast<std::size_t>(c) * grain;
      body(b, std::min(n, b + grain));
    }
    return;
  }
#endif
  for (std::size_t c = 0; c < chunks; ++c) {
    const std::size_t b = c * grain;
    body(b, std::min(n, b + grain));
  }
}

// Fixed-order reduction: partial(begin, end) -> double for each chunk of
// `block` elements, computed in parallel, then summed in chunk order.
template <class Partial>
double parallel_sum(std::size_t n, std::size_t block, Partial&& partial) {
  std::vector<double> parts(num_chunks(n, block));
  parallel_for(n, block, [&](std::size_t b, std::size_t e) { parts[b / block] = partial(b, e); });
  double total = 0.0;
  for (double p : parts) total += p;
  return total;
}

// Calls body(i) for each task i in [0, n_tasks), in parallel, dynamic
// schedule: for lists of arrays of uneven sizes (multi-tensor kernels).
template <class Body>
void parallel_tasks(std::size_t n_tasks, Body&& body) {
#if SLIMGRAD_OPENMP
  const int threads = static_cast<int>(
      std::min<std::size_t>(n_tasks, static_cast<std::size_t>(get_num_threads())));
  if (threads > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(n_tasks); ++i)
      body(static_cast<std::size_t>(i));
    return;
  }
#endif
  for (std::size_t i = 0; i < n_tasks; ++i) body(i);
}

}  // namespace slimgrad
