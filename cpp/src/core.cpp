// Threaded, dispatched entry points of the core kernels (see core.hpp).
#include "slimgrad/core.hpp"

#include <atomic>
#include <vector>

#include "slimgrad/threading.hpp"

namespace slimgrad {

template <class T>
void axpy(T* y, const T* x, T alpha, std::size_t n) {
  dispatch([&](auto isa) {
    parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) {
      kernels::axpy<decltype(isa)::value, T>(y + b, x + b, alpha, e - b);
    });
  });
}

template <class T>
double squared_norm(const T* x, std::size_t n) {
  return dispatch([&](auto isa) {
    return parallel_sum(n, kSumBlock, [&](std::size_t b, std::size_t e) {
      return kernels::sum_squares<decltype(isa)::value, T>(x + b, e - b);
    });
  });
}

template <class T>
std::ptrdiff_t find_nonfinite(const T* x, std::size_t n) {
  // Each chunk records its first bad index; the smallest wins, so the answer
  // is the first non-finite element whatever the thread count.
  const std::size_t chunks = num_chunks(n, kGrain);
  std::vector<std::size_t> first(chunks, n);
  dispatch([&](auto isa) {
    parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) {
      const std::size_t k = kernels::find_nonfinite<decltype(isa)::value, T>(x + b, e - b);
      if (k < e - b) first[b / kGrain] = b + k;
    });
  });
  for (std::size_t f : first)
    if (f < n) return static_cast<std::ptrdiff_t>(f);
  return -1;
}

void stream_probe(float* p, const float* g, float* m, float* v, std::size_t n) {
  dispatch([&](auto isa) {
    parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) {
      kernels::stream_probe<decltype(isa)::value>(p + b, g + b, m + b, v + b, e - b);
    });
  });
}

void widen_half(const std::uint16_t* x, float* y, std::size_t n, bool bf16) {
  dispatch([&](auto isa) {
    parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) {
      kernels::widen_half<decltype(isa)::value>(x + b, y + b, e - b, bf16);
    });
  });
}

void narrow_half(const float* x, std::uint16_t* y, std::size_t n, bool bf16) {
  dispatch([&](auto isa) {
    parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) {
      kernels::narrow_half<decltype(isa)::value>(x + b, y + b, e - b, bf16);
    });
  });
}

template void axpy<float>(float*, const float*, float, std::size_t);
template void axpy<double>(double*, const double*, double, std::size_t);
template double squared_norm<float>(const float*, std::size_t);
template double squared_norm<double>(const double*, std::size_t);
template std::ptrdiff_t find_nonfinite<float>(const float*, std::size_t);
template std::ptrdiff_t find_nonfinite<double>(const double*, std::size_t);

}  // namespace slimgrad
