// Threads: OpenMP when built with it, a plain loop otherwise.
//
// Determinism rule: work is split into chunks whose boundaries depend only on
// the problem size, never on the thread count, and reductions combine the
// per-chunk partials in chunk order. So every result is identical for any
// number of threads (and the same chunking is used by the serial build).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

#if SLIMGRAD_OPENMP
#include <omp.h>
#endif

namespace slimgrad {

int get_num_threads();
// n >= 1; throws std::invalid_argument otherwise.
void set_num_threads(int n);
bool openmp_enabled();

// THE grain of the core: elements per chunk / work piece everywhere (a
// multiple of 64 for cache lines and of 256 for AdamW8bit's blocks). Below
// this many elements threading costs more than it saves for a memory-bound
// elementwise kernel.
inline constexpr std::size_t kGrain = 1 << 15;
// Old name, kept so kernel branches written before the rename still build.
inline constexpr std::size_t kDefaultGrain = kGrain;

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

// Like parallel_for, but the chunks are handed out dynamically: on a shared
// machine a descheduled thread does not hold the others back. Every chunk
// writes its own outputs, so results do not depend on the schedule.
template <class Body>
void parallel_chunks(std::size_t n, std::size_t grain, Body&& body) {
  parallel_tasks(num_chunks(n, grain), [&](std::size_t c) {
    const std::size_t b = c * grain;
    body(b, std::min(n, b + grain));
  });
}

// parallel_chunks if `threaded` (work enough to pay for waking the team),
// else the same chunks in order on the calling thread: the chunking, and so
// every result, is the same either way.
template <class Body>
void parallel_chunks_if(bool threaded, std::size_t n, std::size_t grain, Body&& body) {
  if (threaded) return parallel_chunks(n, grain, body);
  for (std::size_t b = 0; b < n; b += grain) body(b, std::min(n, b + grain));
}

// Two phases in one parallel region: first(i) for i < n_first, then, if
// proceed() (called once the first phase is done; it must read only the first
// phase's results, so every thread gets the same answer), second(j) for
// j < n_second: e.g. pack the inputs, then compute from them; or check every
// gradient, then update if all are finite. Tasks are handed out in that
// order; a thread that takes a second-phase task waits until every
// first-phase task is done (spinning: only claimed, running tasks are waited
// for, and a first phase is short). One team wake-up per call instead of two
// (a PASSIVE worker takes ~20 us to wake on this VM), and the calling thread
// starts the first phase while the worker is still waking. With `threaded`
// false (work too small to share) everything runs on the calling thread.
// Returns proceed(). Bodies must not throw.
template <class First, class Second, class Proceed>
bool parallel_phases(bool threaded, std::size_t n_first, First&& first, std::size_t n_second, Second&& second,
                     Proceed&& proceed) {
#if SLIMGRAD_OPENMP
  const std::size_t total = n_first + n_second;
  const int threads = static_cast<int>(std::min<std::size_t>(total, static_cast<std::size_t>(get_num_threads())));
  if (threaded && threads > 1) {
    std::atomic<std::size_t> next{0}, first_done{0};
#pragma omp parallel num_threads(threads)
    {
      int go = -1;  // proceed(), asked once per thread
      for (std::size_t t = next.fetch_add(1); t < total; t = next.fetch_add(1)) {
        if (t < n_first) {
          first(t);
          first_done.fetch_add(1, std::memory_order_release);
          continue;
        }
        while (first_done.load(std::memory_order_acquire) < n_first) std::this_thread::yield();
        if (go < 0) go = proceed() ? 1 : 0;
        if (!go) break;
        second(t - n_first);
      }
    }
    return proceed();
  }
#else
  (void)threaded;  // a build without OpenMP runs everything here
#endif
  for (std::size_t i = 0; i < n_first; ++i) first(i);
  if (!proceed()) return false;
  for (std::size_t j = 0; j < n_second; ++j) second(j);
  return true;
}

// ------------------------------------------------------------ work planner
// THE planner of multi-array kernels (optimizers, clipping, scans): a list
// of arrays is cut into pieces of at most kGrain elements (boundaries depend
// only on the sizes: piece k of array a starts at k * kGrain), and the
// pieces are packed in order into tasks of about kGrain elements. A big
// array is split, many small arrays share a task, so a model of hundreds of
// small arrays costs a few tasks. Reductions keep one partial per piece and
// add them in piece order: results never depend on the thread count.
struct Piece {
  std::size_t array, begin, end;
};

struct WorkPlan {
  std::vector<Piece> pieces;
  std::vector<std::size_t> task_begin{0};  // task t: pieces[task_begin[t], task_begin[t + 1])
  std::size_t total = 0;                   // elements
  std::size_t tasks() const { return task_begin.size() - 1; }
};

inline WorkPlan plan_work(const std::size_t* sizes, std::size_t count) {
  WorkPlan plan;
  std::size_t in_task = 0;
  for (std::size_t a = 0; a < count; ++a)
    for (std::size_t b = 0; b < sizes[a]; b += kGrain) {
      const std::size_t e = std::min(sizes[a], b + kGrain);
      plan.pieces.push_back({a, b, e});
      plan.total += e - b;
      in_task += e - b;
      if (in_task >= kGrain) {
        plan.task_begin.push_back(plan.pieces.size());
        in_task = 0;
      }
    }
  if (plan.task_begin.back() != plan.pieces.size()) plan.task_begin.push_back(plan.pieces.size());
  return plan;
}

// body(t) for t < n_tasks covering `work` elements in all: serial below two
// grains (waking a second thread costs more, milliseconds on a busy machine).
template <class Body>
void run_tasks(std::size_t n_tasks, std::size_t work, Body&& body) {
  if (work < 2 * kGrain) {
    for (std::size_t t = 0; t < n_tasks; ++t) body(t);
    return;
  }
  parallel_tasks(n_tasks, body);
}

// body(k, piece) for every piece k of the plan.
template <class Body>
void run_plan(const WorkPlan& plan, Body&& body) {
  run_tasks(plan.tasks(), plan.total, [&](std::size_t t) {
    for (std::size_t k = plan.task_begin[t]; k < plan.task_begin[t + 1]; ++k) body(k, plan.pieces[k]);
  });
}

}  // namespace slimgrad
